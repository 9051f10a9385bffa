"""The maximum runtime: a run against storage that hangs ends inconclusive (exit 2), on time.

Storage is made to hang by the fault proxy (object downloads or the listing itself wait
far longer than the run may take). The process must end within ``--max-runtime`` plus a
few seconds of start-up and exit (plus the short reporting grace when the history in the
bucket hangs too), with a JSON report whose finding names the maximum runtime, and leave
no scratch behind.
"""
from __future__ import annotations

import json
import signal
import time

import pytest

from tests.support.faultproxy import delay
from tests.test_signals import Job, job_env, proxied_config, scratch_entries, slow_restores

EXIT_INCONCLUSIVE = 2
MAX_RUNTIME_SECONDS = 4
# Interpreter start-up and imports before the deadline starts counting, and the exit after it.
# Generous, as a failure bound only: the stalled storage holds for 120 s (SLOW_GET_SECONDS),
# so a run that ignored its deadline ends far later, while start-up on a loaded 2-core
# machine can take many seconds.
SLACK_SECONDS = 30
# History and email may take this long after the deadline (jobs.verify.REPORTING_GRACE_SECONDS).
REPORTING_GRACE_SECONDS = 5


def deadline_findings(report: dict) -> list[dict]:
    return [f for db in report["databases"] for f in db["findings"] if "maximum runtime" in f["message"]]


@pytest.mark.parametrize("stall", ["download", "listing"])
def test_hanging_storage_ends_inconclusive_within_max_runtime(v3_s3_replica, proxy, scratch, tmp_path, stall):
    config = proxied_config(v3_s3_replica, proxy, tmp_path / "litestream.yml")
    if stall == "download":
        slow_restores(proxy)
    else:
        proxy.set_rules([delay(120, method="GET", key=r"^$")])
    started = time.monotonic()
    job = Job("jobs.verify", "--config", config, "--json", "--max-runtime", f"{MAX_RUNTIME_SECONDS}s",
              env=job_env(scratch), logs=tmp_path)

    code = job.wait(timeout=MAX_RUNTIME_SECONDS + 30)
    elapsed = time.monotonic() - started

    assert code == EXIT_INCONCLUSIVE, job.stderr()
    assert elapsed < MAX_RUNTIME_SECONDS + SLACK_SECONDS
    assert proxy.matched("delay"), "the run never reached the stalled request"
    report = json.loads(job.stdout())
    assert report["status"] == "inconclusive"
    [finding] = deadline_findings(report)
    assert finding["inconclusive"] is True
    assert scratch_entries(scratch) == []


def test_max_runtime_from_the_environment(v5_s3_replica, proxy, scratch, tmp_path):
    config = proxied_config(v5_s3_replica, proxy, tmp_path / "litestream.yml")
    slow_restores(proxy)
    started = time.monotonic()
    job = Job("jobs.verify", "--config", config, "--json",
              env=job_env(scratch, RESTORABLE_MAX_RUNTIME=f"{MAX_RUNTIME_SECONDS}s"), logs=tmp_path)

    code = job.wait(timeout=MAX_RUNTIME_SECONDS + 30)

    assert code == EXIT_INCONCLUSIVE, job.stderr()
    assert time.monotonic() - started < MAX_RUNTIME_SECONDS + SLACK_SECONDS
    assert deadline_findings(json.loads(job.stdout()))
    assert scratch_entries(scratch) == []


def test_worker_reports_the_inconclusive_run_and_keeps_going(v3_s3_replica, proxy, scratch, tmp_path):
    config = proxied_config(v3_s3_replica, proxy, tmp_path / "litestream.yml")
    slow_restores(proxy)
    worker = Job("jobs.schedule", "--run-now", "--max-runtime", f"{MAX_RUNTIME_SECONDS}s", "--", "--config", config,
                 env=job_env(scratch), logs=tmp_path)
    try:
        log = worker.wait_for_stderr(lambda text: "verification finished run=1" in text,
                                     timeout=MAX_RUNTIME_SECONDS + 30)
        assert "exit_code=2 outcome='could not verify'" in log
        assert worker.proc.poll() is None
    finally:
        worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert scratch_entries(scratch) == []


def test_hanging_history_still_ends_within_max_runtime_plus_reporting_grace(v3_s3_replica, proxy, scratch, tmp_path):
    config = proxied_config(v3_s3_replica, proxy, tmp_path / "litestream.yml")
    proxy.set_rules([delay(120, method="GET")])  # every read, the history's latest.json included
    env = job_env(scratch)
    del env["RESTORABLE_HISTORY"]  # history on, as by default
    job = Job("jobs.verify", "--config", config, "--json", "--max-runtime", f"{MAX_RUNTIME_SECONDS}s",
              env=env, logs=tmp_path)

    started = time.monotonic()
    code = job.wait(timeout=MAX_RUNTIME_SECONDS + REPORTING_GRACE_SECONDS + SLACK_SECONDS + 10)

    assert code == EXIT_INCONCLUSIVE, job.stderr()
    assert time.monotonic() - started < MAX_RUNTIME_SECONDS + REPORTING_GRACE_SECONDS + SLACK_SECONDS
    assert deadline_findings(json.loads(job.stdout()))
    assert scratch_entries(scratch) == []
