"""Which v0.3 objects rebuild a restore point: generation, snapshot and WAL segments, as litestream restore chooses them."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from lib.litestream.hazards import FAILED_RESTART
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v3.layout import Generation, Position, Snapshot, V3State, WalSegment, wal_key
from lib.report.model import Finding, error, warning

# --------------------------------------------------------------------------- planning


@dataclass
class V3Plan:
    """Which objects rebuild the chosen restore point."""

    generation: Generation
    snapshot: Snapshot
    segments: list[WalSegment]  # indexes snapshot.index..max, in (index, offset) order
    findings: list[Finding] = field(default_factory=list)  # warnings found while planning

    @property
    def last_backup_at(self) -> datetime:
        times = [self.snapshot.info.last_modified] + [s.info.last_modified for s in self.segments]
        return max(times)

    @property
    def end(self) -> Position:
        """Where the plan ends: the last segment's start, or the snapshot's index."""
        if self.segments:
            last = self.segments[-1]
            return Position(self.generation.id, last.index, last.offset)
        return Position(self.generation.id, self.snapshot.index, 0)

    @property
    def position(self) -> str:
        return str(self.end)


def choose_generation(state: V3State, target: RestoreTarget) -> tuple[Generation | None, list[Finding]]:
    """Pick the generation ``litestream restore`` would (max updatedAt, first on ties)."""
    if target.generation:
        for gen in state.generations:
            if gen.id == target.generation:
                return gen, []
        known = ", ".join(g.id for g in state.generations) or "none"
        return None, [error("no_backups", f"generation {target.generation} not found (generations: {known})")]
    best: Generation | None = None
    for gen in state.generations:
        if target.timestamp and not (gen.created_at <= target.timestamp <= gen.updated_at):
            continue
        if best is None or gen.updated_at > best.updated_at:
            best = gen
    if best is None:
        if not state.generations:
            return None, [error("no_backups", f"no Litestream v0.3 backups under {state.prefix or 'the replica root'}")]
        return None, [error("no_backups", f"no generation covers {target.timestamp.isoformat()}")]
    return best, []


def choose_snapshot(gen: Generation, target: RestoreTarget) -> Snapshot | None:
    """The snapshot with the latest created time at or before the target (ties: first listed)."""
    best = None
    for snap in gen.snapshots:
        if target.timestamp and snap.info.last_modified > target.timestamp:
            continue
        if best is None or snap.info.last_modified > best.info.last_modified:
            best = snap
    return best


def plan_v3(state: V3State, target: RestoreTarget = RestoreTarget()) -> tuple[V3Plan | None, list[Finding]]:
    """Decide what to restore. Pure: looks only at the listing.

    Returns the plan (None when nothing can be restored) and the findings that planning
    alone can establish: no backups, a generation without snapshot, WAL indexes or
    initial segments missing.
    """
    gen, findings = choose_generation(state, target)
    if gen is None:
        return None, findings
    snapshot = choose_snapshot(gen, target)
    if snapshot is None:
        return None, [_missing_snapshot(state, gen, target)]
    segments = _segments_until(gen, target)
    findings = _check_indexes(state.prefix, gen, snapshot, segments)
    needed = [s for s in segments if s.index >= snapshot.index]
    # Only the below-snapshot gaps wait for a fresh listing to confirm them (restore_v3).
    to_confirm = [f for f in findings if f.severity == "warning" and f.kind == "wal_gap"]
    return V3Plan(gen, snapshot, needed, to_confirm), [f for f in findings if f not in to_confirm]


def _missing_snapshot(state: V3State, gen: Generation, target: RestoreTarget) -> Finding:
    best = fallback_generation(state, gen, target)
    if best is not None:
        hint = (f"older generation {best.id} (last upload {best.updated_at:%Y-%m-%dT%H:%M:%SZ}) still has a "
                f"snapshot: restore it with --generation {best.id}; restart litestream to start a new generation")
    else:
        hint = "no other generation has a snapshot either; restart litestream so it takes a new snapshot"
    hint += f"; {FAILED_RESTART}"
    return error("missing_snapshot", f"generation {gen.id} has WAL but no usable snapshot; {hint}",
                 f"{state.prefix}{gen.id}/snapshots/")


def fallback_generation(state: V3State, gen: Generation, target: RestoreTarget) -> Generation | None:
    """The newest other generation that has a snapshot for ``target``, if any."""
    older = [g for g in state.generations if g is not gen and choose_snapshot(g, target)]
    return max(older, key=lambda g: g.updated_at) if older else None


def _segments_until(gen: Generation, target: RestoreTarget) -> list[WalSegment]:
    kept = []
    for seg in gen.segments:
        if target.timestamp and seg.info.last_modified > target.timestamp:
            break
        kept.append(seg)
    return kept


def _check_indexes(prefix: str, gen: Generation, snapshot: Snapshot, segments: list[WalSegment]) -> list[Finding]:
    """Every index S..max needs segments starting at offset 0; below S, Litestream still insists.

    Errors name the missing object (the offset-0 segment that should exist); indexes below
    the snapshot are not needed for this restore point, so their problems are warnings.
    """
    findings: list[Finding] = []
    by_index: dict[int, list[WalSegment]] = {}
    for seg in segments:
        by_index.setdefault(seg.index, []).append(seg)
    for index, segs in sorted(by_index.items()):
        if segs[0].offset != 0:
            key = wal_key(prefix, gen.id, index, 0)
            if index >= snapshot.index:
                findings.append(error("wal_gap", f"WAL index {index:08x} has no segment at offset 0 "
                                      f"(first is at offset {segs[0].offset}): the index cannot be replayed",
                                      key))
            else:
                findings.append(warning("wal_gap", f"WAL index {index:08x} (below snapshot {snapshot.index:08x}, "
                                        "not needed here) has no segment at offset 0: `litestream restore` will "
                                        "refuse this generation, `python -m jobs.restore` works", key))
    max_index = max(by_index, default=-1)
    if max_index == -1:
        return findings
    if max_index < snapshot.index:
        findings.append(_snapshot_ahead(prefix, gen, snapshot, max_index))
    for index in range(snapshot.index, max_index + 1):
        if index not in by_index:
            findings.append(error("wal_gap", f"WAL index {index:08x} is missing between snapshot "
                                  f"{snapshot.index:08x} and index {max_index:08x}: every change after "
                                  f"{_before(index, snapshot.index)} is unrestorable",
                                  wal_key(prefix, gen.id, index, 0)))
    return findings


def _before(index: int, snapshot_index: int) -> str:
    """What precedes a missing index: the snapshot, or the index before it."""
    return f"snapshot {snapshot_index:08x}" if index == snapshot_index else f"index {index - 1:08x}"


def _snapshot_ahead(prefix: str, gen: Generation, snapshot: Snapshot, max_index: int) -> Finding:
    """A snapshot newer than every WAL index: a warning, not an error (``docs/detection.md``).

    The snapshot is a copy of the database file at a commit, a consistent restore point, and
    ``litestream restore`` restores exactly it (its max index is the snapshot's). It is also
    what a replica looks like when Litestream stopped right after a snapshot, before the first
    segment of the new index was uploaded: the same state as a generation holding a snapshot
    alone. Whether changes after it were lost is what the freshness check judges.
    """
    return warning("snapshot_ahead", f"snapshot {snapshot.index:08x} is newer than every WAL index of generation "
                   f"{gen.id} (WAL ends at index {max_index:08x}): restored from the snapshot alone, as litestream "
                   "restore does; no change after it was uploaded", wal_key(prefix, gen.id, snapshot.index, 0))

