"""Verify backups on a schedule from one long-running process: ``python -m jobs.schedule``.

For hosts without a cron service (a ``Procfile`` worker). On Railway the cron service
runs ``python -m jobs.verify`` itself (``railway.cron.toml``) and needs none of this.

* **Schedule.** ``VERIFY_SCHEDULE``, a five-field crontab read in UTC (default
  ``0 * * * *``, hourly): the same variable the Sentry cron monitor is upserted with,
  so the monitor expects runs exactly when this worker starts them. Weekday numbers
  mean what they mean in cron (0 and 7 are Sunday), not APScheduler 3's Monday-first.
* **One run at a time.** A run due while the previous one is still going is skipped, as
  Railway's cron skips it; runs missed while the worker was busy collapse into one; a
  run may start up to ``MISFIRE_GRACE_SECONDS`` late (Sentry's default check-in margin).
* **Each run is a child process**, ``python -m jobs.verify --max-runtime D ARGS...``,
  started in its own session. The verification stops itself at its maximum runtime
  (inconclusive, exit 2); if it is still alive ``KILL_MARGIN_SECONDS`` later, the
  worker stops it (SIGTERM, then SIGKILL after the stop grace) and removes the scratch
  directory it left. A crash or a leak in a run can't take the worker down.
* **Failures don't stop the worker.** Every run ends with one log line carrying its exit
  code (see ``python -m jobs.verify --help``); the worker itself never exits because a
  verification failed.
* **SIGTERM / SIGINT** stop scheduling, forward SIGTERM to a running verification (which
  removes its scratch files and closes its Sentry check-in), wait up to the stop grace,
  SIGKILL it past that, and exit 0.

Why ``BackgroundScheduler`` and not ``BlockingScheduler``: the scheduler loop then runs
in its own thread and the main thread does nothing but wait for a stop signal. Stopping
a ``BlockingScheduler`` from a signal handler means raising inside APScheduler's loop,
which catches ``BaseException`` around job submission (a stop could be swallowed) and
may hold locks the handler would need.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

from lib import cli
from lib.errors import EXIT_INCONCLUSIVE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, ConfigError
from lib.units import format_duration, parse_duration

log = logging.getLogger("jobs.schedule")  # not __name__: that is "__main__" under -m

REPO_ROOT = Path(__file__).resolve().parents[1]

SCHEDULE_VAR = "VERIFY_SCHEDULE"
DEFAULT_SCHEDULE = "0 * * * *"  # hourly, on the hour (UTC)
# Test-only: run every N seconds instead of VERIFY_SCHEDULE (crontab's finest step is a minute).
SCHEDULE_SECONDS_VAR = "RESTORABLE_SCHEDULE_SECONDS"
MAX_RUNTIME_VAR = "RESTORABLE_MAX_RUNTIME"
STOP_GRACE_VAR = "RESTORABLE_STOP_GRACE"
DEFAULT_STOP_GRACE = "20s"  # fits Railway's draining time once it is raised to 30 s (docs/deploy.md)
# A late start is still worth running: Sentry only calls a check-in missed after its
# margin (SENTRY_CHECKIN_MARGIN, default 10 minutes).
MISFIRE_GRACE_SECONDS = 600
# After its --max-runtime a verification still prints its report and flushes Sentry (up to
# 10 s, lib.report.sentry.FLUSH_TIMEOUT_SECONDS); past this margin it is hung and killed.
KILL_MARGIN_SECONDS = 60.0
POLL_SECONDS = 0.2  # how often the main thread looks for a stop request
JOB_ID = "verify"

# What each jobs.verify exit code means (lib.errors), for the worker's log line.
OUTCOMES = {
    0: "verified",
    1: "verification failed",
    2: "could not verify",
    3: "usage or config error",
    4: "internal error",
    130: "interrupted",
}

# Cron weekday names; cron numbers 0-6 (and 7) start on Sunday, APScheduler 3's on Monday.
CRON_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_ITEM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")

EPILOG = """exit codes:
  0    stopped by SIGTERM or SIGINT (failed verifications never stop the worker)
  3    usage or config error (VERIFY_SCHEDULE, durations, arguments)
  4    unexpected internal error"""


@dataclass(frozen=True)
class WorkerOptions:
    """Everything the worker needs, read once at start-up."""

    schedule: str  # what the logs call the schedule
    trigger: object  # an APScheduler trigger
    run_now: bool
    verify_args: tuple[str, ...]
    max_runtime: float  # seconds, passed to jobs.verify --max-runtime
    stop_grace: float  # seconds between SIGTERM and SIGKILL for a running verification
    kill_margin: float = KILL_MARGIN_SECONDS
    scratch_root: Path | None = None  # RESTORABLE_SCRATCH_DIR, swept after a kill

    @property
    def hard_timeout(self) -> float:
        return self.max_runtime + self.kill_margin


# --------------------------------------------------------------------------- options


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split ``argv`` at ``--``: the worker's own flags before it, jobs.verify's after it."""
    argv = list(argv)
    own, verify_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = cli.Parser(
        prog="python -m jobs.schedule",
        description="Run `python -m jobs.verify` on VERIFY_SCHEDULE (crontab, UTC) until SIGTERM.\n\n"
                    "Arguments after `--` go to every jobs.verify run, e.g.\n"
                    "  python -m jobs.schedule --run-now -- --config litestream.yml",
        epilog=EPILOG,
    )
    parser.add_argument("--run-now", action="store_true", help="also run once at start-up")
    parser.add_argument("--max-runtime", help=f"each run gives up (inconclusive) after this long (default "
                        f"${MAX_RUNTIME_VAR} or jobs.verify's default); killed if still alive "
                        f"{format_duration(KILL_MARGIN_SECONDS)} later")
    parser.add_argument("--stop-grace", help=f"on SIGTERM, how long a running verification may take to clean up "
                        f"before it is killed (default ${STOP_GRACE_VAR} or {DEFAULT_STOP_GRACE})")
    return parser.parse_args(own), verify_args


