"""The job's memory between runs: one JSON document per database per run, in the bucket.

Serverless runs keep nothing on disk, so each run writes what it found next to the
replica and the next run reads it back. That powers "email on change only", row-count
drift against the last good run, and "last verified good" for retention.

Where (``locate``):

* S3 replica with path ``P``: the same bucket, keys under ``P.restorable/history/``
  (``.restorable/history/`` when the replica sits at the bucket root). Litestream v0.3
  only touches ``P/generations/`` and v0.5 only ``P/<4 hex digits>/``, so a *sibling*
  of ``P`` is never listed, compacted or deleted by Litestream.
* file replica in directory ``D``: a sibling directory ``D.restorable/history/``
  (Litestream owns ``D/generations/`` and ``D/ltx/``).
* ``RESTORABLE_HISTORY_PREFIX`` overrides the root: an S3 key prefix in the replica's
  bucket, or for a file replica a directory (relative paths are taken from the replica
  directory's parent). A root inside the replica path is refused (``ConfigError``).

Below the root each database/replica pair has its own folder::

    <root><db-slug>/<replica-slug>/latest.json           small summary, rewritten each run
    <root><db-slug>/<replica-slug>/runs/<UTC stamp>-<status>.json   one per run, pruned

``latest.json`` (schema 1) holds ``status``, ``status_since``, ``checked_at``, ``kinds``,
``alerted`` (``good``/``bad``: what the alert recipients were last told), ``last_good``
(``at``, ``generation``, ``position``, ``format``, ``tables``, ``last_backup_at`` of the
newest ok/warning run, carried forward through bad runs), ``drills`` (the last drill of
each kind, ``lib.recovery.rotation``) and ``report_key``. A run
document is the same plus ``result``, the database's full report JSON.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from lib.config.model import DbConfig, ReplicaConfig
from lib.config.parsing import ENV_FALSE_WORDS, positive_int
from lib.errors import ConfigError, ObjectNotFound
from lib.recovery.rotation import carried_drills
from lib.report.model import OK, WARN, DbResult
from lib.storage.base import ObjectStore, read_all
from lib.storage.local import LocalStore
from lib.units import format_iso, parse_iso

log = logging.getLogger(__name__)


SCHEMA = 1

DEFAULT_KEEP_DAYS = 30

DEFAULT_KEEP_COUNT = 500

GOOD_STATUSES = (OK, WARN)

_STAMP_FORMAT = "%Y%m%dT%H%M%S"

_RUN_KEY_RE = re.compile(r"^(?P<stamp>\d{8}T\d{6})(?:\.(?P<ms>\d{3}))?Z-[a-z]+\.json$")

# Directories Litestream itself manages directly below a replica path (v0.3 and v0.5).
_LITESTREAM_DIR_RE = re.compile(r"^(generations|ltx|[0-9a-f]{4})$")


@dataclass(frozen=True)
class HistoryLocation:
    """Where one database/replica pair keeps its history: a store and a key prefix ending in ``/``."""

    store: ObjectStore
    prefix: str

    @property
    def latest_key(self) -> str:
        return self.prefix + "latest.json"

    @property
    def runs_prefix(self) -> str:
        return self.prefix + "runs/"

    def describe(self) -> str:
        return f"{self.store.description}/{self.prefix}"


@dataclass(frozen=True)
class HistorySettings:
    """History knobs from the environment."""

    enabled: bool = True
    prefix: str | None = None  # RESTORABLE_HISTORY_PREFIX; None means beside the replica
    keep_days: int = DEFAULT_KEEP_DAYS
    keep_count: int = DEFAULT_KEEP_COUNT

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "HistorySettings":
        """``RESTORABLE_HISTORY`` (``off`` disables), ``RESTORABLE_HISTORY_PREFIX``,
        ``RESTORABLE_HISTORY_KEEP_DAYS`` (30), ``RESTORABLE_HISTORY_KEEP`` (500)."""
        enabled = (environ.get("RESTORABLE_HISTORY") or "on").strip().lower() not in ENV_FALSE_WORDS
        prefix = (environ.get("RESTORABLE_HISTORY_PREFIX") or "").strip() or None
        return cls(
            enabled=enabled,
            prefix=prefix,
            keep_days=positive_int(environ, "RESTORABLE_HISTORY_KEEP_DAYS", DEFAULT_KEEP_DAYS),
            keep_count=positive_int(environ, "RESTORABLE_HISTORY_KEEP", DEFAULT_KEEP_COUNT),
        )


# --------------------------------------------------------------------------- where


def slug(value: str) -> str:
    """A key-safe folder name: ``/data/app.db`` -> ``data_app.db``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", value.strip("/")).strip("._") or "default"
    return cleaned[:120]


