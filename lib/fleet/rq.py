"""Distributed mode on RQ (python-rq) and Redis: enqueue one job per target, and wait for their results.

``jobs.verify --enqueue`` puts the (database, replica) targets on the ``restorable``
queue in jobs of up to ``MAX_BATCH`` targets (``batch_size``); ``python -m jobs.worker``
runs them (``lib.fleet.rqjob``), each job in its own work horse process with a hard time
limit of ``--max-runtime``. Every target still gets its own ``DbResult``: the horse
records each one in the job's meta as soon as it is known. With ``--wait`` the enqueuer
collects them from Redis and the run goes on exactly as a local one (retention report,
history, email digest, Sentry, the same JSON and exit code).

* Batches: a job's fork and RQ's bookkeeping cost about as much CPU as verifying a small
  database, so a fleet of small tenants is verified several targets per job; a small run
  keeps one target per job so that every worker gets some (``RESTORABLE_JOB_BATCH`` sets
  the size).
* Dedup: each target is claimed in Redis under the run id (``RESTORABLE_RUN_ID``, else one
  per command) and a hash of the target, naming the job that holds it; a second enqueue
  of a claimed target (a retried cron command with the same run id) enqueues nothing for
  it and waits for that job's result.
* A dead worker: its job's heartbeat stops; the waiter's registry cleanup finds it
  abandoned within ``HEARTBEAT_GRACE_SECONDS`` and RQ runs it once more elsewhere
  (``Retry(max=1)``), which verifies only the targets the first horse had not finished.
  A target without a result when its job failed again, timed out or was lost is reported
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
from lib.fleet import memory
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

ENV_BATCH = "RESTORABLE_JOB_BATCH"

# Targets per job at most: enough to spread a job's fork and RQ bookkeeping (~0.06 s of CPU)
# over several small databases, few enough that a timed-out or retried job redoes little.
MAX_BATCH = 8

MIN_JOBS = 16  # a run keeps at least this many jobs (when it has that many targets): work for every worker


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
    """The target's id in this run: its claim key in Redis, and the job id of a one-target batch."""
    digest = hashlib.sha256(f"{db.path}\0{replica.name}".encode()).hexdigest()[:20]
    return f"restorable-{run}-{digest}"


