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
import sys
from pathlib import Path
from typing import Mapping, Sequence

from lib import cli
from lib.config.settings_model import DEFAULT_MAX_RUNTIME, ENV_SCHEDULE
from lib.errors import ConfigError
from lib.report.logs import setup_logging
from lib.schedule.runner import (
    DEFAULT_STOP_GRACE,
    KILL_MARGIN_SECONDS,
    MAX_RUNTIME_VAR,
    STOP_GRACE_VAR,
    Worker,
    WorkerOptions,
)
from lib.schedule.trigger import SCHEDULE_SECONDS_VAR, build_trigger
from lib.units import format_duration, parse_duration

log = logging.getLogger("jobs.schedule")  # not __name__: that is "__main__" under -m


EPILOG = """exit codes:
  0    stopped by SIGTERM or SIGINT (failed verifications never stop the worker)
  3    usage or config error (VERIFY_SCHEDULE, durations, arguments)
  4    unexpected internal error"""

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


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Start the worker; returns 0 after SIGTERM/SIGINT, 3 on a config error, 4 on a bug."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv

    def body() -> int:
        setup_logging(environ, secrets=[])
        options = load_options(argv, environ)
        if environ.get(SCHEDULE_SECONDS_VAR):
            log.warning("%s is set: runs every few seconds instead of %s; for tests only",
                        SCHEDULE_SECONDS_VAR, ENV_SCHEDULE)
        return Worker(options, environ).serve()

    return cli.guarded(body, environ=environ)


if __name__ == "__main__":
    sys.exit(main())
