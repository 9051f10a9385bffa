"""How old the backup is: the newest object's age, and the value of the user's freshness query. Pure."""
from __future__ import annotations

from datetime import datetime, timezone

from lib.report.model import Finding, error
from lib.units import format_duration, parse_iso


def staleness(last_backup_at: datetime | None, now: datetime, max_age: float, what: str = "newest backup object") -> list[Finding]:
    """``stale`` when the newest object is older than ``max_age`` seconds."""
    if last_backup_at is None:
        return []
    age = (now - last_backup_at).total_seconds()
    if age > max_age:
        return [error("stale", f"{what} is {format_duration(age)} old (limit {format_duration(max_age)}): "
                      "is litestream still running and able to write to the bucket?")]
    return []


def freshness_value(value: object, now: datetime, max_age: float) -> list[Finding]:
    """Judge the single value the freshness query returned: a timestamp younger than ``max_age``."""
    moment = to_datetime(value)
    if moment is None:
        return [error("stale", f"freshness query returned {value!r}, not a timestamp: no data written yet?")]
    return staleness(moment, now, max_age, "newest row of the freshness query")


def to_datetime(value) -> datetime | None:
    """Interpret a SQL value as a UTC time: ISO 8601 text, or Unix seconds / milliseconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            return None
    return None
