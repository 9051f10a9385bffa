"""Retention's re-listing before it deletes, when that listing fails, end to end.

``python -m jobs.retention --enforce`` verifies the replica, then lists it once more and plans
again before deleting anything (``lib/retention/enforce.py`` ``_select_and_delete``). When
that listing fails the job must delete nothing, keep the verification's verdict, and say so
in a ``retention`` warning naming the replica and the error. The fault proxy lets the
listings a report-only run makes through and answers every later one 503.
"""
from __future__ import annotations

import json

from tests.support.faultproxy import delay, error
from tests.support.replicas import replica_listing
from tests.test_signals import Job, job_env, proxied_config, scratch_entries

EXIT_OK = 0
LISTING = dict(method="GET", key=r"^$")  # bucket-level GETs: ListObjectsV2


def retention_job(config, scratch, tmp_path, *args) -> tuple[int, dict]:
    job = Job("jobs.retention", "--config", config, "--json", *args, env=job_env(scratch), logs=tmp_path / "logs")
    code = job.wait()
    assert job.stdout(), job.stderr()[-4000:]
    return code, json.loads(job.stdout())


def listings(proxy) -> int:
    return sum(1 for r in proxy.requests if r.method == "GET" and r.key == "")


def test_failed_relisting_deletes_nothing_and_keeps_the_verdict(v3_s3_replica, clone, proxy, scratch, tmp_path):
    replica = clone(v3_s3_replica)
    config = proxied_config(replica, proxy, tmp_path / "litestream.yml")
    code, _ = retention_job(config, scratch, tmp_path)  # report only: verification's own listings
    assert code == EXIT_OK
    verification_listings = listings(proxy)
    before = replica_listing(replica)

    proxy.clear_log()
    proxy.set_rules([delay(0, count=verification_listings, **LISTING),
                     error(503, "ServiceUnavailable", **LISTING)])
    code, report = retention_job(config, scratch, tmp_path, "--enforce")

    assert code == EXIT_OK, report
    [db] = report["databases"]
    assert db["status"] == "warning" and db["restored"]["sha256"] == replica.reference_sha256
    [finding] = db["findings"]
    assert (finding["severity"], finding["kind"]) == ("warning", "retention")
    assert finding["message"].startswith(f"retention not applied: re-listing s3://{replica.bucket}/{replica.prefix} "
                                         "before deleting failed")
    assert "ServiceUnavailable" in finding["message"] and finding["message"].endswith("nothing was deleted")
    assert listings(proxy) > verification_listings  # the re-listing was attempted (and retried)
    assert not [r for r in proxy.requests if r.method in ("DELETE", "POST")]
    assert replica_listing(replica) == before
    assert scratch_entries(scratch) == []
    assert db["retention"]["not_applied"].startswith("re-listing before deleting failed")
    assert "deleted" not in db["retention"] or db["retention"]["deleted"]["objects"] == 0
    logs = "".join(p.read_text() for p in tmp_path.joinpath("logs").glob("*.err"))
    assert "retention not applied replica=" in logs
    assert "retention deleted replica=" not in logs  # no "deleted objects=0" line that reads like a clean run
