"""Native v0.3 restores are byte-identical to `litestream restore` on real replicas."""
from __future__ import annotations

import json

import pytest

from lib.litestream.discover import discover
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v3.restore import restore_v3
from tests.support import run_job
from tests.support.replicas import database_row_counts, litestream_restore, sha256_file

V3_REPLICAS = ["v3_file_replica", "v3_s3_replica", "v3_file_replica_512", "v3_file_replica_65536",
               "v3_multigen_file_replica"]


def open_replica(replica):
    from lib.config.sources import load

    config = load(str(replica.config_path), {})
    rep = config.dbs[0].replicas[0]
    return rep, rep.open_store()


def native_restore(replica, out, target=RestoreTarget()):
    rep, store = open_replica(replica)
    state = discover(store, rep)
    assert state.format == "v0.3"
    return restore_v3(store, state.v3, out, target)


@pytest.mark.parametrize("fixture", V3_REPLICAS)
def test_native_restore_is_byte_identical_to_litestream(fixture, request, tmp_path):
    replica = request.getfixturevalue(fixture)
    outcome = native_restore(replica, tmp_path / "restored.db")
    assert outcome.findings == []
    assert outcome.sha256 == replica.reference_sha256 == sha256_file(outcome.path)
    assert outcome.page_size == replica.page_size
    assert database_row_counts(outcome.path) == replica.row_counts


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_s3_replica"])
def test_verify_job_reports_ok_with_counts(fixture, request, restorable_env):
    replica = request.getfixturevalue(fixture)
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", "--max-age", "7d", env=restorable_env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "ok"
    [db] = report["databases"]
    assert db["status"] == "ok" and db["findings"] == []
    assert db["format"] == "v0.3"
    assert db["db"] == str(replica.db_path)
    assert db["restored"]["sha256"] == replica.reference_sha256
    assert db["restored"]["page_size"] == replica.page_size
    assert db["tables"] == replica.row_counts
    assert set(db["litestream_tables"]) == {"_litestream_seq", "_litestream_lock"}
    assert db["generation"] == replica.generations[-1]
    assert db["last_backup_at"].endswith("Z")
    assert {"list", "restore", "integrity", "total"} <= set(db["timings"])


def test_point_in_time_restore_matches_litestream(v3_file_replica, tmp_path):
    replica = v3_file_replica
    assert len(replica.checkpoints) >= 2
    for i, (moment, counts) in enumerate(replica.checkpoints):
        ours = native_restore(replica, tmp_path / f"ours-{i}.db", RestoreTarget(timestamp=moment))
        theirs = litestream_restore(replica, tmp_path / f"theirs-{i}.db", timestamp=moment)
        assert ours.findings == []
        assert database_row_counts(ours.path) == counts
        assert ours.sha256 == sha256_file(theirs)


def test_older_generation_restores_like_litestream(v3_multigen_file_replica, tmp_path):
    replica = v3_multigen_file_replica
    older = replica.generations[0]
    ours = native_restore(replica, tmp_path / "ours.db", RestoreTarget(generation=older))
    theirs = litestream_restore(replica, tmp_path / "theirs.db", generation=older)
    assert ours.generation == older
    assert ours.findings == []
    assert ours.sha256 == sha256_file(theirs)
    assert ours.sha256 != replica.reference_sha256


def test_restore_job_writes_identical_file(v3_s3_replica, tmp_path, restorable_env):
    out = tmp_path / "local.db"
    proc = run_job("jobs.restore", "--config", v3_s3_replica.config_path, "-o", out, env=restorable_env)
    assert proc.returncode == 0, proc.stderr
    assert sha256_file(out) == v3_s3_replica.reference_sha256
    assert f"({out.stat().st_size:,} bytes)" in proc.stderr  # no second read for a digest unless asked
    again = run_job("jobs.restore", "--config", v3_s3_replica.config_path, "-o", out, env=restorable_env)
    assert again.returncode == 3
    assert "already exists" in again.stderr


def test_restore_job_prints_the_sha256_when_asked(v3_s3_replica, tmp_path, restorable_env):
    out = tmp_path / "local.db"
    proc = run_job("jobs.restore", "--config", v3_s3_replica.config_path, "-o", out, "--sha256",
                   env=restorable_env)
    assert proc.returncode == 0, proc.stderr
    assert f"sha256 {v3_s3_replica.reference_sha256}" in proc.stderr
    assert sha256_file(out) == v3_s3_replica.reference_sha256


def test_restore_job_syncs_the_file_before_naming_it(v3_s3_replica, tmp_path, restorable_env, monkeypatch):
    """OUT appears only once its bytes are on disk, and its directory entry is synced too."""
    import os

    from jobs import restore as restore_job

    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), out.exists()))
        real_fsync(fd)

    out = tmp_path / "local.db"
    monkeypatch.setattr(os, "fsync", recording_fsync)
    assert restore_job.main(["--config", str(v3_s3_replica.config_path), "-o", str(out)], restorable_env) == 0
    assert synced == [(str(tmp_path / ".local.db.restorable-tmp"), False), (str(tmp_path), True)]
    assert sha256_file(out) == v3_s3_replica.reference_sha256
