"""Checks on a restored database; each returns findings and raises only when it can't run.

The restored file is opened read-only and immutable (``?immutable=1``) so checking it
creates no ``-wal``/``-shm`` files and cannot change it; probes additionally run with
``PRAGMA query_only``.
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import sqlite_utils

from lib.checks.probes import query_user_sql
from lib.report.model import Finding, error, warning
from lib.units import format_duration


def staleness(last_backup_at: datetime | None, now: datetime, max_age: float, what: str = "newest backup object") -> list[Finding]:
    """``stale`` when the newest object is older than ``max_age`` seconds."""
    if last_backup_at is None:
        return []
    age = (now - last_backup_at).total_seconds()
    if age > max_age:
        return [error("stale", f"{what} is {format_duration(age)} old (limit {format_duration(max_age)}): "
                      "is litestream still running and able to write to the bucket?")]
    return []


def freshness(db: sqlite_utils.Database, probe, now: datetime) -> list[Finding]:
    """The freshness query's single timestamp must be younger than its limit."""
    try:
        row = query_user_sql(db, probe.sql)
    except sqlite3.Error as exc:
        return [error("probe", f"freshness query failed to run: {exc}")]
    value = row[0] if row else None
    moment = to_datetime(value)
    if moment is None:
        return [error("stale", f"freshness query returned {value!r}, not a timestamp: no data written yet?")]
    return staleness(moment, now, probe.max_age_seconds, "newest row of the freshness query")


def to_datetime(value) -> datetime | None:
    """Interpret a SQL value as a UTC time: ISO 8601 text, or Unix seconds / milliseconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    if isinstance(value, str):
        text = value.strip().replace(" ", "T", 1)
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return None


def note(message: str) -> Finding:
    return warning("probe", message)