def load_options(argv: Sequence[str], environ: Mapping[str, str]) -> WorkerOptions:
    """Read flags and environment; every mistake is a ConfigError naming the setting."""
    from lib.config.settings_model import DEFAULT_MAX_RUNTIME

    args, verify_args = parse_args(argv)
    if any(a == "--max-runtime" or a.startswith("--max-runtime=") for a in verify_args):
        raise ConfigError("give --max-runtime to jobs.schedule (before `--`): the worker enforces it too")
    schedule, trigger = build_trigger(environ)
    max_runtime = parse_duration(args.max_runtime or environ.get(MAX_RUNTIME_VAR) or DEFAULT_MAX_RUNTIME,
                                 f"--max-runtime / {MAX_RUNTIME_VAR}")
    stop_grace = parse_duration(args.stop_grace or environ.get(STOP_GRACE_VAR) or DEFAULT_STOP_GRACE,
                                f"--stop-grace / {STOP_GRACE_VAR}")
    if max_runtime <= 0:
        raise ConfigError(f"--max-runtime / {MAX_RUNTIME_VAR} must be more than 0")
    scratch = (environ.get("RESTORABLE_SCRATCH_DIR") or "").strip()
    return WorkerOptions(schedule=schedule, trigger=trigger, run_now=args.run_now, verify_args=tuple(verify_args),
                         max_runtime=max_runtime, stop_grace=stop_grace, scratch_root=Path(scratch) if scratch else None)


def build_trigger(environ: Mapping[str, str]) -> tuple[str, object]:
    """The trigger for ``VERIFY_SCHEDULE`` (or the test-only seconds override) and its description."""
    from apscheduler.triggers.interval import IntervalTrigger

    expr = (environ.get(SCHEDULE_VAR) or DEFAULT_SCHEDULE).strip()
    trigger = cron_trigger(expr)
    seconds = (environ.get(SCHEDULE_SECONDS_VAR) or "").strip()
    if not seconds:
        return f"{expr} (UTC)", trigger
    try:
        every = float(seconds)
    except ValueError:
        every = 0.0
    if every <= 0:
        raise ConfigError(f"{SCHEDULE_SECONDS_VAR}={seconds!r} must be a number of seconds above 0 (tests only)")
    return f"every {format_duration(every)} ({SCHEDULE_SECONDS_VAR}, tests only)", \
        IntervalTrigger(seconds=every, timezone=timezone.utc)


def cron_trigger(expr: str):
    """A CronTrigger in UTC for a five-field crontab, with cron's weekday numbering.

    :raises ConfigError: not five fields, a field APScheduler rejects, or both day fields
        restricted (cron runs when either matches, APScheduler only when both do).
    """
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"{SCHEDULE_VAR}={expr!r} must have five fields (minute hour day month weekday), "
                          "e.g. '0 * * * *' for hourly")
    minute, hour, day, month, weekday = fields
    if day not in ("*", "?") and weekday not in ("*", "?"):
        raise ConfigError(f"{SCHEDULE_VAR}={expr!r} restricts both day of month and day of week; cron runs when "
                          "either matches but APScheduler only when both do, so restrict just one")
    try:
        return CronTrigger(minute=minute, hour=hour, day=day.replace("?", "*"), month=month,
                           day_of_week=cron_weekdays(weekday), timezone=timezone.utc)
    except ValueError as exc:
        raise ConfigError(f"{SCHEDULE_VAR}={expr!r}: {exc}") from None


