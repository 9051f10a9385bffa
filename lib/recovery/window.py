"""The recovery window of a replica: the oldest and newest times a point-in-time restore reaches.

Pure functions of one listing (``ReplicaState``):

* v0.3: per generation, from its oldest snapshot (``litestream restore -timestamp`` needs a
  snapshot at or before the time) to its newest object; a generation without a snapshot
  reaches nothing.
* v0.5: per level, from its oldest to its newest file, with the median gap between files
  as the granularity a restore has there (L0 is one file per sync, L1.. one per compaction
  interval); once Litestream has removed old L0 files, only the coarser levels reach back.
  The whole window starts at the oldest snapshot (L9) or file starting at TXID 1.

Times are what the listing says (v0.5 header times when the state carries them): a file
replica's mtime is Litestream's own timestamp; an S3 ``LastModified`` is the upload time,
a moment after it.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lib.litestream.discover import ReplicaState
from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.units import format_iso


@dataclass(frozen=True)
class Span:
    """One stretch of time a restore can reach: a v0.3 generation or a v0.5 level."""

    label: str  # "generation 1a2b..." | "level 0"
    earliest: datetime
    latest: datetime
    points: int  # restore points (objects) in the stretch
    granularity_seconds: float | None  # median time between points; None with fewer than two

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "earliest": format_iso(self.earliest), "latest": format_iso(self.latest),
                "points": self.points,
                "granularity_seconds": None if self.granularity_seconds is None
                else round(self.granularity_seconds, 3)}


@dataclass(frozen=True)
class RecoveryWindow:
    """The whole window (None when nothing is restorable) and the spans it is made of."""

    earliest: datetime | None
    latest: datetime | None
    spans: tuple[Span, ...] = ()

    @property
    def seconds(self) -> float:
        if self.earliest is None or self.latest is None:
            return 0.0
        return max(0.0, (self.latest - self.earliest).total_seconds())

    def contains(self, moment: datetime) -> bool:
        return any(s.earliest <= moment <= s.latest for s in self.spans)


def window_of(state: ReplicaState) -> RecoveryWindow:
    """The recovery window of one listing (see the module docstring)."""
    if state.format == FORMAT_V3 and state.v3 is not None:
        return _v3_window(state.v3)
    if state.format == FORMAT_V5 and state.v5 is not None:
        return _v5_window(state.v5)
    return RecoveryWindow(None, None)


def _granularity(times: list[datetime]) -> float | None:
    ordered = sorted(times)
    gaps = [(b - a).total_seconds() for a, b in zip(ordered, ordered[1:])]
    return statistics.median(gaps) if gaps else None


def _v3_window(v3) -> RecoveryWindow:
    spans = []
    for gen in v3.generations:
        if not gen.snapshots:
            continue
        start = min(s.info.last_modified for s in gen.snapshots)
        times = [o.last_modified for o in gen.objects() if o.last_modified >= start]
        spans.append(Span(f"generation {gen.id}", start, max(times), len(times), _granularity(times)))
    return _whole(spans, [s.earliest for s in spans])


def _v5_window(v5) -> RecoveryWindow:
    from lib.litestream.v5.layout import SNAPSHOT_LEVEL

    spans = []
    for level, files in sorted(v5.levels.items()):
        if files:
            times = [f.time for f in files]
            spans.append(Span(f"level {level}", min(times), max(times), len(times), _granularity(times)))
    starts = [f.time for f in v5.files() if f.level == SNAPSHOT_LEVEL or f.min_txid == 1]
    window = _whole(spans, starts)
    if window.earliest is None:
        return window
    # A level's files older than the first start point restore nothing on their own.
    clipped = tuple(s for s in window.spans if s.latest >= window.earliest)
    return RecoveryWindow(window.earliest, window.latest, clipped)


def _whole(spans: list[Span], starts: list[datetime]) -> RecoveryWindow:
    if not spans or not starts:
        return RecoveryWindow(None, None, tuple(spans))
    return RecoveryWindow(min(starts), max(s.latest for s in spans), tuple(spans))


def with_start_times(store, state: ReplicaState) -> ReplicaState:
    """``state`` whose v0.5 start points (L9 files and files from TXID 1) carry their LTX
    header times, which ``-timestamp`` compares: an S3 ``LastModified`` is the upload time,
    in whole seconds, and can lie on either side of it. A few small reads; a file that can't
    be read keeps its listing time. v0.3 states are returned as they are."""
    from dataclasses import replace

    from lib.errors import StorageError
    from lib.litestream.v5.layout import SNAPSHOT_LEVEL, V5State, with_header_times

    if state.format != FORMAT_V5 or state.v5 is None:
        return state
    starts = [f for f in state.v5.files() if f.level == SNAPSHOT_LEVEL or f.min_txid == 1]
    sub = V5State(prefix=state.v5.prefix)
    for f in starts:
        sub.levels[f.level].append(f)
    try:
        timed = {f.key: f for f in with_header_times(store, sub).files()}
    except StorageError:  # vanished or unreachable: the listing times will do
        return state
    v5 = V5State(prefix=state.v5.prefix, ignored=list(state.v5.ignored))
    for f in state.v5.files():
        v5.levels[f.level].append(timed.get(f.key, f))
    return replace(state, v5=v5)
