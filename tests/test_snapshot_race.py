"""A snapshot newer than the WAL listed with it, end to end (docs/detection.md, "No false alarms").

Litestream 0.3 takes a snapshot after a checkpoint that can include transactions whose WAL
segment it has not uploaded yet. A verification that lists in that moment sees the snapshot
without the segment that leads up to it; the segment arrives a moment later. Here the
replica is put in exactly that state (the snapshot of index I replaced by the state at the
end of index I, the last segment of I held back), ``python -m jobs.verify`` starts, and the
segment is uploaded while the job is held on its snapshot download by the fault proxy. The
job must notice the listing changed and verify again: ok, the reference bytes. With the
segment never arriving, the same replica is a ``wal_gap`` naming it.
"""
from __future__ import annotations

import json

from tests.support.faultproxy import delay
from tests.support.replicas import delete_object, read_object, write_object
from tests.test_detection import _page1_counters, _state_after, layout, lz4_frame
from tests.test_signals import Job, job_env, proxied_config, scratch_entries, wait_until_restoring

EXIT_OK, EXIT_FAILED = 0, 1


def snapshot_ahead_of_its_wal(replica, tmp_path) -> tuple[str, bytes]:
    """Make the snapshot hold its index's end state and remove that index's last segment.
    Returns the segment's key and bytes (to upload later)."""
    lay = layout(replica)
    index = lay.indexes[0]
    counters = [_page1_counters(replica, key, offset) for offset, key in lay.segments[index]]
    # page 1's change counter advances in the held-back segment: how the job sees the snapshot is ahead
    assert counters[-1] and max(counters[-1]) > max(sum(counters[:-1], []), default=0), counters
    state = _state_after(replica, index, tmp_path)
    write_object(replica, lay.snapshot, lz4_frame(state.read_bytes()))
    _, key = lay.segments[index][-1]
    data = read_object(replica, key)
    delete_object(replica, key)
    return key, data


def start_verify(replica, proxy, scratch, tmp_path) -> Job:
    config = proxied_config(replica, proxy, tmp_path / "litestream.yml")
    proxy.set_rules([delay(120, method="GET", key=r"/snapshots/", count=1)])  # held until released
    return Job("jobs.verify", "--config", config, "--json", "--max-age", "7d", env=job_env(scratch), logs=tmp_path)


def test_segment_arriving_during_the_run_is_verified_not_reported(v3_s3_replica, clone, proxy, scratch, tmp_path):
    replica = clone(v3_s3_replica)
    key, data = snapshot_ahead_of_its_wal(replica, tmp_path)
    job = start_verify(replica, proxy, scratch, tmp_path)
    wait_until_restoring(proxy, job)  # it listed without the segment and is reading the snapshot
    write_object(replica, key, data)  # litestream's upload lands
    proxy.release()

    assert job.wait() == EXIT_OK, job.stderr()[-4000:]
    [db] = json.loads(job.stdout())["databases"]
    assert db["status"] == "ok" and db["findings"] == []
    assert db["restored"]["sha256"] == replica.reference_sha256
    # it saw the snapshot ahead of the listed WAL and verified again from a fresh listing
    assert "the snapshot is newer than the WAL listed with it" in job.stderr(), job.stderr()[-4000:]
    assert scratch_entries(scratch) == []


def test_segment_that_never_arrives_is_a_gap(v3_s3_replica, clone, proxy, scratch, tmp_path):
    replica = clone(v3_s3_replica)
    key, _ = snapshot_ahead_of_its_wal(replica, tmp_path)
    job = start_verify(replica, proxy, scratch, tmp_path)
    wait_until_restoring(proxy, job)
    proxy.release()

    assert job.wait() == EXIT_FAILED, job.stderr()[-4000:]
    [db] = json.loads(job.stdout())["databases"]
    assert [(f["kind"], f["object"]) for f in db["findings"]] == [("wal_gap", f"{replica.prefix}/{key}")]
    assert "snapshot" in db["findings"][0]["message"]