def locate(db: DbConfig, replica: ReplicaConfig, settings: HistorySettings) -> HistoryLocation:
    """The history folder for one database on one replica (see the module docstring)."""
    target = f"{slug(db.path)}/{slug(replica.name or replica.type)}/"
    if replica.type == "file":
        return HistoryLocation(_file_history_store(replica, settings.prefix), "history/" + target)
    return HistoryLocation(replica.open_store(), _s3_history_root(replica, settings.prefix) + target)


def _s3_history_root(replica: ReplicaConfig, configured: str | None) -> str:
    base = replica.path.strip("/")
    if configured is None:
        return f"{base}.restorable/history/" if base not in ("", ".") else ".restorable/history/"
    root = configured.strip("/") + "/"
    inside = root.startswith(base + "/") if base not in ("", ".") else _LITESTREAM_DIR_RE.match(root.split("/")[0])
    if inside or root == "/":
        raise ConfigError(
            f"RESTORABLE_HISTORY_PREFIX={configured!r} is inside the replica path {replica.describe()}, "
            "where Litestream manages and deletes objects; choose a prefix beside it, e.g. "
            f"{(base or 'replica')}.restorable/history/"
        )
    return root


def _file_history_store(replica: ReplicaConfig, configured: str | None) -> LocalStore:
    """The history store of a file replica; the replica must be a directory that exists, so
    that a path naming a file, a device or nothing never gets a history folder beside it."""
    replica_dir = Path(replica.path.rstrip("/") or "/")
    if not replica_dir.is_dir():
        raise ConfigError(f"no history for {replica.describe()}: {replica_dir} is not a directory")
    if configured is None:
        if not replica_dir.name:
            raise ConfigError(f"no history for {replica.describe()}: nothing can sit beside {replica_dir}; "
                              "set RESTORABLE_HISTORY_PREFIX to a directory")
        return LocalStore(replica_dir.with_name(replica_dir.name + ".restorable"))
    root = Path(configured)
    root = root if root.is_absolute() else replica_dir.parent / root
    if root.resolve() == replica_dir.resolve() or root.resolve().is_relative_to(replica_dir.resolve()):
        raise ConfigError(
            f"RESTORABLE_HISTORY_PREFIX={configured!r} is inside the replica directory {replica_dir}, "
            f"which Litestream manages; choose a sibling such as {replica_dir}.restorable"
        )
    return LocalStore(root)

# --------------------------------------------------------------------------- read


def read_latest(location: HistoryLocation) -> dict[str, Any] | None:
    """The ``latest.json`` document, or None when there is none yet.

    Raises ``StorageError`` when the store can't be read and ``ValueError`` when the
    document is not a JSON object; callers treat both as "no memory" and say so.
    """
    try:
        raw = read_all(location.store, location.latest_key)
    except ObjectNotFound:
        return None
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"{location.latest_key} is not a JSON object")
    return doc


@dataclass(frozen=True)
class GoodRun:
    """The newest run that verified the backup (status ok or warning)."""

    at: datetime
    format: str | None
    generation: str | None
    position: str | None
    last_backup_at: str | None
    tables: dict[str, int]


