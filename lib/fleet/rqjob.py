"""What one RQ job does in a worker's work horse: verify a batch of (database, replica) targets.

The job carries no secret: it names its targets (a database path, or a ``dir:`` entry
and a tenant's relative path, plus the replica's name, and a tenant's prelisted
objects), where the config comes from (``--config`` and replica URLs of the enqueuing
command; the worker's environment supplies the rest, as for any job), and the verify
options. The config and settings are read once per job; the targets are verified one
after the other (a worker is one CPU's worth of work), and each ``DbResult`` is recorded
in the job's meta as soon as it is known, so that a job cut short by its time limit or a
dead worker loses only the target in progress, and RQ's retry verifies only what is
missing. Backup and storage problems are findings; any other exception becomes an
``internal`` could-not-check finding, never a failure verdict. With ``write_history``
(``--enqueue`` without ``--wait``) the worker also writes each target's history, since
no waiting run will.
"""
from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from redis.exceptions import RedisError
from rq import get_current_job

from lib.config import sources
from lib.config.model import Config, DbConfig, ReplicaConfig
from lib.config.settings import load_settings
from lib.errors import ConfigError
from lib.crosscheck.binary import candidates
from lib.crosscheck.run import CrossCheckOptions
from lib.fleet import memory
from lib.fleet import settings as fleet_settings
from lib.fleet.tenants import tenant_of
from lib.litestream.outcome import RestoreTarget
from lib.recovery.step import recovery_options
from lib.report import history
from lib.report.advice import GOOD
from lib.report.model import DbResult, could_not_check
from lib.report.scrub import Scrubber
from lib.scratch import Scratch
from lib.storage.base import ObjectInfo
from lib.verify import VerifyOptions, verify_replica

log = logging.getLogger(__name__)


class HistoryReader:
    """The one part of ``RunNotifier`` that ``verify_replica`` uses: the previous ``latest.json``."""

    def __init__(self, environ: Mapping[str, str]):
        self.settings = history.HistorySettings.from_environ(environ)

    def location(self, db: DbConfig, replica: ReplicaConfig):
        if not self.settings.enabled:
            return None
        try:
            return history.locate(db, replica, self.settings)
        except ConfigError as exc:
            log.warning("no history for db=%s: %s", db.path, exc)
            return None

    def previous(self, db: DbConfig, replica: ReplicaConfig) -> dict[str, Any] | None:
        location = self.location(db, replica)
        if location is None:
            return None
        try:
            return history.read_latest(location)
        except Exception as exc:
            log.warning("history unreadable db=%s: %s", db.path, exc)
            return None


def verify_batch(payload: dict[str, Any]) -> list[DbResult]:
    """The RQ job function (imported by name in the worker): one ``DbResult`` per target, in
    the order of ``payload["targets"]``. Never raises."""
    job = get_current_job()
    meta = job.meta if job is not None else {}
    done: dict[int, DbResult] = dict(meta.get("results") or {})  # a retried job keeps what the first run found
    started: list[int] = list(meta.get("started") or [])
    targets = payload["targets"]
    base = {k: v for k, v in payload.items() if k != "targets"}
    try:
        context = _Context(base, os.environ)
    except Exception as exc:  # a config the worker cannot read: every target inconclusive, named
        return [done.get(i) or _internal({**base, **t}, exc) for i, t in enumerate(targets)]
    ceiling = memory.ceiling_bytes(os.environ)  # jobs.worker refused a bad value at start-up
    current: list[int] = []

    def over_ceiling(rss: int) -> None:  # in the guard's thread, just before the horse exits
        for position in current:
            target = {**base, **targets[position]}
            done[position] = DbResult(db=target.get("db", "?"), replica=target.get("replica", "?"), findings=[
                could_not_check("memory", memory.over_ceiling_message(rss, ceiling) + "; not a verdict on the backup")])
        if job is not None:
            job.meta["memory"] = (rss, ceiling)
        _record(job, done, started)

    with memory.Guard(ceiling, over_ceiling):
        for position, target in enumerate(targets):
            if position in done:
                continue
            started.append(position)
            current[:] = [position]
            _record(job, done, started)
            done[position] = _verify_target(context, {**base, **target})
            current.clear()
            _record(job, done, started)
    return [done[i] for i in range(len(targets))]


class _Context:
    """What every target of one job shares: the config, the settings file, the options, the history."""

    def __init__(self, payload: dict[str, Any], environ: Mapping[str, str]):
        self.environ = environ
        self.config = sources.load_effective(payload.get("urls") or [], payload.get("config"), environ)
        self.settings = load_settings(payload.get("settings"), environ)
        self.options = _options(payload, environ)
        self.reader = HistoryReader(environ)
        self.write_history = bool(payload.get("write_history"))


