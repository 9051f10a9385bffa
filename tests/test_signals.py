"""Signals against the real ``python -m jobs.verify`` (and ``jobs.restore``) process, mid-restore.

The restore is made slow by the fault proxy: object GETs (not listings) wait long
enough that the test can signal the process while it is restoring. Each test checks
the exit code, that the scratch directory (``RESTORABLE_SCRATCH_DIR``) is empty
afterwards, and, where Sentry is on, that the check-in was closed as an error.

The helpers here are shared by ``test_max_runtime.py`` and ``test_schedule.py``.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import pytest
import yaml

from lib.storage.s3 import S3Settings
from tests.support import REPO_ROOT, restorable_env
from tests.support.faultproxy import FaultProxy, delay
from tests.support.replicas import BuiltReplica

EXIT_INTERRUPTED = 130
SLOW_GET_SECONDS = 120  # far beyond every test's patience: the restore never finishes by itself
PROCESS_TIMEOUT = 60  # no wait in these tests is longer
# A job that waited for a held download would end no sooner than the S3 read timeout (then
# botocore retries it); one that does not wait ends in a second or two, more on a loaded
# machine. The bound only fails a test: the tests wait for the process to exit, not for time.
STOP_BOUND_SECONDS = S3Settings.read_timeout * 2 / 3


# ----------------------------------------------------------------------- helpers


def proxied_config(replica: BuiltReplica, proxy: FaultProxy, path: Path) -> Path:
    """A copy of ``replica``'s litestream.yml whose S3 endpoint is the fault proxy."""
    doc = yaml.safe_load(replica.config_path.read_text())
    db = doc["dbs"][0]
    for entry in db.get("replicas") or [db["replica"]]:
        entry["endpoint"] = proxy.endpoint
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def slow_restores(proxy: FaultProxy, seconds: float = SLOW_GET_SECONDS) -> None:
    """Object downloads hang; listings (bucket-level GETs, key ``""``) stay fast."""
    proxy.set_rules([delay(seconds, method="GET", key=r".")])


def job_env(scratch: Path, **extra: str) -> dict[str, str]:
    """The test environment for a job: private scratch root, no history, text logs."""
    return restorable_env({"RESTORABLE_SCRATCH_DIR": str(scratch), "RESTORABLE_HISTORY": "off",
                           "LOG_FORMAT": "text", **extra})


