"""The drill kinds and the memory of the last drill of each kind (``latest.json``'s ``drills``)."""
from __future__ import annotations

from typing import Any

KINDS = ("oldest", "random", "generation")


def carried_drills(previous: Any, drill: dict[str, Any] | None) -> dict[str, Any]:
    """``latest.json``'s ``drills``: the last drill of each kind, with this run's replacing its
    kind's (a skipped drill changes nothing, so the rotation does not stall on it)."""
    drills = {k: v for k, v in previous.items() if k in KINDS and isinstance(v, dict)} \
        if isinstance(previous, dict) else {}
    if drill and drill.get("kind") in KINDS and drill.get("status") != "skipped":
        drills[drill["kind"]] = drill
    return drills
