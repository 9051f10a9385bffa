"""Run the distributed verifier's worker: ``python -m jobs.worker`` (RQ on ``$REDIS_URL``).

Takes jobs from the ``restorable`` queue that ``python -m jobs.verify --enqueue`` fills;
each job verifies a batch of (database, replica) targets in its own process, with the hard time
limit the enqueuing run set (its ``--max-runtime``). Needs the same configuration as the
enqueuing service (LITESTREAM_CONFIG or RESTORABLE_REPLICAS, credentials, settings).
Before its first job the worker imports what a job needs and loads botocore's S3 models
(``lib.fleet.preload``), so each forked work horse starts warm. A job whose work horse
grows past ``RESTORABLE_JOB_MEMORY`` (default 512 MiB) stops itself and reports the
target it was verifying as could-not-check (``lib.fleet.memory``).
SIGTERM finishes the current job and stops (RQ's warm shutdown); a second one stops now.
With ``SENTRY_DSN`` a worker that stops on an error sends one event (a job's own problems
reach Sentry through the waiting run, one event per failing database). Exit 0 when stopped (``--burst``: when the queue is empty), 2 when Redis is unreachable,
3 on a configuration error.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping

from rq import Queue, Worker

from lib import cli
from lib.fleet import memory
from lib.fleet import rq as fleet_rq
from lib.fleet.preload import preload
from lib.fleet.serve import WorkerEndpoints
from lib.report.logs import setup_logging
from lib.report.scrub import Scrubber
from lib.report.sentry import SentrySettings, problem_event
from lib.report.sentry_run import SentryRun
from lib.scratch import Scratch


log = logging.getLogger("jobs.worker")


class RestorableWorker(Worker):
    """An RQ worker whose running job's heartbeat lapses soon after the worker dies.

    RQ's default keeps a dead worker's job "started" for 60 s past its last heartbeat;
    the waiting run then needs longer to find the job abandoned and have it retried.
    """

    def get_heartbeat_ttl(self, job) -> int:
        return fleet_rq.MONITOR_SECONDS + fleet_rq.HEARTBEAT_GRACE_SECONDS


def parse_args(argv: list[str] | None):
    parser = cli.Parser(prog="python -m jobs.worker", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--burst", action="store_true", help="stop when the queue is empty (tests, one-off runs)")
    parser.add_argument("--name", help="the worker's name in Redis (default: RQ's, host and pid)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ

    sentry: SentryRun | None = None

    def abort(reason: str) -> None:
        if sentry is not None:
            sentry.capture(problem_event(f"restorable worker stopped: {reason}", level="error",
                                         fingerprint=["restorable", "worker"], tags=sentry.tags()))
            sentry.flush()

    def body() -> int:
        nonlocal sentry
        args = parse_args(argv)
        setup_logging(environ, secrets=[])
        settings = SentrySettings.from_environ(environ, job="worker")
        sentry = SentryRun(settings, Scrubber.from_environ(environ), "worker") if settings else None
        ceiling = memory.ceiling_bytes(environ)  # a bad RESTORABLE_JOB_MEMORY is exit 3 here, not in every job
        conn = fleet_rq.connect(environ)
        worker = RestorableWorker([Queue(fleet_rq.QUEUE_NAME, connection=conn)], connection=conn, name=args.name,
                                  job_monitoring_interval=fleet_rq.MONITOR_SECONDS)
        endpoints = WorkerEndpoints.from_environ(environ, worker)
        if endpoints is not None:
            endpoints.start()
        preload()  # before the work loop: every job's forked work horse inherits the imports
        log.info("each job's memory ceiling: %s (%s)", f"{ceiling >> 20} MiB" if ceiling else "off",
                 memory.ENV_JOB_MEMORY)
        try:
            worker.work(burst=args.burst, logging_level=environ.get("LOG_LEVEL", "INFO").upper())
        finally:
            if endpoints is not None:
                endpoints.stop()
            Scratch.cleanup_all()
        return 0

    cli.tune_process()
    return cli.guarded(body, abort, environ)


if __name__ == "__main__":
    cli.exit_now(main())