def last_good(store: ObjectStore, prefix: str) -> GoodRun | None:
    """The last verified-good run recorded under ``prefix`` (a ``HistoryLocation.prefix``).

    For retention: never delete what this names. Returns None when there is no history,
    no good run yet, or the history can't be read (the caller must then keep everything
    it cannot prove is unneeded).
    """
    try:
        doc = read_latest(HistoryLocation(store, prefix))
    except Exception as exc:  # unreadable history means "unknown", never a crash
        log.warning("cannot read history %s: %s", prefix, exc, extra={"stage": "history"})
        return None
    good = (doc or {}).get("last_good")
    if not isinstance(good, dict) or not good.get("at"):
        return None
    return GoodRun(
        at=parse_iso(good["at"]),
        format=good.get("format"),
        generation=good.get("generation"),
        position=good.get("position"),
        last_backup_at=good.get("last_backup_at"),
        tables=dict(good.get("tables") or {}),
    )

# --------------------------------------------------------------------------- write


def build_latest(
    previous: dict[str, Any] | None,
    db: DbConfig,
    replica: ReplicaConfig,
    result: DbResult,
    checked_at: datetime,
    alerted: str,
    job: str,
) -> dict[str, Any]:
    """The new ``latest.json`` document for ``result``, carrying ``last_good`` forward."""
    status = result.status
    previous = previous or {}
    same = previous.get("status") == status and previous.get("status_since")
    last_good = previous.get("last_good") if isinstance(previous.get("last_good"), dict) else None
    if status in GOOD_STATUSES:
        last_good = {
            "at": format_iso(checked_at),
            "format": result.format,
            "generation": result.generation,
            "position": result.position,
            "last_backup_at": format_iso(result.last_backup_at),
            "tables": dict(result.tables),
        }
    return {
        "schema": SCHEMA,
        "job": job,
        "db": db.path,
        "replica": replica.describe(),
        "checked_at": format_iso(checked_at),
        "status": status,
        "status_since": previous["status_since"] if same else format_iso(checked_at),
        "kinds": sorted({f.kind for f in result.findings}),
        "alerted": alerted,
        "last_good": last_good,
        "drills": carried_drills(previous.get("drills"), result.extra.get("drill")),
    }


def run_key(location: HistoryLocation, checked_at: datetime, status: str) -> str:
    stamp = checked_at.astimezone(timezone.utc).strftime(_STAMP_FORMAT)
    millis = checked_at.astimezone(timezone.utc).microsecond // 1000
    return f"{location.runs_prefix}{stamp}.{millis:03d}Z-{status}.json"


def write(location: HistoryLocation, latest: dict[str, Any], result_json: dict[str, Any],
          checked_at: datetime) -> str:
    """Store the run document, then point ``latest.json`` at it; returns the run key.

    Raises ``StorageError`` (e.g. read-only credentials); nothing is half-written that
    a later read would misread, because ``latest.json`` is written last.
    """
    key = run_key(location, checked_at, latest["status"])
    latest = {**latest, "report_key": key}
    location.store.put(key, _dumps({**latest, "result": result_json}))
    location.store.put(location.latest_key, _dumps(latest))
    return key


def _dumps(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n").encode()


def prune(location: HistoryLocation, now: datetime, keep_days: int, keep_count: int) -> int:
    """Delete run documents older than ``keep_days`` and beyond the newest ``keep_count``.

    Keys this module did not write are left alone; ``latest.json`` is never touched.
    Returns how many were deleted; failures are logged, not raised.
    """
    runs = []
    for info in location.store.list(location.runs_prefix):
        when = _run_time(PurePosixPath(info.key).name)
        if when is not None:
            runs.append((when, info.key))
    runs.sort(reverse=True)
    cutoff = now - timedelta(days=keep_days)
    # The newest run (just written) is always kept, whatever the clocks say.
    doomed = [key for n, (when, key) in enumerate(runs) if n > 0 and (n >= keep_count or when < cutoff)]
    if not doomed:
        return 0
    failures = location.store.delete(doomed)
    for failure in failures:
        log.debug("could not prune %s: %s", failure.key, failure.error, extra={"stage": "history"})
    return len(doomed) - len(failures)


def _run_time(name: str) -> datetime | None:
    match = _RUN_KEY_RE.match(name)
    if not match:
        return None
    moment = datetime.strptime(match["stamp"], _STAMP_FORMAT).replace(tzinfo=timezone.utc)
    return moment + timedelta(milliseconds=int(match["ms"] or 0))
