"""The scheduling worker, ``python -m jobs.schedule``: schedule parsing, child runs, signals.

Runs are made every second or two with ``RESTORABLE_SCHEDULE_SECONDS`` (test-only; a
crontab cannot go below a minute). Worker processes are real; their log lines
(``LOG_FORMAT=text`` on stderr) say what each run ended with.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from lib.schedule.runner import REPO_ROOT, ChildRun, Worker, WorkerOptions, child_env, describe_exit
from lib.schedule.trigger import build_trigger, cron_trigger, cron_weekdays
from jobs.schedule import load_options
from lib.errors import ConfigError
from tests.test_signals import (Job, job_env, proxied_config, scratch_entries, slow_restores, wait_until,
                               wait_until_restoring)

FINISHED = re.compile(r"verification finished run=(\d+) exit_code=(-?\d+)")


def finished_runs(stderr: str) -> list[tuple[int, int]]:
    """``[(run number, exit code), ...]`` from the worker's log."""
    return [(int(n), int(code)) for n, code in FINISHED.findall(stderr)]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# ------------------------------------------------------------------ schedule parsing


@pytest.mark.parametrize("field, names", [
    ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"), ("5-7", "sun,fri,sat"),
    ("*/2", "sun,tue,thu,sat"), ("1/2", "mon,wed,fri"), ("sat,sun", "sun,sat"), ("MON-wed,5", "mon,tue,wed,fri"),
    ("*", "*"),
])
def test_weekday_numbers_follow_cron_not_apscheduler(field, names):
    assert cron_weekdays(field) == names


@pytest.mark.parametrize("expr, after, expected", [
    ("0 * * * *", utc(2026, 3, 4, 10, 17), utc(2026, 3, 4, 11, 0)),
    ("*/15 * * * *", utc(2026, 3, 4, 10, 17), utc(2026, 3, 4, 10, 30)),
    ("0 3 * * 0", utc(2026, 3, 4, 10, 17), utc(2026, 3, 8, 3, 0)),  # 2026-03-08 is a Sunday
    ("30 2 * * 1-5", utc(2026, 3, 7, 12, 0), utc(2026, 3, 9, 2, 30)),  # Saturday -> Monday
    ("0 4 1 * *", utc(2026, 3, 4, 10, 17), utc(2026, 4, 1, 4, 0)),
])
def test_cron_schedule_fires_in_utc(expr, after, expected):
    trigger = cron_trigger(expr)

    assert trigger.get_next_fire_time(None, after) == expected


@pytest.mark.parametrize("expr, complaint", [
    ("* * * *", "five fields"),
    ("0 * * * * *", "five fields"),
    ("0 3 1 * 1", "both day of month and day of week"),
    ("61 * * * *", "VERIFY_SCHEDULE"),
    ("0 * * * funday", "not a day of week"),
])
def test_bad_schedule_is_a_config_error(expr, complaint):
    with pytest.raises(ConfigError, match=complaint):
        cron_trigger(expr)


def test_default_schedule_is_hourly():
    description, trigger = build_trigger({})

    assert isinstance(trigger, CronTrigger)
    assert description == "0 * * * * (UTC)"
    assert trigger.get_next_fire_time(None, utc(2026, 1, 1, 0, 0, 1)) == utc(2026, 1, 1, 1, 0)


def test_seconds_override_is_an_interval():
    description, trigger = build_trigger({"VERIFY_SCHEDULE": "*/5 * * * *", "RESTORABLE_SCHEDULE_SECONDS": "2"})

    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval.total_seconds() == 2
    assert "tests only" in description


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_seconds_override_is_a_config_error(value):
    with pytest.raises(ConfigError, match="RESTORABLE_SCHEDULE_SECONDS"):
        build_trigger({"RESTORABLE_SCHEDULE_SECONDS": value})


