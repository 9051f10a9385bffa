"""Objects inside v0.3 generations that no Litestream release writes, and so no restore reads."""
from __future__ import annotations

from lib.litestream.v3.layout import GENERATION_RE, V3State
from lib.report.model import Finding, warning


def unknown_objects(state: V3State) -> list[Finding]:
    """One warning naming how many objects sit in generation folders without a name Litestream reads.

    Litestream 0.3.13 lists ``snapshots/`` and ``wal/`` with fixed patterns and skips anything
    else without a word: WAL segments in the unreleased nested ``wal/IIIIIIII/OOOOOOOO`` layout
    (v0.4 development builds), 16-digit names, stray copies. Their content is in no restore,
    so a generation that holds them restores to less than it seems to hold.
    """
    unknown = [key for key in state.ignored if _in_generation(key[len(state.prefix):])]
    if not unknown:
        return []
    return [warning(
        "unknown_objects",
        f"{len(unknown)} object(s) in generation folders have names no Litestream release writes, e.g. "
        f"{unknown[0]}: litestream restore skips them and so does restorable, so whatever they hold is not "
        "in this restore (written by a development build of Litestream, or copied there by hand?)",
        unknown[0])]


def _in_generation(rest: str) -> bool:
    parts = rest.split("/")
    # `*.tmp`: Litestream's file client writes each object there and renames it when complete
    if rest.endswith(".tmp"):
        return False
    return len(parts) >= 3 and bool(GENERATION_RE.match(parts[0])) and parts[1] in ("snapshots", "wal")