def batch_size(count: int, configured: int | None = None) -> int:
    """Targets per job for a run of ``count`` targets: ``configured``, else up to ``MAX_BATCH``
    while keeping ``MIN_JOBS`` jobs."""
    if configured:
        return configured
    return max(1, min(MAX_BATCH, count // MIN_JOBS))


def configured_batch(environ: Mapping[str, str]) -> int | None:
    """``$RESTORABLE_JOB_BATCH``, a positive number of targets per job, or None.

    :raises ConfigError: not a positive whole number.
    """
    raw = (environ.get(ENV_BATCH) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{ENV_BATCH}={raw!r}: expected a positive whole number of targets per job, e.g. 8")
    return int(raw)


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
    where: list[tuple[str, int]]  # per target, in target order: (job id, the target's position in that job)


def enqueue(conn: Redis, targets: Sequence[tuple[DbConfig, ReplicaConfig]], base: Mapping[str, Any],
            timeout: float, run: str, batch: int | None = None) -> Enqueued:
    """The targets in jobs of ``batch_size`` on the ``restorable`` queue, each target claimed once per run.

    :raises QueueUnavailable: Redis failed while enqueuing.
    """
    queue = Queue(QUEUE_NAME, connection=conn)
    size = batch_size(len(targets), batch)
    where: list[tuple[str, int]] = []
    jobs = 0
    try:
        for start in range(0, len(targets), size):
            chunk = targets[start:start + size]
            ids = [job_id(run, db, replica) for db, replica in chunk]
            jid = ids[0] if len(ids) == 1 else \
                f"restorable-{run}-b{hashlib.sha256(chr(0).join(ids).encode()).hexdigest()[:20]}"
            claimed = _claim(conn, ids, jid, where)
            if not claimed:
                continue  # this run already enqueued them all: wait for those jobs
            queue.enqueue("lib.fleet.rqjob.verify_batch", {**base, "targets": [
                payload(db, replica, {}) for db, replica in (chunk[i] for i in claimed)]}, job_id=jid,
                job_timeout=max(1, int(timeout)), result_ttl=RESULT_TTL_SECONDS,
                failure_ttl=RESULT_TTL_SECONDS, retry=Retry(max=1),
                description=f"verify {chunk[claimed[0]][0].path}" + (f" and {len(claimed) - 1} more"
                                                                       if len(claimed) > 1 else ""))
            jobs += 1
    except RedisError as exc:
        raise QueueUnavailable(f"Redis failed while enqueuing: {type(exc).__name__}: {exc}") from None
    log.info("enqueued %d job(s) of up to %d target(s) for %d target(s) on queue %s run=%s", jobs, size,
             len(targets), QUEUE_NAME, run)
    return Enqueued(run=run, where=where)


def _claim(conn: Redis, ids: list[str], jid: str, where: list[tuple[str, int]]) -> list[int]:
    """Claim each target of a chunk for job ``jid`` (appending where each one's result will be);
    returns the chunk positions claimed now. A target claimed earlier in the run keeps its job."""
    claimed: list[int] = []
    for index, tid in enumerate(ids):
        key = f"restorable:enqueued:{tid}"
        if conn.set(key, f"{jid} {len(claimed)}", nx=True, ex=RESULT_TTL_SECONDS):
            where.append((jid, len(claimed)))
            claimed.append(index)
            continue
        holder, _, position = (conn.get(key) or b"").decode().partition(" ")
        where.append((holder, int(position)) if position.isdigit() else (tid, 0))  # a claim of a one-target job
    return claimed


def wait(conn: Redis, enqueued: Enqueued, targets: Sequence[tuple[DbConfig, ReplicaConfig]],
         deadline: float | None, fleet_order: bool = False) -> list[DbResult]:
    """Every target's result, in target order, once all jobs ended or ``deadline`` passed."""
    results: dict[int, DbResult] = {}
    pending: dict[str, list[tuple[int, int]]] = {}  # job id -> (target index, position in the job)
    for index, (jid, position) in enumerate(enqueued.where):
        pending.setdefault(jid, []).append((index, position))
    registry = StartedJobRegistry(QUEUE_NAME, connection=conn)
    last_cleanup = 0.0
    seen: dict[str, Job] = {}
    try:
        while pending and (deadline is None or time.monotonic() < deadline):
            if time.monotonic() - last_cleanup >= CLEANUP_SECONDS:
                registry.cleanup()  # abandoned jobs (dead workers) -> retried, or failed
                last_cleanup = time.monotonic()
            _poll(conn, pending, targets, results, seen)
            if pending:
                time.sleep(POLL_SECONDS)
    except RedisError as exc:
        for members in pending.values():
            for i, _ in members:
                db, replica = targets[i]
                results[i] = DbResult(db=db.path, replica=replica.name, findings=[could_not_check(
                    "unreachable", f"Redis ({ENV_REDIS_URL}) became unreachable while waiting for the worker's "
                    f"result for {replica.describe()}: {type(exc).__name__}; not a verdict on the backup")])
        pending = {}
    seen.update(_refetch(conn, list(pending)))  # what the horses recorded up to the deadline
    for jid, members in pending.items():  # the deadline passed
        _cancel(conn, jid)
        recorded, started = _recorded(seen.get(jid))
        for i, position in members:
            db, replica = targets[i]
            if position in recorded:
                results[i] = recorded[position]
                continue
            finding = not_verified(replica) if fleet_order and position not in started else could_not_check(
                "unreachable", f"verification of {replica.describe()} did not finish within the maximum runtime "
                "(RESTORABLE_MAX_RUNTIME); are enough workers running (python -m jobs.worker)?")
            results[i] = DbResult(db=db.path, replica=replica.name, findings=[finding])
    return [results[i] for i in range(len(targets))]


def _refetch(conn: Redis, jids: list[str]) -> dict[str, Job]:
    try:
        return {jid: job for jid, job in zip(jids, Job.fetch_many(jids, connection=conn)) if job is not None}
    except RedisError:  # the last poll's copies will do
        return {}


def _recorded(job: Job | None) -> tuple[dict[int, DbResult], set[int]]:
    """The results a job's horse recorded so far (by position), and the positions it started."""
    meta = (job.meta if job is not None else None) or {}
    done = {int(k): v for k, v in (meta.get("results") or {}).items() if isinstance(v, DbResult)}
    return done, set(meta.get("started") or ())


def _poll(conn: Redis, pending: dict[str, list[tuple[int, int]]], targets, results: dict[int, DbResult],
          seen: dict[str, Job]) -> None:
    jids = list(pending)
    for jid, job in zip(jids, Job.fetch_many(jids, connection=conn)):
        members = pending[jid]
        if job is None:
            _settle(members, targets, results, {}, "its job is gone from Redis (expired or deleted)")
            del pending[jid]
            continue
        seen[jid] = job
        status = job.get_status(refresh=False)
        if status == JobStatus.FINISHED:
            value = job.return_value()
            returned = dict(enumerate(value)) if isinstance(value, list) else {}
            _settle(members, targets, results, returned, "its job returned no result")
            del pending[jid]
        elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            _settle(members, targets, results, _recorded(job)[0], _failure(job, status))
            del pending[jid]


def _settle(members: list[tuple[int, int]], targets, results: dict[int, DbResult], known: dict[int, Any],
            why: str) -> None:
    """Each member's result from ``known`` (by position in its job), else "no result: ``why``"."""
    for i, position in members:
        value = known.get(position)
        db, replica = targets[i]
        results[i] = value if isinstance(value, DbResult) else _lost(db, replica, why)


def _failure(job: Job, status) -> str:
    over = (job.meta or {}).get("memory")
    if over:
        return memory.over_ceiling_message(*over)
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

    :raises ConfigError: no REDIS_URL, a bad RESTORABLE_JOB_BATCH. :raises QueueUnavailable: Redis unreachable.
    """
    targets = [(db, r) for db in config.dbs for r in db.replicas
               if options.replica_name is None or r.name == options.replica_name]
    timeout = max(1.0, (options.deadline or time.monotonic() + 1800) - time.monotonic())
    base = {"config": args.config, "urls": list(args.urls), "settings": args.settings,
            "max_age_seconds": options.max_age_seconds, "allow_empty": options.allow_empty,
            "target": options.target, "price_per_gb_month": options.price_per_gb_month, "timeout": timeout,
            "write_history": not args.wait, "drill": getattr(args, "drill", None),
            "cross_check": bool(getattr(args, "cross_check", False))}
    batch = configured_batch(environ)
    conn = connect(environ)
    enqueued = enqueue(conn, targets, base, timeout, run_id(environ), batch)
    if not args.wait:
        print(f"enqueued {len(targets)} target(s) on queue {QUEUE_NAME}, run {enqueued.run}", flush=True)
        return None
    return wait(conn, enqueued, targets, options.deadline, options.fleet_order)
