"""Archived tenants: a tenant idle for longer than ``RESTORABLE_ARCHIVE_AFTER`` is a warning, not stale forever.

In a ``dir:`` fleet a tenant that stopped writing (a customer who left) keeps a replica
that never changes; its backup age grows past ``max-age`` and would alert every run.
With ``RESTORABLE_ARCHIVE_AFTER`` (or ``--archive-after``) set, a tenant whose newest
backup is older than that gets the warning ``archived`` instead of the ``stale`` error.
Everything else about it is still checked (it is restored, integrity, probes).

Off by default. Never applied to ``path:`` databases, and never when every tenant of a
``dir:`` entry would be archived: that is Litestream not running for the folder, which
is exactly what the sentinel database (docs/fleet.md) is there to show.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Mapping, Sequence

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


def apply(pairs: Sequence[tuple[DbConfig, DbResult]], archive_after: float | None,
          now: datetime | None = None) -> None:
    """Turn the ``stale`` error of each long-idle tenant into an ``archived`` warning, in place."""
    if archive_after is None:
        return
    now = now or datetime.now(timezone.utc)
    by_dir: dict[str, list[tuple[DbConfig, DbResult]]] = {}
    for db, result in pairs:
        parent = getattr(db, "parent", None)
        if parent is not None:
            by_dir.setdefault(parent.dir, []).append((db, result))
    for members in by_dir.values():
        idle = [(db, r) for db, r in members if _idle_for(r, now) is not None and _idle_for(r, now) > archive_after]
        if len(idle) == len(members):
            continue  # the whole folder went quiet: Litestream, not the tenants
        for _, result in idle:
            _archive(result, _idle_for(result, now), archive_after)


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