def cron_weekdays(field: str) -> str:
    """Translate a crontab day-of-week field to APScheduler 3 names: ``1-5`` -> ``mon,tue,wed,thu,fri``.

    Handles what Sentry and Railway accept in practice: ``*``, numbers 0-7 (0 and 7 are
    Sunday), names ``sun``-``sat``, ranges, lists and ``/step``.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.lower().split(","):
        match = _DOW_ITEM.match(item)
        if not match:
            raise ConfigError(f"{SCHEDULE_VAR}: unsupported day of week {field!r}; use 0-7 or sun-sat, "
                              "ranges (1-5), lists (1,3) and steps (*/2)")
        first, _, last = match["range"].partition("-")
        step = int(match["step"] or 1)
        start = 0 if first == "*" else _weekday(first)
        end = 6 if first == "*" or (match["step"] and not last) else _weekday(last) if last else start
        if end < start and end == 0:
            end = 7  # "5-7" or "fri-sun": Friday to Sunday
        if step < 1 or end < start:
            raise ConfigError(f"{SCHEDULE_VAR}: invalid day-of-week item {item!r}")
        days.update(d % 7 for d in range(start, end + 1, step))
    return ",".join(CRON_WEEKDAYS[d] for d in sorted(days))


def _weekday(token: str) -> int:
    """Cron weekday number 0-6 of a name or a number (7 is Sunday, as 0)."""
    if token in CRON_WEEKDAYS:
        return CRON_WEEKDAYS.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ConfigError(f"{SCHEDULE_VAR}: {token!r} is not a day of week (0-7 or sun-sat)")


# --------------------------------------------------------------------------- one run


class ChildRun:
    """One ``jobs.verify`` child process in its own session (it gets our signals only when we forward them)."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str]):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(list(command), env=dict(env), stdin=subprocess.DEVNULL, start_new_session=True)
        self.was_killed = False
        self._terminated = False
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if the child is still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float) -> int:
        """SIGTERM, up to ``grace`` seconds to clean up, then SIGKILL. Returns the exit code.

        Safe to call from two threads: SIGTERM is sent once, because jobs.verify treats
        every SIGTERM as a new interruption, and a second one would cut its clean-up short.
        """
        with self._lock:
            send, self._terminated = not self._terminated, True
        if send and self.proc.poll() is None:
            self._signal(signal.SIGTERM)
        code = self.wait(grace)
        if code is None:
            log.error("verification pid=%d did not stop within %s of SIGTERM; killing it", self.pid,
                      format_duration(grace))
            self.was_killed = True
            self._signal(signal.SIGKILL)
            code = self.proc.wait()
        return code

    def _signal(self, signum: int) -> None:
        try:
            self.proc.send_signal(signum)
        except ProcessLookupError:
            pass


