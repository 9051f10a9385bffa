"""The Litestream 0.5 settings that change what a v0.5 replica should look like, read as 0.5.17 reads them.

Confirmed against ``cmd/litestream/main.go`` (``DefaultConfig``, ``ParseConfig``,
``applyDBSnapshotConfig``, ``Validate``), ``store.go`` and ``compaction_level.go`` of the
0.5 line and the 0.5.17 binary:

* ``snapshot: {interval, retention}``: default 24 h each. A database's own ``snapshot:``
  is not per database: the store has one interval and one retention, so a database's value
  becomes the global one when the top level leaves it unset, and two databases with
  different values make Litestream refuse to start. The replica's ``retention:`` is a 0.3
  key that 0.5 ignores.
* ``retention: {enabled: false}``: Litestream deletes nothing (cloud lifecycle rules must).
* ``l0-retention`` (default 5 m; 0 keeps L0 files only until compacted),
  ``l0-retention-check-interval`` (default 15 s).
* ``levels: [{interval}]``: L1, L2, ... (default 30 s, 5 m, 1 h); L0 is implicit and the
  snapshot level is 9.
* informational keys shown by ``--print-config``: ``validation.interval``,
  ``heartbeat-url`` (a secret: ping URLs carry a token), ``heartbeat-interval``,
  ``auto-recover`` (top level or replica), ``restore-if-db-not-exists`` (database).

A v0.3 app's config may hold none of these; the defaults then describe what 0.5.17 would
do, and they only matter for replicas found in the v0.5 layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from lib.config.environment import _Context, _join
from lib.units import format_duration

DEFAULT_SNAPSHOT_INTERVAL = 24 * 3600.0

DEFAULT_SNAPSHOT_RETENTION = 24 * 3600.0

DEFAULT_L0_RETENTION = 5 * 60.0

DEFAULT_L0_RETENTION_CHECK_INTERVAL = 15.0

DEFAULT_LEVEL_INTERVALS = (30.0, 300.0, 3600.0)  # L1, L2, L3

SNAPSHOT_LEVEL = 9

DEFAULT_ORIGIN = "default (Litestream 0.5.17)"


@dataclass(frozen=True)
class V5Settings:
    """What Litestream 0.5 does with one database's backups; every field has an origin.

    ``level_intervals[i]`` is the compaction interval of level ``i + 1``.
    """

    snapshot_interval: float = DEFAULT_SNAPSHOT_INTERVAL
    snapshot_retention: float = DEFAULT_SNAPSHOT_RETENTION
    retention_enabled: bool = True
    l0_retention: float = DEFAULT_L0_RETENTION
    l0_retention_check_interval: float = DEFAULT_L0_RETENTION_CHECK_INTERVAL
    level_intervals: tuple[float, ...] = DEFAULT_LEVEL_INTERVALS
    validation_interval: float | None = None
    heartbeat_url: str | None = field(default=None, repr=False)
    heartbeat_interval: float | None = None
    auto_recover: bool = False
    restore_if_db_not_exists: bool = False
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def origin(self, name: str) -> str:
        return dict(self.origins).get(name, DEFAULT_ORIGIN)

    def level_interval(self, level: int) -> float | None:
        """The compaction interval of ``level`` (1..), None for L0, the snapshot level or an unknown one."""
        if 1 <= level <= len(self.level_intervals):
            return self.level_intervals[level - 1]
        return None

    def secrets(self) -> list[str]:
        return [self.heartbeat_url] if self.heartbeat_url else []

    def shown(self) -> dict[str, dict[str, Any]]:
        """Every setting as ``{"value": ..., "from": ...}`` in file syntax, secrets masked."""
        def duration(seconds: float | None) -> str | None:
            return None if seconds is None else format_duration(seconds)

        values = {
            "snapshot.interval": ("snapshot_interval", duration(self.snapshot_interval)),
            "snapshot.retention": ("snapshot_retention", duration(self.snapshot_retention)),
            "retention.enabled": ("retention_enabled", self.retention_enabled),
            "l0-retention": ("l0_retention", duration(self.l0_retention)),
            "l0-retention-check-interval": ("l0_retention_check_interval",
                                            duration(self.l0_retention_check_interval)),
            "levels": ("level_intervals", [{"interval": duration(v)} for v in self.level_intervals]),
            "validation.interval": ("validation_interval", duration(self.validation_interval)),
            "heartbeat-url": ("heartbeat_url", "****" if self.heartbeat_url else None),
            "heartbeat-interval": ("heartbeat_interval", duration(self.heartbeat_interval)),
            "auto-recover": ("auto_recover", self.auto_recover),
            "restore-if-db-not-exists": ("restore_if_db_not_exists", self.restore_if_db_not_exists),
        }
        return {key: {"value": value, "from": self.origin(attr)} for key, (attr, value) in values.items()}


def read_v5_settings(top: Mapping, db_index: int, ctx: _Context) -> V5Settings:
    """The 0.5 settings that apply to database ``dbs[db_index]`` of the document ``top``.

    :raises ConfigError: a value Litestream 0.5.17 refuses (a zero or negative interval,
        two databases with different ``snapshot:`` values), naming the key.
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}

    def put(attr: str, value: Any, origin: str) -> None:
        if value is not None:
            values[attr], origins[attr] = value, origin

    raw_dbs = top.get("dbs")
    dbs = [db if isinstance(db, dict) else {} for db in raw_dbs] if isinstance(raw_dbs, list) else []
    _read_snapshot(top, dbs, ctx, put)
    retention = _sub(top, "retention", "", ctx)
    put("retention_enabled", ctx.flag(retention, "enabled", "retention"), ctx.where("retention.enabled"))
    put("l0_retention", _positive(top, "l0-retention", "", ctx, allow_zero=True), ctx.where("l0-retention"))
    put("l0_retention_check_interval", _positive(top, "l0-retention-check-interval", "", ctx),
        ctx.where("l0-retention-check-interval"))
    put("level_intervals", _levels(top, ctx), ctx.where("levels"))
    put("validation_interval", _positive(_sub(top, "validation", "", ctx), "interval", "validation", ctx),
        ctx.where("validation.interval"))
    put("heartbeat_url", ctx.text(top, "heartbeat-url", ""), ctx.where("heartbeat-url"))
    put("heartbeat_interval", _positive(top, "heartbeat-interval", "", ctx), ctx.where("heartbeat-interval"))
    db = dbs[db_index] if db_index < len(dbs) else {}
    db_key = f"dbs[{db_index}]"
    put("restore_if_db_not_exists", ctx.flag(db, "restore-if-db-not-exists", db_key) or None,
        ctx.where(_join(db_key, "restore-if-db-not-exists")))
    put("auto_recover", *_auto_recover(top, db, db_key, ctx))
    return V5Settings(**values, origins=tuple(origins.items()))


