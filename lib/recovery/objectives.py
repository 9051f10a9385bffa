"""Recovery objectives measured on a run: the window, RPO, restore time and bytes, and the limits on them.

``recovery_of`` builds the ``recovery`` block of a database's report; ``limit_findings``
judges it against ``max-restore-time`` (kind ``restore_time``, an error: the restore took
longer than the recovery time objective allows) and ``min-window`` (kind ``window``, a
warning: the bucket cannot reach back that far, e.g. retention ran too early).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lib.recovery.window import RecoveryWindow
from lib.report.model import Finding, error, warning
from lib.units import format_duration, format_iso


@dataclass(frozen=True)
class Limits:
    """Per-database limits from restorable.yml; None means "not set"."""

    max_restore_seconds: float | None = None
    min_window_seconds: float | None = None

    @classmethod
    def of(cls, db_settings) -> "Limits":
        return cls(getattr(db_settings, "max_restore_seconds", None), getattr(db_settings, "min_window_seconds", None))


def recovery_of(window: RecoveryWindow, now: datetime, restore_seconds: float | None, restore_bytes: int | None,
                newest_row: datetime | None = None) -> dict[str, Any]:
    """The ``recovery`` report block.

    ``rpo_seconds`` is the age of the newest row of the freshness query when there is one
    (the data itself), else of the newest restore point; ``restore_seconds`` and
    ``restore_bytes`` are this run's download-and-apply time and bytes downloaded.
    """
    basis, newest = ("freshness query", newest_row) if newest_row is not None else ("newest restore point",
                                                                                     window.latest)
    return {
        "earliest": format_iso(window.earliest),
        "latest": format_iso(window.latest),
        "window_seconds": round(window.seconds, 3),
        "rpo_seconds": None if newest is None else round(max(0.0, (now - newest).total_seconds()), 3),
        "rpo_from": basis if newest is not None else None,
        "restore_seconds": None if restore_seconds is None else round(restore_seconds, 3),
        "restore_bytes": restore_bytes,
        "spans": [s.to_json() for s in window.spans],
    }


def limit_findings(window: RecoveryWindow, restore_seconds: float | None, limits: Limits,
                   now: datetime) -> list[Finding]:
    """Findings for the limits that are set and exceeded (pure)."""
    findings = []
    if limits.max_restore_seconds is not None and restore_seconds is not None \
            and restore_seconds > limits.max_restore_seconds:
        findings.append(error("restore_time", f"restoring took {format_duration(restore_seconds)}, longer than "
                              f"max-restore-time {format_duration(limits.max_restore_seconds)}: a restore after "
                              "an incident would take as long; raise the limit or restore from a faster place "
                              "(region, provider, smaller database)"))
    if limits.min_window_seconds is not None and window.earliest is not None:
        reach = (now - window.earliest).total_seconds()
        if reach < limits.min_window_seconds:
            findings.append(warning("window", f"the replica reaches back only {format_duration(max(0, round(reach)))} "
                                    f"(earliest restore point {format_iso(window.earliest)}), less than min-window "
                                    f"{format_duration(limits.min_window_seconds)}: Litestream's retention (or "
                                    "restorable's enforce-retention) keeps less, or backups started recently"))
    return findings


def newest_row(path: Path, freshness) -> datetime | None:
    """The freshness query's timestamp on the restored copy, or None when it gives none."""
    import sqlite3

    from lib.checks.freshness import to_datetime
    from lib.checks.integrity import open_readonly
    from lib.checks.probes import query_user_sql

    if freshness is None:
        return None
    try:
        with open_readonly(path) as sdb:
            row = query_user_sql(sdb, freshness.sql)
    except sqlite3.Error:
        return None  # the freshness check reports the failure
    return to_datetime(row[0]) if row else None


def assess(result, state, db_settings, now: datetime, restored_path: Path | None) -> None:
    """Fill ``result.extra["recovery"]`` and add the limit findings; the run's hook."""
    from lib.recovery.window import window_of

    window = window_of(state)
    restore_seconds = result.timings.get("restore")
    row_time = newest_row(restored_path, getattr(db_settings, "freshness", None)) if restored_path else None
    result.extra["recovery"] = recovery_of(window, now, restore_seconds, result.extra.get("bytes_downloaded"),
                                           row_time)
    if restored_path is not None:
        result.findings.extend(limit_findings(window, restore_seconds, Limits.of(db_settings), now))
