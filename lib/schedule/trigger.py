"""The schedule: VERIFY_SCHEDULE (a crontab, UTC) as an APScheduler trigger, with cron's weekday numbering."""
from __future__ import annotations

import re
from datetime import timezone
from typing import Mapping

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from lib.config.settings_model import DEFAULT_SCHEDULE, ENV_SCHEDULE
from lib.errors import ConfigError
from lib.units import format_duration

# Test-only: run every N seconds instead of VERIFY_SCHEDULE (crontab's finest step is a minute).
SCHEDULE_SECONDS_VAR = "RESTORABLE_SCHEDULE_SECONDS"

# Cron weekday names; cron numbers 0-6 (and 7) start on Sunday, APScheduler 3's on Monday.
CRON_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

_DOW_ITEM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


def build_trigger(environ: Mapping[str, str]) -> tuple[str, CronTrigger | IntervalTrigger]:
    """The trigger for ``VERIFY_SCHEDULE`` (or the test-only seconds override) and its description."""
    expr = (environ.get(ENV_SCHEDULE) or DEFAULT_SCHEDULE).strip()
    trigger = cron_trigger(expr)
    seconds = (environ.get(SCHEDULE_SECONDS_VAR) or "").strip()
    if not seconds:
        return f"{expr} (UTC)", trigger
    try:
        every = float(seconds)
    except ValueError:
        every = 0.0
    if every <= 0:
        raise ConfigError(f"{SCHEDULE_SECONDS_VAR}={seconds!r} must be a number of seconds above 0 (tests only)")
    return f"every {format_duration(every)} ({SCHEDULE_SECONDS_VAR}, tests only)", \
        IntervalTrigger(seconds=every, timezone=timezone.utc)


def cron_trigger(expr: str) -> CronTrigger:
    """A CronTrigger in UTC for a five-field crontab, with cron's weekday numbering.

    :raises ConfigError: not five fields, a field APScheduler rejects, or both day fields
        restricted (cron runs when either matches, APScheduler only when both do).
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"{ENV_SCHEDULE}={expr!r} must have five fields (minute hour day month weekday), "
                          "e.g. '0 * * * *' for hourly")
    minute, hour, day, month, weekday = fields
    if day not in ("*", "?") and weekday not in ("*", "?"):
        raise ConfigError(f"{ENV_SCHEDULE}={expr!r} restricts both day of month and day of week; cron runs when "
                          "either matches but APScheduler only when both do, so restrict just one")
    try:
        return CronTrigger(minute=minute, hour=hour, day=day.replace("?", "*"), month=month,
                           day_of_week=cron_weekdays(weekday), timezone=timezone.utc)
    except ValueError as exc:
        raise ConfigError(f"{ENV_SCHEDULE}={expr!r}: {exc}") from None


def cron_weekdays(field: str) -> str:
    """Translate a crontab day-of-week field to APScheduler 3 names: ``1-5`` -> ``mon,tue,wed,thu,fri``.

    Handles what Sentry and Railway accept in practice: ``*``, numbers 0-7 (0 and 7 are
    Sunday), names ``sun``-``sat``, ranges, lists and ``/step``.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.lower().split(","):
        match = _DOW_ITEM.match(item)
        if not match:
            raise ConfigError(f"{ENV_SCHEDULE}: unsupported day of week {field!r}; use 0-7 or sun-sat, "
                              "ranges (1-5), lists (1,3) and steps (*/2)")
        first, _, last = match["range"].partition("-")
        step = int(match["step"] or 1)
        start = 0 if first == "*" else _weekday(first)
        end = 6 if first == "*" or (match["step"] and not last) else _weekday(last) if last else start
        if end < start and end == 0:
            end = 7  # "5-7" or "fri-sun": Friday to Sunday
        if step < 1 or end < start:
            raise ConfigError(f"{ENV_SCHEDULE}: invalid day-of-week item {item!r}")
        days.update(d % 7 for d in range(start, end + 1, step))
    return ",".join(CRON_WEEKDAYS[d] for d in sorted(days))


def _weekday(token: str) -> int:
    """Cron weekday number 0-6 of a name or a number (7 is Sunday, as 0)."""
    if token in CRON_WEEKDAYS:
        return CRON_WEEKDAYS.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ConfigError(f"{ENV_SCHEDULE}: {token!r} is not a day of week (0-7 or sun-sat)")
