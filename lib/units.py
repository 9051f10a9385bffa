"""How durations, sizes and times are written and read: Go durations with days, byte sizes, ISO 8601 times."""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone

from lib.errors import ConfigError

# Seconds per unit. Go's units (time.ParseDuration) plus "d", which Go lacks.
UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"

_COMPONENT = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h|d)")

_BARE_NUMBER = re.compile(rf"{_NUMBER}")

_EXAMPLE = "use a duration such as 90s, 15m, 1h30m or 7d"

# format_duration writes these units, largest first.
_FORMAT_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(text: str | int | float, key: str) -> float:
    """Parse a duration into seconds.

    Accepts Go durations (``500ms``, ``1h30m``, ``24h``), the extra unit ``d`` (``7d``),
    and bare numbers meaning seconds (``90``, ``1.5``). Negative durations are rejected:
    no setting here has a meaning for them.

    :param key: the config key or variable the value came from, named in the error.
    :raises ConfigError: the text is not a duration; the message names ``key``.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ConfigError(f"{key}: expected a duration, got {_describe(text)}; {_EXAMPLE}")
    if isinstance(text, (int, float)):
        return _check_finite(float(text), text, key)
    stripped = text.strip()
    if _BARE_NUMBER.fullmatch(stripped):
        return _check_finite(float(stripped), text, key)
    if stripped.startswith("-"):
        raise ConfigError(f"{key}: duration {text!r} is negative; {_EXAMPLE}")
    total = _sum_components(stripped.lstrip("+"))
    if total is None:
        raise ConfigError(f"{key}: invalid duration {text!r}; {_EXAMPLE}")
    return _check_finite(total, text, key)


def _sum_components(text: str) -> float | None:
    """Sum ``<number><unit>`` components covering all of ``text``; None if they don't."""
    if not text:
        return None
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _COMPONENT.match(text, pos)
        if match is None:
            return None
        total += float(match.group(1)) * UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total


def _check_finite(seconds: float, original: object, key: str) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{key}: invalid duration {original!r}; {_EXAMPLE}")
    return seconds


def _describe(value: object) -> str:
    return f"a {type(value).__name__}" if value is not None else "nothing"


def format_duration(seconds: float) -> str:
    """Render seconds compactly: ``90s``, ``2h``, ``1d2h``, ``250ms``.

    Whole seconds are split greedily into days, hours, minutes and seconds, zero parts
    dropped, except that anything under two minutes that is not a whole minute stays in
    seconds (``90s`` reads better than ``1m30s``). A fractional second is appended as
    whole milliseconds. ``parse_duration`` reads every output back to the same value
    (to the millisecond).
    """
    if seconds < 0:
        return "-" + format_duration(-seconds)
    whole = int(seconds)
    millis = round((seconds - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    text = _format_whole(whole) if whole or not millis else ""
    if millis:
        text += f"{millis}ms"
    return text


def _format_whole(whole: int) -> str:
    """``whole`` seconds as ``1d2h3m4s``; ``0s`` for zero, seconds only below 2m."""
    if whole == 0:
        return "0s"
    if whole < 120 and whole % 60:
        return f"{whole}s"
    parts = []
    for unit, size in _FORMAT_UNITS:
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# --------------------------------------------------------------------------- sizes

_BYTE_UNITS = ("KiB", "MiB", "GiB")


def format_bytes(size: int) -> str:
    """A size for people: ``1,023 bytes``, ``1.5 KiB``, ``12.0 MiB``, ``1,536.0 GiB`` (GiB is the largest unit)."""
    if size < 1024:
        return f"{size:,} bytes"
    value = float(size)
    for unit in _BYTE_UNITS:
        value /= 1024
        if value < 1024 or unit == _BYTE_UNITS[-1]:
            break
    return f"{value:,.1f} {unit}"


def format_bytes_exact(size: int) -> str:
    """:func:`format_bytes` followed by the exact count when it was rounded: ``3.0 MiB (3,145,728 bytes)``."""
    rounded = format_bytes(size)
    return rounded if size < 1024 else f"{rounded} ({size:,} bytes)"

# --------------------------------------------------------------------------- times


def format_iso(moment: datetime | None, timespec: str = "milliseconds") -> str | None:
    """``moment`` in UTC as ISO 8601 with a ``Z`` suffix (``2026-12-03T14:26:08.123Z``); None stays None.

    A naive ``moment`` is taken as local time (``datetime.astimezone``'s rule); every
    time restorable builds is aware.
    """
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 time as an aware UTC datetime; a time without an offset is UTC.

    Accepts what :func:`format_iso` writes, ``+hh:mm`` offsets and a space instead of ``T``
    (SQLite's ``datetime()`` output).

    :raises ValueError: ``text`` is not such a time.
    """
    cleaned = text.strip().replace(" ", "T", 1)
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    moment = datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
