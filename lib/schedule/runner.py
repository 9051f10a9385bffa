"""The worker loop: each verification as a child process with a hard time limit, stopped cleanly on SIGTERM."""
from __future__ import annotations

import logging
import os
import shutil
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

from lib.errors import EXIT_INCONCLUSIVE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, describe_exit_code
from lib.report.endpoints import WORKER_OUTPUT_VAR
from lib.report.serve import ServeSettings
from lib.units import format_duration, format_iso

log = logging.getLogger("jobs.schedule")  # not __name__: that is "__main__" under -m


REPO_ROOT = Path(__file__).resolve().parents[2]

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
    return describe_exit_code(code)


def sweep_scratch(scratch_root: Path | None) -> None:
    """Remove scratch directories of verification processes that no longer exist."""
    from lib.scratch import sweep_leftovers

    sweep_leftovers(scratch_root or Path(tempfile.gettempdir()))


def child_env(environ: Mapping[str, str], max_runtime: float, output_dir: Path | None = None) -> dict[str, str]:
    """The worker's environment, with this repository importable wherever the worker runs.

    ``RESTORABLE_MAX_RUNTIME`` is set to the run's limit too: the Sentry monitor's
    ``max_runtime`` is derived from that variable, not from the command line. With
    ``output_dir`` (the worker serves ``$PORT``), each run also leaves its metrics and
    status page there (``RESTORABLE_WORKER_OUTPUT_DIR``).
    """
    env = dict(environ)
    env[MAX_RUNTIME_VAR] = format_duration(max_runtime)
    if output_dir is not None:
        env[WORKER_OUTPUT_VAR] = str(output_dir)
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
        self._scheduler = None
        self.serve_settings = ServeSettings.from_environ(environ)  # a bad $PORT is a config error at start
        self.output_dir: Path | None = None
        self.process_metrics = None

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
                env = child_env(self.environ, self.options.max_runtime, self.output_dir)
                child = self._child = ChildRun(self.command(), env)
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
        if self.process_metrics is not None:
            self.process_metrics.record(describe_exit(code), code, time.time())
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
        scheduler = self._scheduler = self._build_scheduler()
        server = self._start_server()
        self._install_signal_handlers()
        scheduler.start()
        job = scheduler.get_job(JOB_ID)
        log.info("worker started schedule=%r next_run=%s max_runtime=%s", self.options.schedule,
                 format_iso(job.next_run_time if job else None, "seconds") or "-", format_duration(self.options.max_runtime))
        while self._stop_signal is None and scheduler.running:
            time.sleep(POLL_SECONDS)
        if self._stop_signal is None:
            log.error("scheduler stopped unexpectedly; exiting")
            self._stop(scheduler)
            return EXIT_INTERNAL
        log.info("%s received; stopping", signal.Signals(self._stop_signal).name)
        self._stop(scheduler)
        if server is not None:
            server.stop()
            shutil.rmtree(self.output_dir, ignore_errors=True)
        log.info("worker stopped")
        return EXIT_OK

    def _start_server(self):
        """Serve /healthz, /metrics and the status page on $PORT (lib.report.serve), when $PORT is set."""
        if self.serve_settings is None:
            return None
        from lib.report.serve import OutputServer, ProcessMetrics

        self.output_dir = Path(tempfile.mkdtemp(prefix="restorable-worker-"))
        self.process_metrics = ProcessMetrics()
        server = OutputServer(self.serve_settings, self.output_dir, health=self.health,
                              own_metrics=self.process_metrics.exposition,
                              metrics_file=self.output_dir / "metrics.prom")
        server.start()
        return server

    def health(self) -> tuple[bool, dict]:
        """Healthy while the scheduler runs and no stop was requested."""
        scheduler = self._scheduler
        running = bool(scheduler is not None and scheduler.running and self._stop_signal is None)
        job = scheduler.get_job(JOB_ID) if running else None
        return running, {"status": "ok" if running else "stopping", "runs": self.runs,
                         "running_now": self._child is not None,
                         "next_run": format_iso(job.next_run_time if job else None, "seconds")}

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
