"""How old the backup is: the newest object's age, and the value of the user's freshness query. Pure.

A time later than now plus ``CLOCK_SKEW_SECONDS`` says nothing about age (a wrong clock in
the writer, the storage or here, or a made-up value): it is a warning that names the
object or the query, and the age is judged on what is left.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Iterable

from lib.report.model import Finding, error, warning
from lib.storage.base import ObjectInfo
from lib.units import format_duration, format_iso, parse_iso

CLOCK_SKEW_SECONDS = 300.0  # clocks of the writer, the storage and this host may disagree by this much

# A number read as a Unix time is taken in the largest unit that puts it before the year
# 5138 (1e11 seconds): now is ~1.8e9 s, ~1.8e12 ms, ~1.8e15 us, ~1.8e18 ns.
_EPOCH_UNITS = ((1e11, 1.0, "s"), (1e14, 1e-3, "ms"), (1e17, 1e-6, "us"), (1e20, 1e-9, "ns"))


def staleness(last_backup_at: datetime | None, now: datetime, max_age: float, what: str = "newest backup object") -> list[Finding]:
    """``stale`` when the newest object is older than ``max_age`` seconds."""
    if last_backup_at is None:
        return []
    age = (now - last_backup_at).total_seconds()
    if age > max_age:
        return [error("stale", f"{what} is {format_duration(age)} old (limit {format_duration(max_age)}): "
                      "is litestream still running and able to write to the bucket?")]
    return []


def backup_age(objects: Iterable[ObjectInfo], now: datetime, max_age: float) -> list[Finding]:
    """The newest object must be younger than ``max_age``; objects dated in the future are
    named in a warning and left out of the age."""
    objects = list(objects)
    limit = now + timedelta(seconds=CLOCK_SKEW_SECONDS)
    future = [o for o in objects if o.last_modified > limit]
    findings = [_future_objects(future, now)] if future else []
    present = max((o.last_modified for o in objects if o.last_modified <= limit), default=None)
    return findings + staleness(present, now, max_age)


def _future_objects(future: list[ObjectInfo], now: datetime) -> Finding:
    newest = max(future, key=lambda o: o.last_modified)
    ahead = format_duration((newest.last_modified - now).total_seconds())
    more = f" (and {len(future) - 1} more)" if len(future) > 1 else ""
    return warning("stale", f"object {newest.key} is dated {format_iso(newest.last_modified, 'seconds')}, {ahead} "
                   f"ahead of this host's clock{more}: its time says nothing about the backup's age, which is "
                   "judged on the other objects; is the clock of the writer or of the storage wrong?", newest.key)


def freshness_value(value: object, now: datetime, max_age: float, sql: str = "") -> list[Finding]:
    """Judge the single value the freshness query returned: a timestamp younger than ``max_age``."""
    query = f"freshness query {sql!r}" if sql else "freshness query"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and to_datetime(value) is None:
        return [error("probe", f"{query} returned {value!r}, which is no Unix time in seconds, milliseconds, "
                      "microseconds or nanoseconds; make it return one, or ISO 8601 text")]
    moment = to_datetime(value)
    if moment is None:
        return [error("stale", f"{query} returned {value!r}, not a timestamp: no data written yet?")]
    if moment > now + timedelta(seconds=CLOCK_SKEW_SECONDS):
        ahead = format_duration((moment - now).total_seconds())
        return [warning("stale", f"{query} returned {value!r} ({format_iso(moment, 'seconds')}), {ahead} ahead of "
                        "this host's clock: it says nothing about the backup's age; does the application write "
                        "future times, or is a clock wrong?")]
    return staleness(moment, now, max_age, "newest row of the freshness query")


def to_datetime(value: object) -> datetime | None:
    """Interpret a SQL value as a UTC time: ISO 8601 text, or a Unix time in s, ms, us or ns
    (the unit told by its size); None for anything else or out of range."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return _from_epoch(value)
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            return None
    return None


def _from_epoch(value: int | float) -> datetime | None:
    if not math.isfinite(value):
        return None
    for bound, scale, _ in _EPOCH_UNITS:
        if abs(value) < bound:
            try:
                return datetime.fromtimestamp(value * scale, tz=timezone.utc)
            except (OverflowError, OSError, ValueError):
                return None
    return None
