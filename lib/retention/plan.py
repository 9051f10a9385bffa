"""The pure retention plan: what a replica may lose, with a reason for each object."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Iterable, Mapping, Sequence

from lib.litestream.discover import ReplicaState
from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v3.layout import Generation, Snapshot, V3State, WalSegment
from lib.litestream.v3.plan import V3Plan, plan_v3
from lib.litestream.v5.layout import SNAPSHOT_LEVEL, V5State
from lib.litestream.v5.plan import plan_v5
from lib.retention.policy import (
    DELETE,
    KEEP,
    V5_L0_RETENTION_SECONDS,
    Decision,
    RestorePoint,
    RetentionPlan,
    RetentionPolicy,
)
from lib.storage.base import ObjectInfo
from lib.units import format_duration, format_iso


def plan(
    state: ReplicaState,
    policy: RetentionPolicy,
    now: datetime,
    verified: Sequence[RestorePoint] = (),
) -> RetentionPlan:
    """Decide, for every object of the replica's format, keep or delete. Pure.

    :param verified: restore points that must stay restorable (the one just verified,
        the last verified-good one from history); points of another format are ignored.
    """
    if state.format == FORMAT_V3 and state.v3 is not None:
        return plan_v3_retention(state.v3, policy, now, verified)
    if state.format == FORMAT_V5 and state.v5 is not None:
        return plan_v5_retention(state.v5, policy, now, verified)
    return RetentionPlan(state.format, policy, now, notes=["no Litestream backups listed: nothing to plan"])


def _keep_all(fmt: str, policy: RetentionPolicy, now: datetime, objects: Iterable[ObjectInfo],
              reason: str) -> RetentionPlan:
    keep = sorted((Decision.of(o, KEEP, reason) for o in objects), key=lambda d: d.key)
    return RetentionPlan(fmt, policy, now, keep=keep, notes=[reason])


def _finish(fmt: str, policy: RetentionPolicy, now: datetime, decisions: list[Decision],
            needed: Mapping[str, str], notes: list[str]) -> RetentionPlan:
    """Apply the never-delete list last (defence in depth) and order the result."""
    final = [Decision(d.key, d.size, d.last_modified, KEEP, needed[d.key]) if d.key in needed else d
             for d in decisions]
    keep = sorted((d for d in final if d.action == KEEP), key=lambda d: d.key)
    delete = sorted((d for d in final if d.action == DELETE), key=lambda d: (d.last_modified, d.key))
    return RetentionPlan(fmt, policy, now, keep=keep, delete=delete, notes=notes)

# --------------------------------------------------------------------------- v0.3


def plan_v3_retention(
    v3: V3State,
    policy: RetentionPolicy,
    now: datetime,
    verified: Sequence[RestorePoint] = (),
) -> RetentionPlan:
    """v0.3: whole old generations, old snapshots within a generation, WAL below the oldest kept snapshot.

    * A generation whose newest object is older than the window goes whole, unless it is
      the newest generation (the one ``plan_v3`` restores), holds a verified-good point or
      holds one of the ``keep_snapshots`` newest snapshots.
    * In every other generation a snapshot older than the window goes unless it is the
      generation's newest, one of the floor snapshots or needed by a protected point.
    * WAL indexes below the index of the oldest kept snapshot go, whole indexes only, and
      only when every segment of the index is older than the window.
    * If the newest restore point does not plan cleanly, nothing goes.
    """
    objects = [o for g in v3.generations for o in g.objects()]
    cutoff = policy.cutoff(now)
    if cutoff is None:
        return _keep_all(FORMAT_V3, policy, now, objects, "retention is off (retention: 0 in litestream.yml)")
    newest, problems = plan_v3(v3)
    if newest is None or problems:
        detail = "; ".join(f.message for f in problems) or "no restore point"
        return _keep_all(FORMAT_V3, policy, now, objects,
                         f"the newest restore point does not plan cleanly ({detail}): nothing is deleted")
    needed, notes = _needed_v3(v3, newest, verified)
    floor = _newest_snapshots(v3, policy.keep_snapshots)
    protected = _protected_generations(v3, newest.generation, verified, floor)
    decisions: list[Decision] = []
    for gen in v3.generations:
        if gen.id not in protected and gen.updated_at < cutoff:
            reason = (f"generation {gen.id}: its newest object ({format_iso(gen.updated_at)}) is older than the "
                      f"{_window(policy)} window")
            decisions += [Decision.of(o, DELETE, reason) for o in gen.objects()]
        else:
            decisions += _prune_generation(gen, cutoff, policy, {**floor, **needed}, protected.get(gen.id))
    return _finish(FORMAT_V3, policy, now, decisions, needed, notes)


def _window(policy: RetentionPolicy) -> str:
    return format_duration(policy.window_seconds or 0)


def _needed_v3(v3: V3State, newest: V3Plan, verified: Sequence[RestorePoint]) -> tuple[dict[str, str], list[str]]:
    """Keys a restore of the newest point or of a verified point reads, with the reason."""
    needed: dict[str, str] = {}
    reason = f"needed to restore the newest restore point {newest.position}"
    for info in [newest.snapshot.info] + [s.info for s in newest.segments]:
        needed.setdefault(info.key, reason)
    notes: list[str] = []
    for point in verified:
        if point.format != FORMAT_V3:
            continue
        objects = _objects_for_point(v3, point)
        if objects is None:
            notes.append(f"the {point.label} restore point {point} is no longer in the replica")
            continue
        for info in objects:
            needed.setdefault(info.key, f"needed to restore the {point.label} restore point {point}")
    return needed, notes


def _objects_for_point(v3: V3State, point: RestorePoint) -> list[ObjectInfo] | None:
    """The snapshot (highest index at or below the point) and the WAL up to the point."""
    gen = next((g for g in v3.generations if g.id == point.generation), None)
    if gen is None:
        return None
    snapshot = max((s for s in gen.snapshots if s.index <= point.index), key=lambda s: s.index, default=None)
    if snapshot is None:
        return None
    segments = [s for s in gen.segments
                if snapshot.index <= s.index and (s.index, s.offset) <= (point.index, point.offset)]
    return [snapshot.info] + [s.info for s in segments]


def _newest_snapshots(v3: V3State, count: int) -> dict[str, str]:
    """The ``count`` newest snapshots of the whole replica (the keep-snapshots floor)."""
    every = [s for g in v3.generations for s in g.snapshots]
    every.sort(key=lambda s: (s.info.last_modified, s.index), reverse=True)
    reason = f"one of the {count} newest snapshot(s) (keep-snapshots)"
    return {s.info.key: reason for s in every[:count]}


def _protected_generations(v3: V3State, newest: Generation, verified: Sequence[RestorePoint],
                           floor: Mapping[str, str]) -> dict[str, str]:
    """Generations never deleted whole, with the reason."""
    protected = {newest.id: "the newest generation"}
    for point in verified:
        if point.format == FORMAT_V3 and point.generation:
            protected.setdefault(point.generation, f"holds the {point.label} restore point {point}")
    for gen in v3.generations:
        if any(s.info.key in floor for s in gen.snapshots):
            protected.setdefault(gen.id, "holds one of the newest snapshots (keep-snapshots)")
    return protected


def _prune_generation(gen: Generation, cutoff: datetime, policy: RetentionPolicy,
                      protected: Mapping[str, str], why_kept: str | None) -> list[Decision]:
    """Decisions for a generation that stays: old snapshots and the WAL below the oldest kept one."""
    kept: dict[str, str] = {}
    newest_time = max((s.info.last_modified for s in gen.snapshots), default=None)
    for snap in gen.snapshots:
        reason = _snapshot_keep_reason(snap, cutoff, newest_time, protected, policy)
        if reason:
            kept[snap.info.key] = reason
    out = []
    for snap in gen.snapshots:
        if snap.info.key in kept:
            out.append(Decision.of(snap.info, KEEP, kept[snap.info.key]))
        else:
            out.append(Decision.of(snap.info, DELETE, f"snapshot {snap.index:08x} of generation {gen.id} is older "
                                   f"than the {_window(policy)} window and a newer snapshot is kept"))
    kept_indexes = [s.index for s in gen.snapshots if s.info.key in kept]
    if not kept_indexes:
        why = why_kept or "its newest object is inside the window"
        reason = f"generation {gen.id} has no snapshot and is kept ({why})"
        return out + [Decision.of(s.info, KEEP, reason) for s in gen.segments]
    return out + _wal_decisions(gen, min(kept_indexes), cutoff, policy)


def _snapshot_keep_reason(snap: Snapshot, cutoff: datetime, newest_time: datetime | None,
                          protected: Mapping[str, str], policy: RetentionPolicy) -> str | None:
    if snap.info.key in protected:
        return protected[snap.info.key]
    if snap.info.last_modified >= cutoff:
        return f"inside the {_window(policy)} window"
    if snap.info.last_modified == newest_time:
        return f"the newest snapshot of generation {snap.generation}"
    return None


def _wal_decisions(gen: Generation, oldest_kept: int, cutoff: datetime, policy: RetentionPolicy) -> list[Decision]:
    """WAL below ``oldest_kept`` goes by whole index, only if all of the index is outside the window."""
    by_index: dict[int, list[WalSegment]] = defaultdict(list)
    for seg in gen.segments:
        by_index[seg.index].append(seg)
    out = []
    for index, segs in sorted(by_index.items()):
        if index >= oldest_kept:
            reason = f"WAL at or above index {oldest_kept:08x}, the oldest kept snapshot of generation {gen.id}"
            action = KEEP
        elif all(s.info.last_modified < cutoff for s in segs):
            reason = (f"WAL index {index:08x} is below index {oldest_kept:08x}, the oldest kept snapshot of "
                      f"generation {gen.id}")
            action = DELETE
        else:
            reason = (f"WAL index {index:08x} is below the oldest kept snapshot but not all of it is older than "
                      f"the {_window(policy)} window")
            action = KEEP
        out += [Decision.of(s.info, action, reason) for s in segs]
    return out

# --------------------------------------------------------------------------- v0.5


def plan_v5_retention(
    v5: "V5State",
    policy: RetentionPolicy,
    now: datetime,
    verified: Sequence[RestorePoint] = (),
) -> RetentionPlan:
    """v0.5 (report only): what Litestream's own retention would delete at ``now``.

    Snapshots (level 9) older than the window except the newest; on levels 1-8 files
    whose max TXID is below the newest deleted snapshot's, keeping each level's last
    file; on level 0 files compacted into level 1 and older than ``l0-retention`` (5m),
    stopping at the first that is not, keeping the last. Files a restore of the newest
    or a verified point reads are kept whatever Litestream would do.
    """
    files = v5.files()
    cutoff = policy.cutoff(now)
    if cutoff is None:
        return _keep_all(FORMAT_V5, policy, now, [f.info for f in files], "retention is off in litestream.yml")
    needed: dict[str, str] = {}
    newest, problems = plan_v5(v5, RestoreTarget())
    if not newest or any(f.severity == "error" for f in problems):
        return _keep_all(FORMAT_V5, policy, now, [f.info for f in files],
                         "the newest restore point does not plan cleanly: nothing would be deleted")
    for f in newest:
        needed.setdefault(f.key, "needed to restore the newest restore point")
    for point in verified:
        if point.format == FORMAT_V5 and point.txid:
            chosen, _ = plan_v5(v5, RestoreTarget(txid=point.txid))
            for f in chosen:
                needed.setdefault(f.key, f"needed to restore the {point.label} restore point {point}")
    doomed: dict[str, str] = {}
    snapshots = sorted(v5.levels.get(SNAPSHOT_LEVEL, []), key=lambda f: (f.max_txid, f.info.last_modified))
    deleted_snaps = [s for s in snapshots[:-1] if s.info.last_modified < cutoff]
    for snap in deleted_snaps:
        doomed[snap.key] = f"snapshot older than the {_window(policy)} window and not the newest"
    floor_txid = max((s.max_txid for s in deleted_snaps), default=0)
    for level in range(1, SNAPSHOT_LEVEL):
        for f in v5.levels.get(level, [])[:-1]:
            if f.max_txid < floor_txid:
                doomed[f.key] = f"level {level} file below TXID {floor_txid:016x} of the newest deleted snapshot"
    doomed.update(_v5_l0_doomed(v5, now, policy.l0_retention_seconds))
    decisions = [Decision.of(f.info, DELETE, doomed[f.key]) if f.key in doomed
                 else Decision.of(f.info, KEEP, "Litestream's retention keeps it") for f in files]
    notes = ["report-only: Litestream v0.5 enforces its own retention while it runs, restorable deletes no LTX file"]
    return _finish(FORMAT_V5, policy, now, decisions, needed, notes)


def _v5_l0_doomed(v5: "V5State", now: datetime, l0_retention: float = V5_L0_RETENTION_SECONDS) -> dict[str, str]:
    l1_max = max((f.max_txid for f in v5.levels.get(1, [])), default=0)
    l0_cutoff = now - timedelta(seconds=l0_retention)
    doomed = {}
    for f in v5.levels.get(0, [])[:-1]:
        if f.max_txid > l1_max or f.info.last_modified >= l0_cutoff:
            break
        doomed[f.key] = ("level 0 file compacted into level 1 and older than l0-retention "
                         f"({format_duration(l0_retention)})")
    return doomed