def test_options_pass_arguments_after_double_dash_to_verify():
    options = load_options(["--run-now", "--", "--config", "ls.yml", "--json"], {"RESTORABLE_MAX_RUNTIME": "90s"})

    assert options.run_now
    assert options.verify_args == ("--config", "ls.yml", "--json")
    assert options.max_runtime == 90
    assert options.stop_grace == 20
    assert Worker(options, {}).command()[1:] == ["-m", "jobs.verify", "--max-runtime", "90s",
                                                 "--config", "ls.yml", "--json"]


def test_child_environment_carries_the_max_runtime_and_the_repository():
    env = child_env({"PYTHONPATH": "/elsewhere", "KEEP": "1"}, 600)

    assert env["RESTORABLE_MAX_RUNTIME"] == "10m"  # the Sentry monitor's max_runtime follows it
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/elsewhere"]
    assert env["KEEP"] == "1"


def test_max_runtime_after_double_dash_is_refused():
    with pytest.raises(ConfigError, match="before `--`"):
        load_options(["--", "--max-runtime=5m"], {})


@pytest.mark.parametrize("code, text", [
    (0, "verified"), (1, "verification failed"), (2, "could not verify"), (130, "interrupted"),
    (-9, "killed by SIGKILL"), (77, "exit code 77"),
])
def test_exit_codes_are_described(code, text):
    assert describe_exit(code) == text


# ------------------------------------------------------------------ child processes

# Makes a scratch folder the way a run does (with its marker, so the worker's sweep may take
# it), ignores SIGTERM, and hangs.
STUBBORN_CHILD = """
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from lib.scratch import write_marker
signal.signal(signal.SIGTERM, signal.SIG_IGN)
folder = Path(sys.argv[1], f"restorable-{os.getpid()}-stuck")
folder.mkdir()
write_marker(folder)
print("ready", flush=True)
time.sleep(60)
"""


HONOURING_CHILD = """
import pathlib, sys, time
pathlib.Path(sys.argv[1]).touch()
time.sleep(60)
"""
CHILD_START_SECONDS = 30  # a failure bound for an interpreter start-up on a loaded machine


def test_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    child = ChildRun([sys.executable, "-c", STUBBORN_CHILD, str(tmp_path), str(REPO_ROOT)], {})
    # it ignores SIGTERM from the moment its folder exists
    assert wait_until(lambda: (tmp_path / f"restorable-{child.pid}-stuck").exists(), timeout=CHILD_START_SECONDS)
    started = time.monotonic()

    code = child.stop(grace=1.0)

    assert code == -signal.SIGKILL
    assert child.was_killed
    assert time.monotonic() - started >= 0.9  # the grace was given (a loaded machine only adds to it)


def test_child_that_honours_sigterm_is_not_killed(tmp_path):
    ready = tmp_path / "ready"
    child = ChildRun([sys.executable, "-c", HONOURING_CHILD, str(ready)], {})
    assert wait_until(ready.exists, timeout=CHILD_START_SECONDS)

    assert child.stop(grace=10.0) == -signal.SIGTERM
    assert not child.was_killed


