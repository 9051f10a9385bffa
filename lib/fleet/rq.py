"""Distributed mode on RQ (python-rq) and Redis: enqueue one job per target, and wait for their results.

``jobs.verify --enqueue`` puts one job per (database, replica) on the ``restorable``
queue; ``python -m jobs.worker`` runs them (``lib.fleet.rqjob``), each in its own work
horse process with a hard time limit of ``--max-runtime``. With ``--wait`` the enqueuer
collects the ``DbResult`` of every job from Redis and the run goes on exactly as a local
one (retention report, history, email digest, Sentry, the same JSON and exit code).

* Dedup: a job's id is the run id (``RESTORABLE_RUN_ID``, else one per command) and
  a hash of the target; a second enqueue of the same id (the same target twice, or a
  retried cron command with the same run id) enqueues nothing and waits for the first.
* A dead worker: its job's heartbeat stops; the waiter's registry cleanup finds it
  abandoned within ``HEARTBEAT_GRACE_SECONDS`` and RQ runs it once more elsewhere
  (``Retry(max=1)``). A job that fails again, times out or is lost is reported
  inconclusive (could not tell), never failed.
* Redis unreachable: ``QueueUnavailable`` (exit 2) before anything was enqueued; while
  waiting, every target without a result is inconclusive.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from lib.config.model import DbConfig, ReplicaConfig
from lib.config.urls import redact_url
from lib.errors import ConfigError, StorageError
from lib.fleet.budget import not_verified
from lib.report.model import DbResult, could_not_check

log = logging.getLogger(__name__)

QUEUE_NAME = "restorable"

ENV_REDIS_URL = "REDIS_URL"

ENV_RUN_ID = "RESTORABLE_RUN_ID"

POLL_SECONDS = 0.2  # how often the waiter asks Redis for job states

CLEANUP_SECONDS = 2.0  # how often the waiter looks for abandoned jobs

# A worker's heartbeat for a running job is due every MONITOR_SECONDS; a job whose
# heartbeat is HEARTBEAT_GRACE_SECONDS late counts as abandoned (its worker died).
MONITOR_SECONDS = 5

HEARTBEAT_GRACE_SECONDS = 10

RESULT_TTL_SECONDS = 24 * 3600  # results outlive a waiting run; the bucket history keeps them for good


class QueueUnavailable(StorageError):
    """Redis (REDIS_URL) could not be reached: the run could not tell (exit 2)."""


def connect(environ: Mapping[str, str]) -> Redis:
    """A connection to ``$REDIS_URL``, checked with a PING.

    :raises ConfigError: REDIS_URL unset or not a Redis URL.
    :raises QueueUnavailable: Redis did not answer.
    """
    url = (environ.get(ENV_REDIS_URL) or "").strip()
    if not url:
        raise ConfigError(f"distributed mode needs {ENV_REDIS_URL}, the Redis service's URL "
                          "(e.g. redis://redis.railway.internal:6379, or the ${{Redis.REDIS_URL}} reference on Railway)")
    try:
        conn = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
        conn.ping()
    except ValueError:
        raise ConfigError(f"{ENV_REDIS_URL}={redact_url(url)} is not a Redis URL; expected redis://HOST:PORT "
                          "or rediss://...") from None
    except RedisError as exc:
        raise QueueUnavailable(f"Redis at {redact_url(url)} ({ENV_REDIS_URL}) is unreachable: "
                               f"{type(exc).__name__}; is the Redis service running?") from None
    return conn


def run_id(environ: Mapping[str, str]) -> str:
    return (environ.get(ENV_RUN_ID) or "").strip() or uuid.uuid4().hex[:16]


def job_id(run: str, db: DbConfig, replica: ReplicaConfig) -> str:
    digest = hashlib.sha256(f"{db.path}\0{replica.name}".encode()).hexdigest()[:20]
    return f"restorable-{run}-{digest}"


def payload(db: DbConfig, replica: ReplicaConfig, base: Mapping[str, Any]) -> dict[str, Any]:
    """What a worker needs to verify this target (no secret: the worker has its own environment)."""
    out = {**base, "db": db.path, "replica": replica.name}
    parent = getattr(db, "parent", None)
    if parent is not None:
        out.update(dir=parent.dir, rel=db.written_path or db.path)
        prelisting = getattr(replica, "prelisting", None)
        if prelisting is not None:
            out["objects"] = [(o.key, o.size, o.last_modified.isoformat()) for o in prelisting.objects]
            out["listed_at"] = prelisting.server_now.isoformat()
    return out


@dataclass
class Enqueued:
    run: str
    job_ids: list[str]  # one per target, in target order


def enqueue(conn: Redis, targets: Sequence[tuple[DbConfig, ReplicaConfig]], base: Mapping[str, Any],
            timeout: float, run: str) -> Enqueued:
    """One job per target on the ``restorable`` queue, deduplicated by job id.

    :raises QueueUnavailable: Redis failed while enqueuing.
    """
    queue = Queue(QUEUE_NAME, connection=conn)
    ids: list[str] = []
    fresh = 0
    try:
        for db, replica in targets:
            jid = job_id(run, db, replica)
            ids.append(jid)
            if not conn.set(f"restorable:enqueued:{jid}", 1, nx=True, ex=RESULT_TTL_SECONDS):
                continue  # this run already enqueued it: wait for that job
            queue.enqueue("lib.fleet.rqjob.verify_target", payload(db, replica, base), job_id=jid,
                          job_timeout=max(1, int(timeout)), result_ttl=RESULT_TTL_SECONDS,
                          failure_ttl=RESULT_TTL_SECONDS, retry=Retry(max=1), description=f"verify {db.path}")
            fresh += 1
    except RedisError as exc:
        raise QueueUnavailable(f"Redis failed while enqueuing: {type(exc).__name__}: {exc}") from None
    log.info("enqueued %d job(s) for %d target(s) on queue %s run=%s", fresh, len(ids), QUEUE_NAME, run)
    return Enqueued(run=run, job_ids=ids)


def wait(conn: Redis, enqueued: Enqueued, targets: Sequence[tuple[DbConfig, ReplicaConfig]],
         deadline: float | None, fleet_order: bool = False) -> list[DbResult]:
    """Every target's result, in target order, once all jobs ended or ``deadline`` passed."""
    results: dict[int, DbResult] = {}
    pending = {i: jid for i, jid in enumerate(enqueued.job_ids)}
    registry = StartedJobRegistry(QUEUE_NAME, connection=conn)
    last_cleanup = 0.0
    started: set[int] = set()
    try:
        while pending and (deadline is None or time.monotonic() < deadline):
            if time.monotonic() - last_cleanup >= CLEANUP_SECONDS:
                registry.cleanup()  # abandoned jobs (dead workers) -> retried, or failed
                last_cleanup = time.monotonic()
            _poll(conn, pending, targets, results, started)
            if pending:
                time.sleep(POLL_SECONDS)
    except RedisError as exc:
        for i in pending:
            db, replica = targets[i]
            results[i] = DbResult(db=db.path, replica=replica.name, findings=[could_not_check(
                "unreachable", f"Redis ({ENV_REDIS_URL}) became unreachable while waiting for the worker's result "
                f"for {replica.describe()}: {type(exc).__name__}; not a verdict on the backup")])
        pending = {}
    for i, jid in pending.items():  # the deadline passed
        db, replica = targets[i]
        _cancel(conn, jid)
        finding = not_verified(replica) if fleet_order and i not in started else could_not_check(
            "unreachable", f"verification of {replica.describe()} did not finish within the maximum runtime "
            "(RESTORABLE_MAX_RUNTIME); are enough workers running (python -m jobs.worker)?")
        results[i] = DbResult(db=db.path, replica=replica.name, findings=[finding])
    return [results[i] for i in range(len(targets))]


