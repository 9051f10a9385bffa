"""Rows lost since the last good run: row counts compared with the history."""
from __future__ import annotations

from typing import Any, Collection

from lib.report.history import GOOD_STATUSES
from lib.report.model import Finding, error, warning

# --------------------------------------------------------------------------- drift


def row_count_drift(
    previous: dict[str, Any] | None,
    current_tables: dict[str, int],
    warn_share: float | None,
    error_share: float | None,
    uncounted: Collection[str] = (),
) -> list[Finding]:
    """Findings (kind ``row_count``) for tables that lost more than a share of their rows.

    Compares ``current_tables`` with the tables of the last good run in ``previous`` (a
    ``latest.json`` document; a bare result document with ``tables`` and a good
    ``status`` also works). A table that lost more than ``error_share`` (0..1) of its rows
    is an error, more than ``warn_share`` a warning; None disables that level. A table
    that disappeared is a warning (a migration may drop tables; the expected-tables check
    decides whether that is an error). Tables that were empty, and ``uncounted`` ones
    (virtual tables), are skipped.
    """
    baseline = _baseline(previous)
    if not baseline:
        return []
    since = f" at the last good run ({baseline['at']})" if baseline.get("at") else " at the last good run"
    findings = []
    for table, before in sorted(baseline["tables"].items()):
        if not isinstance(before, int) or before <= 0 or table in uncounted:
            continue
        now = current_tables.get(table)
        if now is None:
            findings.append(warning("row_count", f"table {table} is gone; it had {before} rows{since}", table))
            continue
        lost = (before - now) / before
        finding = _drift_finding(table, before, now, lost, since, warn_share, error_share)
        if finding:
            findings.append(finding)
    return findings


def _baseline(previous: dict[str, Any] | None) -> dict[str, Any] | None:
    if not previous:
        return None
    good = previous.get("last_good")
    if isinstance(good, dict) and isinstance(good.get("tables"), dict):
        return good
    if previous.get("status") in GOOD_STATUSES and isinstance(previous.get("tables"), dict):
        return {"tables": previous["tables"], "at": previous.get("checked_at")}
    return None


def _drift_finding(table: str, before: int, now: int, lost: float, since: str,
                   warn_share: float | None, error_share: float | None) -> Finding | None:
    drop = f"table {table} has {now} rows, {lost:.0%} fewer than the {before}{since}"
    if error_share is not None and lost > error_share:
        return error("row_count", f"{drop}; if the rows were deleted on purpose, delete this database's "
                     "history latest.json to accept the new counts, otherwise restore from an earlier point "
                     "(litestream restore -timestamp)", table)
    if warn_share is not None and lost > warn_share:
        return warning("row_count", f"{drop}; if that was not on purpose, check the application "
                       "(the new count becomes the baseline)", table)
    return None