class Job:
    """A job started as ``python -m MODULE ARGS`` with its output in files (no pipe can fill up)."""

    def __init__(self, module: str, *args: str | os.PathLike, env: Mapping[str, str], logs: Path):
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path = logs / f"{module}.{time.monotonic_ns()}.out"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT,
                                         env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        """The exit code; kills the process and fails the test if it does not end in ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"process did not exit within {timeout}s; stderr:\n{self.stderr()[-4000:]}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_stderr(self, predicate, timeout: float = PROCESS_TIMEOUT) -> str:
        """Poll stderr until ``predicate(text)`` holds; fails the test if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr()
            if predicate(text):
                return text
            if self.proc.poll() is not None:
                pytest.fail(f"process exited {self.proc.returncode} early; stderr:\n{text[-4000:]}")
            time.sleep(0.05)
        pytest.fail(f"stderr condition not met within {timeout}s; stderr:\n{self.stderr()[-4000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_until_restoring(proxy: FaultProxy, job: Job, timeout: float = 30) -> None:
    """Block until the job has asked for an object the proxy holds back (it is mid-restore)."""
    if not proxy.wait_for(lambda p: p.matched("delay"), timeout=timeout):
        job.kill()
        pytest.fail(f"no object download reached the proxy in {timeout}s; stderr:\n{job.stderr()[-4000:]}")


def wait_until(condition, timeout: float) -> bool:
    """Poll ``condition()`` until true or ``timeout`` passes; returns the last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def start_restore_job(replica: BuiltReplica, proxy: FaultProxy, scratch: Path, tmp_path: Path,
                      *args) -> tuple[Job, Path]:
    """``python -m jobs.restore`` of ``replica`` through ``proxy`` into ``tmp_path/out``, once it downloads."""
    config = proxied_config(replica, proxy, tmp_path / "litestream.yml")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    job = Job("jobs.restore", "--config", config, "-o", out_dir / "restored.db", *args, env=job_env(scratch),
              logs=tmp_path)
    wait_until_restoring(proxy, job)
    return job, out_dir


def assert_sigterm_stops_restore_job_at_once(job: Job, out_dir: Path) -> None:
    """SIGTERM ends the restore with exit 130 without waiting for the held download (before
    its read timeout could end it), leaving nothing in ``out_dir``."""
    job.signal(signal.SIGTERM)
    code = job.wait(timeout=STOP_BOUND_SECONDS)
    assert code == EXIT_INTERRUPTED, job.stderr()
    assert os.listdir(out_dir) == []


def scratch_entries(scratch: Path) -> list[str]:
    return sorted(p.name for p in scratch.iterdir())


# ------------------------------------------------------------------------- tests


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_restore_exits_130_removes_scratch_and_closes_check_in(
        v3_s3_replica, proxy, scratch, sentry, tmp_path, signum):
    config = proxied_config(v3_s3_replica, proxy, tmp_path / "litestream.yml")
    slow_restores(proxy)
    job = Job("jobs.verify", "--config", config, "--json", env=job_env(scratch, SENTRY_DSN=sentry.dsn),
              logs=tmp_path)
    wait_until_restoring(proxy, job)
    entries = scratch_entries(scratch)
    assert entries, "the run should have a scratch directory while restoring"
    assert {stat.S_IMODE((scratch / name).stat().st_mode) for name in entries} == {0o700}

    job.signal(signum)
    code = job.wait(timeout=STOP_BOUND_SECONDS)  # the held downloads would outlast it

    assert code == EXIT_INTERRUPTED, job.stderr()
    assert scratch_entries(scratch) == []
    assert sentry.wait_for(lambda s: [c["status"] for c in s.check_ins()] == ["in_progress", "error"]), \
        sentry.check_ins()
    assert any("aborted" in (e.get("message") or "") for e in sentry.events())


def test_sigterm_mid_restore_of_v5_replica_cleans_up(v5_s3_replica, proxy, scratch, tmp_path):
    config = proxied_config(v5_s3_replica, proxy, tmp_path / "litestream.yml")
    slow_restores(proxy)
    job = Job("jobs.verify", "--config", config, env=job_env(scratch), logs=tmp_path)
    wait_until_restoring(proxy, job)

    job.signal(signal.SIGTERM)

    assert job.wait(timeout=30) == EXIT_INTERRUPTED, job.stderr()
    assert scratch_entries(scratch) == []


def test_sigkill_mid_restore_leaves_scratch_that_the_next_run_removes(v3_s3_replica, proxy, scratch, tmp_path):
    config = proxied_config(v3_s3_replica, proxy, tmp_path / "litestream.yml")
    slow_restores(proxy)
    killed = Job("jobs.verify", "--config", config, env=job_env(scratch), logs=tmp_path)
    wait_until_restoring(proxy, killed)

    killed.signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    leftovers = scratch_entries(scratch)
    assert leftovers and all(name.startswith(f"restorable-{killed.pid}-") for name in leftovers)

    proxy.clear()
    again = Job("jobs.verify", "--config", config, "--json", env=job_env(scratch), logs=tmp_path)
    code = again.wait()

    assert code == 0, again.stderr()
    assert json.loads(again.stdout())["status"] == "ok"
    assert scratch_entries(scratch) == []
    assert "removing scratch directory left by an interrupted run" in again.stderr()


def test_finished_run_leaves_no_scratch(v3_file_replica, scratch, tmp_path):
    job = Job("jobs.verify", "--config", v3_file_replica.config_path, env=job_env(scratch), logs=tmp_path)

    assert job.wait() == 0, job.stderr()
    assert scratch_entries(scratch) == []


def test_failed_run_leaves_no_scratch(tmp_path, scratch):
    empty = tmp_path / "empty-replica"  # no backups: a failed run (a missing folder is a config error)
    empty.mkdir()
    job = Job("jobs.verify", empty.as_uri(), env=job_env(scratch), logs=tmp_path)

    assert job.wait() == 1, job.stderr()
    assert scratch_entries(scratch) == []


@pytest.mark.parametrize("held", ["/wal/", "/snapshots/", "/snapshots/ before headers"])
def test_sigterm_while_restore_job_waits_for_a_slow_download_exits_at_once(v3_s3_replica, proxy, scratch, tmp_path,
                                                                           held):
    """``python -m jobs.restore`` blocked on a WAL segment download (``lib.storage.pool.stream``) or on the
    snapshot (streamed by its own thread, ``lib.litestream.v3.snapshot``) stops on SIGTERM within a few seconds, exits
    130 and leaves neither OUT nor its temporary file."""
    # Stalled before the response headers, or (the snapshot) mid-body.
    at = {"at": "body", "after_bytes": 64} if held == "/snapshots/" else {}
    held = held.split()[0]
    proxy.set_rules([delay(SLOW_GET_SECONDS, method="GET", key=held, **at)])  # the other downloads stay fast
    job, out_dir = start_restore_job(v3_s3_replica, proxy, scratch, tmp_path)
    partial = out_dir / ".restored.db.restorable-tmp"
    assert wait_until(partial.exists, timeout=10), "the restore should be writing its temporary output"
    assert os.listdir(out_dir) == [partial.name]
    assert_sigterm_stops_restore_job_at_once(job, out_dir)
    assert "interrupted by SIGTERM" in job.stderr()
    assert scratch_entries(scratch) == []


@pytest.mark.parametrize("point_in_time", [False, True], ids=["latest", "timestamp"])
def test_sigterm_while_restore_job_waits_for_a_slow_v5_download_exits_at_once(v5_s3_replica, proxy, scratch,
                                                                               tmp_path, point_in_time):
    """The same for a v0.5 replica: its LTX files stream through the same pool (``lib.storage.pool.Prefetcher``),
    and a ``--timestamp`` restore first reads every file's header (``with_header_times``)."""
    at = {} if point_in_time else {"at": "body", "after_bytes": 64}
    proxy.set_rules([delay(SLOW_GET_SECONDS, method="GET", key=r"\.ltx", **at)])
    target = ["--timestamp", "2100-01-01T00:00:00Z"] if point_in_time else []
    job, out_dir = start_restore_job(v5_s3_replica, proxy, scratch, tmp_path, *target)
    if not point_in_time:
        partial = out_dir / ".restored.db.restorable-tmp"
        assert wait_until(partial.exists, timeout=10), "the restore should be writing its temporary output"
    assert_sigterm_stops_restore_job_at_once(job, out_dir)
