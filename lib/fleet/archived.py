"""Archived tenants: a tenant idle for longer than ``RESTORABLE_ARCHIVE_AFTER`` is a warning, not stale forever.

In a ``dir:`` fleet a tenant that stopped writing (a customer who left) keeps a replica
that never changes; its backup age grows past ``max-age`` and would alert every run.
With ``RESTORABLE_ARCHIVE_AFTER`` (or ``--archive-after``) set, a tenant whose newest
backup is older than that gets the warning ``archived`` instead of the ``stale`` error.
Everything else about it is still checked (it is restored, integrity, probes).

A restorable.yml block (a tenant's own, a glob's or its folder's, as for any setting)
may set ``archive-after`` for its tenants: a duration replaces the run's value for them,
``off`` keeps them from ever being archived (a sentinel database, or paying customers).

Off by default. Never applied to ``path:`` databases, and never when every tenant of a
``dir:`` entry would be archived: that is Litestream not running for the folder, which
is exactly what the sentinel database (docs/fleet.md) is there to show.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Mapping, Sequence

from lib.config.model import DbConfig
from lib.report.model import ERROR, DbResult, warning
from lib.units import format_duration, parse_duration

ENV_ARCHIVE_AFTER = "RESTORABLE_ARCHIVE_AFTER"

ARCHIVED = "archived"


def archive_after_seconds(flag: str | None, environ: Mapping[str, str]) -> float | None:
    """``--archive-after``, else ``$RESTORABLE_ARCHIVE_AFTER``; None when unset or ``off``.

    :raises ConfigError: not a duration.
    """
    raw = (flag or environ.get(ENV_ARCHIVE_AFTER, "")).strip()
    if not raw or raw.lower() in ("off", "never", "0"):
        return None
    return parse_duration(raw, f"--archive-after / {ENV_ARCHIVE_AFTER}")


def threshold(block: float | None, run: float | None) -> float | None:
    """A tenant's archive-after: its settings block's (0 = off) over the run's; None = never."""
    if block is None:
        return run
    return block or None


def apply(pairs: Sequence[tuple[DbConfig, DbResult]], archive_after: Callable[[DbConfig], float | None],
          now: datetime | None = None) -> None:
    """Turn the ``stale`` error of each long-idle tenant into an ``archived`` warning, in place.

    ``archive_after(db)`` is the tenant's threshold in seconds (None: never archived).
    """
    now = now or datetime.now(timezone.utc)
    by_dir: dict[str, list[tuple[DbConfig, DbResult]]] = {}
    for db, result in pairs:
        parent = getattr(db, "parent", None)
        if parent is not None:
            by_dir.setdefault(parent.dir, []).append((db, result))
    for members in by_dir.values():
        idle = [(r, idle, limit) for db, r in members
                if (limit := archive_after(db)) is not None and (idle := _idle_for(r, now)) is not None
                and idle > limit]
        if len(idle) == len(members):
            continue  # the whole folder went quiet: Litestream, not the tenants
        for result, seconds, limit in idle:
            _archive(result, seconds, limit)


def _idle_for(result: DbResult, now: datetime) -> float | None:
    stale = any(f.kind == "stale" and f.severity == ERROR for f in result.findings)
    if not stale or result.last_backup_at is None:
        return None
    return (now - result.last_backup_at).total_seconds()


def _archive(result: DbResult, idle: float, archive_after: float) -> None:
    kept = [f for f in result.findings if not (f.kind == "stale" and f.severity == ERROR)]
    kept.append(warning(ARCHIVED, f"no new backup for {format_duration(idle)}, longer than archive-after "
                        f"({format_duration(archive_after)}): an archived tenant, not alerted as stale; if it "
                        "should still be written, check its application"))
    result.findings = kept