def _verify_target(context: _Context, payload: dict[str, Any]) -> DbResult:
    log.info("verifying db=%s replica=%s", payload.get("db"), payload.get("replica"))
    try:
        return _verify(context, payload)
    except Exception as exc:  # a bug or a target the worker's config lacks: inconclusive, named
        return _internal(payload, exc)


def _internal(payload: dict[str, Any], exc: Exception) -> DbResult:
    log.error("internal error verifying db=%s: %s: %s", payload.get("db"), type(exc).__name__, exc,
              exc_info=not isinstance(exc, ConfigError))
    return DbResult(db=payload.get("db", "?"), replica=payload.get("replica", "?"), findings=[could_not_check(
        "internal", f"the worker could not verify this target: {type(exc).__name__}: {exc}")])


def _record(job, done: dict[int, DbResult], started: list[int]) -> None:
    """Put the results so far in the job's meta, where the waiting run finds them if the job
    is cut short. Redis failing here loses nothing yet: the job's return value has them all."""
    if job is None:
        return
    job.meta["results"], job.meta["started"] = dict(done), list(started)
    try:
        job.save_meta()
    except RedisError as exc:
        log.warning("could not record progress in Redis: %s", type(exc).__name__)


def _verify(context: _Context, payload: dict[str, Any]) -> DbResult:
    config = context.config
    db, replica = _find_target(config, payload)
    settings, _ = fleet_settings.for_tenants(context.settings, Config(source=config.source, dbs=(db,)))
    options = context.options
    scratch = Scratch(options.scratch_root)
    try:
        result = verify_replica(db, replica, settings.for_db(db.path), options, scratch, context.reader)
    finally:
        scratch.cleanup()
    if context.write_history:
        _write_history(context.reader, db, replica, result, Scrubber.from_environ(context.environ, config.secrets()))
    return result


def _find_target(config: Config, payload: dict[str, Any]) -> tuple[DbConfig, ReplicaConfig]:
    name = payload["replica"]
    if payload.get("dir"):
        template = next((d for d in config.dbs if d.directory is not None and d.directory.dir == payload["dir"]), None)
        if template is None:
            raise ConfigError(f"the worker's config has no dir: {payload['dir']} entry; give the worker the same "
                              "config as the enqueuing service (LITESTREAM_CONFIG)")
        objects = {name: [ObjectInfo(k, s, datetime.fromisoformat(t)) for k, s, t in payload["objects"]]} \
            if payload.get("objects") is not None else None
        server_now = datetime.fromisoformat(payload["listed_at"]) if payload.get("listed_at") else None
        db = tenant_of(template, payload["rel"], objects, server_now)
    else:
        db = next((d for d in config.dbs if d.path == payload["db"] and d.directory is None), None)
        if db is None:
            raise ConfigError(f"the worker's config has no database {payload['db']}; give the worker the same "
                              "config as the enqueuing service (LITESTREAM_CONFIG)")
    replica = next((r for r in db.replicas if r.name == name), None)
    if replica is None:
        raise ConfigError(f"the worker's config has no replica {name!r} for {payload['db']}")
    return db, replica


def _options(payload: dict[str, Any], environ: Mapping[str, str]) -> VerifyOptions:
    scratch = environ.get("RESTORABLE_SCRATCH_DIR")
    return VerifyOptions(
        target=payload.get("target") or RestoreTarget(),
        max_age_seconds=payload.get("max_age_seconds"),
        allow_empty=payload.get("allow_empty"),
        parallel=1,
        deadline=time.monotonic() + float(payload.get("timeout", 1800)),
        scratch_root=Path(scratch) if scratch else None,
        price_per_gb_month=float(payload.get("price_per_gb_month", 0.015)),
        recovery=recovery_options(payload.get("drill"), environ),
        cross_check=CrossCheckOptions(bool(payload.get("cross_check")), tuple(candidates(environ)), None),
    )


def _write_history(reader: HistoryReader, db: DbConfig, replica: ReplicaConfig, result: DbResult,
                   scrubber: Scrubber) -> None:
    location = reader.location(db, replica)
    if location is None:
        return
    previous = reader.previous(db, replica)
    checked_at = datetime.now(timezone.utc)
    alerted = (previous or {}).get("alerted") or GOOD  # no email is sent from a worker
    latest = history.build_latest(previous, db, replica, result, checked_at, alerted, "verify")
    try:
        history.write(location, scrubber.obj(latest), scrubber.obj(result.to_json()), checked_at)
    except Exception as exc:
        log.warning("history not written db=%s: %s", db.path, exc)