class StubbornWorker(Worker):
    """A worker whose verification hangs past every limit (what the hard limit is for)."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", STUBBORN_CHILD, str(self.options.scratch_root), str(REPO_ROOT)]


def test_run_past_max_runtime_is_killed_inconclusive_and_its_scratch_removed(tmp_path):
    options = WorkerOptions(schedule="test", trigger=None, run_now=False, verify_args=(), max_runtime=1.0,
                            stop_grace=0.5, kill_margin=0.5, scratch_root=tmp_path)
    started = time.monotonic()

    code = StubbornWorker(options, {}).verify_once()

    assert code == 2
    assert time.monotonic() - started < 30  # the child would sleep 60 s if nobody killed it
    assert scratch_entries(tmp_path) == []


# ------------------------------------------------------------------ the worker process


def start_worker(*args: str, scratch: Path, logs: Path, **env: str) -> Job:
    return Job("jobs.schedule", *args, env=job_env(scratch, **env), logs=logs)


def stop_worker(worker: Job, timeout: float = 30) -> int:
    worker.signal(signal.SIGTERM)
    return worker.wait(timeout=timeout)


def test_failing_runs_are_logged_and_the_worker_keeps_going(scratch, tmp_path):
    empty = tmp_path / "empty-replica"  # no backups: each run fails (a missing folder is a config error)
    empty.mkdir()
    worker = start_worker("--run-now", "--", empty.as_uri(), scratch=scratch, logs=tmp_path,
                          RESTORABLE_SCHEDULE_SECONDS="1")
    try:
        log = worker.wait_for_stderr(lambda text: len(finished_runs(text)) >= 2, timeout=30)
        assert finished_runs(log)[:2] == [(1, 1), (2, 1)]
        assert "outcome='verification failed'" in log
        assert worker.proc.poll() is None, "a failed verification must not stop the worker"
    finally:
        code = stop_worker(worker)

    assert code == 0, worker.stderr()
    assert "SIGTERM received; stopping" in worker.stderr()
    assert scratch_entries(scratch) == []


def test_good_replica_runs_on_schedule_then_sigint_stops(v3_file_replica, scratch, tmp_path):
    worker = start_worker("--", "--config", str(v3_file_replica.config_path), scratch=scratch, logs=tmp_path,
                          RESTORABLE_SCHEDULE_SECONDS="1")
    try:
        log = worker.wait_for_stderr(lambda text: len(finished_runs(text)) >= 2, timeout=30)
        assert finished_runs(log)[:2] == [(1, 0), (2, 0)]
    finally:
        worker.signal(signal.SIGINT)
    assert worker.wait(timeout=30) == 0, worker.stderr()
    assert scratch_entries(scratch) == []


def test_sigterm_during_a_run_stops_it_cleanly_and_exits_0(v3_s3_replica, proxy, scratch, sentry, tmp_path):
    config = proxied_config(v3_s3_replica, proxy, tmp_path / "litestream.yml")
    slow_restores(proxy)
    worker = start_worker("--run-now", "--", "--config", str(config), scratch=scratch, logs=tmp_path,
                          SENTRY_DSN=sentry.dsn)
    wait_until_restoring(proxy, worker)
    assert scratch_entries(scratch)

    code = stop_worker(worker)  # fails the test unless the worker exits while the downloads are still held

    assert code == 0, worker.stderr()
    assert (1, 130) in finished_runs(worker.stderr())
    assert scratch_entries(scratch) == []
    assert sentry.wait_for(lambda s: [c["status"] for c in s.check_ins()] == ["in_progress", "error"]), \
        sentry.check_ins()


def test_run_due_while_one_is_running_is_skipped(v3_s3_replica, proxy, scratch, tmp_path):
    config = proxied_config(v3_s3_replica, proxy, tmp_path / "litestream.yml")
    slow_restores(proxy)
    worker = start_worker("--run-now", "--max-runtime", "4s", "--", "--config", str(config), scratch=scratch,
                          logs=tmp_path, RESTORABLE_SCHEDULE_SECONDS="1")
    try:
        log = worker.wait_for_stderr(lambda text: finished_runs(text), timeout=40)
        assert "skipped: maximum number of running instances reached (1)" in log
        assert finished_runs(log)[0] == (1, 2)
        second = log.find("verification started run=2")
        assert second == -1 or second > log.find("verification finished run=1")
    finally:
        assert stop_worker(worker) == 0
    assert scratch_entries(scratch) == []


def test_bad_schedule_stops_the_worker_at_start_with_exit_3(scratch, tmp_path):
    worker = start_worker(scratch=scratch, logs=tmp_path, VERIFY_SCHEDULE="every hour")

    assert worker.wait(timeout=30) == 3
    assert "VERIFY_SCHEDULE='every hour' must have five fields" in worker.stderr()