def _poll(conn: Redis, pending: dict[int, str], targets, results: dict[int, DbResult], started: set[int]) -> None:
    indexes = list(pending)
    jobs = Job.fetch_many([pending[i] for i in indexes], connection=conn)
    for i, job in zip(indexes, jobs):
        db, replica = targets[i]
        if job is None:
            results[i] = _lost(db, replica, "its job is gone from Redis (expired or deleted)")
            del pending[i]
            continue
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED:
            started.add(i)
        elif status == JobStatus.FINISHED:
            value = job.return_value()
            results[i] = value if isinstance(value, DbResult) else _lost(db, replica, "its job returned no result")
            del pending[i]
        elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            results[i] = _lost(db, replica, _failure(job, status))
            del pending[i]


def _failure(job: Job, status) -> str:
    text = ""
    try:
        latest = job.latest_result()
        text = (latest.exc_string or "").strip().splitlines()[-1] if latest and latest.exc_string else ""
    except Exception:  # an unreadable result must not hide the verdict "could not tell"
        pass
    if "Timeout" in text:
        return "its job exceeded the hard time limit (--max-runtime)"
    if "Abandoned" in text:
        return "its worker died during the job, twice (the job was retried once)"
    return f"its job ended {status}" + (f": {text[:200]}" if text else "")


def _lost(db: DbConfig, replica: ReplicaConfig, why: str) -> DbResult:
    return DbResult(db=db.path, replica=replica.name, findings=[could_not_check(
        "worker", f"no result for {replica.describe()}: {why}; not a verdict on the backup")])


def _cancel(conn: Redis, jid: str) -> None:
    try:
        job = Job.fetch(jid, connection=conn)
        if job.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            job.cancel()
    except Exception:  # best effort: the run's report does not depend on it
        log.debug("could not cancel job %s", jid, exc_info=True)


def run(config, options, args, environ: Mapping[str, str]) -> list[DbResult] | None:
    """``jobs.verify --enqueue``: enqueue every target; with ``--wait`` return their results in
    target order (None without ``--wait``: the workers write each target's history).

    :raises ConfigError: no REDIS_URL. :raises QueueUnavailable: Redis unreachable.
    """
    targets = [(db, r) for db in config.dbs for r in db.replicas
               if options.replica_name is None or r.name == options.replica_name]
    timeout = max(1.0, (options.deadline or time.monotonic() + 1800) - time.monotonic())
    base = {"config": args.config, "urls": list(args.urls), "settings": args.settings,
            "max_age_seconds": options.max_age_seconds, "allow_empty": options.allow_empty,
            "target": options.target, "price_per_gb_month": options.price_per_gb_month, "timeout": timeout,
            "write_history": not args.wait, "drill": getattr(args, "drill", None),
            "cross_check": bool(getattr(args, "cross_check", False))}
    conn = connect(environ)
    enqueued = enqueue(conn, targets, base, timeout, run_id(environ))
    if not args.wait:
        print(f"enqueued {len(targets)} target(s) on queue {QUEUE_NAME}, run {enqueued.run}", flush=True)
        return None
    return wait(conn, enqueued, targets, options.deadline, options.fleet_order)