def _read_snapshot(top: Mapping, dbs: list, ctx: _Context, put) -> None:
    """``snapshot.interval`` / ``.retention``: the top level's, else the databases' one value."""
    glob = _sub(top, "snapshot", "", ctx)
    for name, attr in (("interval", "snapshot_interval"), ("retention", "snapshot_retention")):
        value = _positive(glob, name, "snapshot", ctx)
        if value is not None:
            put(attr, value, ctx.where(f"snapshot.{name}"))
            continue
        chosen: tuple[float, str] | None = None
        for i, db in enumerate(dbs):
            key = f"dbs[{i}].snapshot"
            found = _positive(_sub(db, "snapshot", f"dbs[{i}]", ctx), name, key, ctx)
            if found is None:
                continue
            if chosen is not None and chosen[0] != found:
                raise ctx.fail(f"{key}.{name}", f"is {format_duration(found)} but {chosen[1]} is "
                               f"{format_duration(chosen[0])}; Litestream 0.5 has one snapshot {name} for all "
                               "databases and refuses to start with two: set snapshot: at the top level")
            chosen = (found, f"dbs[{i}].snapshot.{name}")
        if chosen is not None:
            put(attr, chosen[0], f"{ctx.where(chosen[1])} (Litestream applies it to every database)")


def _levels(top: Mapping, ctx: _Context) -> tuple[float, ...] | None:
    raw = top.get("levels")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, list):
        raise ctx.fail("levels", "expected a list of levels such as [{interval: 30s}, {interval: 5m}]")
    intervals = []
    for i, level in enumerate(raw):
        key = f"levels[{i}]"
        interval = _positive(ctx.mapping(level, key), "interval", key, ctx)
        if interval is None:
            raise ctx.fail(f"{key}.interval", "each level needs an interval greater than zero "
                           "(Litestream refuses to start without one)")
        intervals.append(interval)
    return tuple(intervals)


def _auto_recover(top: Mapping, db: Mapping, db_key: str, ctx: _Context) -> tuple[bool | None, str]:
    """``auto-recover``: true on the database's replica, or at the top level (replicas inherit it)."""
    entries = [(f"{db_key}.replica", db.get("replica"))]
    entries += [(f"{db_key}.replicas[{i}]", r) for i, r in enumerate(db.get("replicas") or [])
                if isinstance(db.get("replicas"), list)]
    for key, replica in entries:
        if isinstance(replica, dict):
            value = ctx.flag(replica, "auto-recover", key)
            if value is not None:
                return value, ctx.where(f"{key}.auto-recover")
    return ctx.flag(top, "auto-recover", ""), ctx.where("auto-recover")


def _sub(raw: Mapping, name: str, key: str, ctx: _Context) -> Mapping:
    value = raw.get(name)
    if value is None or value == "":
        return {}
    return ctx.mapping(value, _join(key, name))


def _positive(raw: Mapping, name: str, key: str, ctx: _Context, *, allow_zero: bool = False) -> float | None:
    """A duration that Litestream requires to be > 0 (or >= 0 with ``allow_zero``)."""
    value = ctx.duration(raw, name, key)
    if value is None:
        return None
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise ctx.fail(_join(key, name), f"must be {bound} (Litestream 0.5 refuses to start otherwise)")
    return value


def strip_sqlite_prefix(path: str) -> str:
    """``path`` without a ``sqlite3://`` or ``sqlite://`` prefix (0.5's ``StripSQLitePrefix``).

    ``sqlite:///data/app.db`` is ``/data/app.db``; ``sqlite://data/app.db`` is the relative
    ``data/app.db``. Litestream 0.3.13 does not strip it (its path becomes a directory
    named ``sqlite:`` under the working directory), but the database meant is the same.
    """
    for prefix in ("sqlite3://", "sqlite://"):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path