def describe_exit(code: int) -> str:
    """``verification failed`` / ``killed by SIGKILL`` / ``exit code 9``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return OUTCOMES.get(code, f"exit code {code}")


def sweep_scratch(scratch_root: Path | None) -> None:
    """Remove scratch directories of verification processes that no longer exist."""
    from lib.scratch import sweep_leftovers

    sweep_leftovers(scratch_root or Path(tempfile.gettempdir()))


def child_env(environ: Mapping[str, str], max_runtime: float) -> dict[str, str]:
    """The worker's environment, with this repository importable wherever the worker runs.

    ``RESTORABLE_MAX_RUNTIME`` is set to the run's limit too: the Sentry monitor's
    ``max_runtime`` is derived from that variable, not from the command line.
    """
    env = dict(environ)
    env[MAX_RUNTIME_VAR] = format_duration(max_runtime)
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


# --------------------------------------------------------------------------- the worker


class Worker:
    """Schedules verifications and stops cleanly; see the module docstring."""

    def __init__(self, options: WorkerOptions, environ: Mapping[str, str]):
        self.options = options
        self.environ = environ
        self.runs = 0
        self._lock = threading.Lock()
        self._child: ChildRun | None = None
        self._stopping = False
        self._idle = threading.Event()
        self._idle.set()
        self._stop_signal: int | None = None  # written by the signal handler, nothing else

    def command(self) -> list[str]:
        return [sys.executable, "-m", "jobs.verify", "--max-runtime", format_duration(self.options.max_runtime),
                *self.options.verify_args]

    def verify_once(self) -> int | None:
        """One scheduled run: start the child, enforce the hard limit, log the outcome.

        Returns the exit code, or None when the worker is stopping and no run started.
        """
        with self._lock:
            if self._stopping:
                return None
            self.runs += 1
            number = self.runs
            self._idle.clear()
            try:
                child = self._child = ChildRun(self.command(), child_env(self.environ, self.options.max_runtime))
            except OSError:
                self._idle.set()
                raise
        log.info("verification started run=%d pid=%d", number, child.pid)
        try:
            code = self._wait(child)
        finally:
            with self._lock:
                self._child = None
            self._idle.set()
        self._log_outcome(number, code, time.monotonic() - child.started)
        return code

    def _wait(self, child: ChildRun) -> int:
        code = child.wait(self.options.hard_timeout)
        if code is not None:
            return code
        log.error("verification pid=%d still running %s after its maximum runtime; stopping it (inconclusive)",
                  child.pid, format_duration(self.options.kill_margin))
        child.stop(self.options.stop_grace)
        if child.was_killed:
            sweep_scratch(self.options.scratch_root)
        return EXIT_INCONCLUSIVE

    def _log_outcome(self, number: int, code: int, seconds: float) -> None:
        level = (logging.INFO if code == EXIT_OK else
                 logging.WARNING if code in (EXIT_INCONCLUSIVE, EXIT_INTERRUPTED) else logging.ERROR)
        log.log(level, "verification finished run=%d exit_code=%d outcome=%r duration=%s", number, code,
                describe_exit(code), format_duration(round(seconds, 1)))

    # ------------------------------------------------------------------ lifecycle

    def serve(self) -> int:
        """Run until SIGTERM or SIGINT; returns the worker's exit code (0 after a stop signal)."""
        scheduler = self._build_scheduler()
        self._install_signal_handlers()
        scheduler.start()
        job = scheduler.get_job(JOB_ID)
        log.info("worker started schedule=%r next_run=%s max_runtime=%s", self.options.schedule,
                 _iso(job.next_run_time if job else None), format_duration(self.options.max_runtime))
        while self._stop_signal is None and scheduler.running:
            time.sleep(POLL_SECONDS)
        if self._stop_signal is None:
            log.error("scheduler stopped unexpectedly; exiting")
            self._stop(scheduler)
            return EXIT_INTERNAL
        log.info("%s received; stopping", signal.Signals(self._stop_signal).name)
        self._stop(scheduler)
        log.info("worker stopped")
        return EXIT_OK

    def _stop(self, scheduler) -> None:
        """No new runs; the running one gets SIGTERM and the stop grace, then SIGKILL."""
        with self._lock:
            self._stopping = True
            child = self._child
        if scheduler.running:
            scheduler.shutdown(wait=False)
        if child is not None:
            log.info("stopping verification pid=%d (grace %s)", child.pid, format_duration(self.options.stop_grace))
            child.stop(self.options.stop_grace)
            if child.was_killed:
                sweep_scratch(self.options.scratch_root)
        self._idle.wait(timeout=5.0)

    def _build_scheduler(self):
        """One job, one run at a time. APScheduler itself logs (at WARNING) a run skipped
        because the previous one is still going, and a run missed by more than the grace."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS},
        )
        extra = {"next_run_time": datetime.now(timezone.utc)} if self.options.run_now else {}
        scheduler.add_job(self.verify_once, self.options.trigger, id=JOB_ID, name="verify", **extra)
        return scheduler

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        # Only a plain assignment: the main thread may be anywhere, holding any lock.
        self._stop_signal = signum


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds") if moment else "-"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Start the worker; returns 0 after SIGTERM/SIGINT, 3 on a config error, 4 on a bug."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv

    def body() -> int:
        from lib.report.logs import setup_logging

        setup_logging(environ, secrets=[])
        options = load_options(argv, environ)
        if environ.get(SCHEDULE_SECONDS_VAR):
            log.warning("%s is set: runs every few seconds instead of %s; for tests only",
                        SCHEDULE_SECONDS_VAR, SCHEDULE_VAR)
        return Worker(options, environ).serve()

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
