"""Retention: decide what a replica may lose, and delete it only when asked, safely.

Railway buckets have no lifecycle rules, versioning or object lock, so a replica grows
whenever Litestream's own retention (``../shared/docs/litestream-v0.3-format.md``
section 5; v0.5: ``litestream-v0.5-ltx-format.md`` section 4) did not run or did not
delete. restorable applies the same kind of policy after a successful verification.

* :func:`plan` is pure: from a listing (``ReplicaState``), a :class:`RetentionPolicy`,
  the verified-good restore points and "now" it returns a :class:`RetentionPlan` that
  gives every object a keep or delete decision with a reason. It never deletes what
  ``plan_v3`` needs to rebuild the newest restore point or a verified-good point, nor
  the newest ``keep_snapshots`` snapshots. A v0.5 plan says what Litestream's own
  retention would delete; restorable never deletes LTX files (v0.5 enforces its own).
* :func:`enforce_after_verify` is the only function that deletes. It runs after a
  verification that did not fail, deletes nothing unless enforcement is on, re-lists
  first and deletes only objects that the fresh listing still plans to delete with
  ``now - margin`` (so they are still older than window plus margin), unchanged in
  size and time, whole WAL indexes at a time, oldest first, each WAL index's offset-0
  segment last. Every per-key failure is reported.
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from lib.discover import ReplicaState, discover
from lib.durations import format_duration
from lib.errors import ConfigError, StorageError
from lib.outcome import RestoreTarget
from lib.replica import FORMAT_V3, FORMAT_V5, WAL_SEGMENT_RE, Generation, Snapshot, V3State, WalSegment
from lib.report import OK, WARN, DbResult, Finding, error, iso, warning
from lib.restore import V3Plan, plan_v3
from lib.storage import DeleteFailure, ObjectInfo, ObjectStore

if TYPE_CHECKING:
    from lib.config import ReplicaConfig
    from lib.restore_v5 import V5State

log = logging.getLogger(__name__)

# Litestream's default `retention` (v0.3 replica.go DefaultRetention; v0.5 snapshot.retention).
DEFAULT_WINDOW_SECONDS = 24 * 3600.0
DEFAULT_KEEP_SNAPSHOTS = 1
# Objects must be older than window + margin when re-listed right before deleting, so a
# snapshot a live Litestream is writing (and host/server clock skew) is never raced.
DEFAULT_MARGIN_SECONDS = 600.0
# Litestream v0.3 checks retention every `retention-check-interval` (default 1h), so an
# object may outlive the window by that much before Litestream deletes it: no warning then.
V3_CHECK_INTERVAL_SECONDS = 3600.0
# Litestream v0.5 `l0-retention` default (5m). Its snapshot retention runs once per
# `snapshot.interval` (default 24h), so v0.5 objects get one whole window of grace.
V5_L0_RETENTION_SECONDS = 300.0

KEEP = "keep"
DELETE = "delete"

MODE_REPORT = "report"
MODE_DRY_RUN = "dry-run"
MODE_ENFORCE = "enforce"
MODE_SKIPPED = "skipped"

# Per-key delete errors that mean "not allowed" (a configuration problem a human must fix)
# rather than a transient failure the next run retries.
_PERMISSION_RE = re.compile(
    r"AccessDenied|Forbidden|\b403\b|credentials refused|Permission denied|Operation not permitted|"
    r"Read-only file system|AllAccessDisabled|ObjectLocked",
    re.IGNORECASE,
)
_EXAMPLE_KEYS = 3  # keys named in a finding's message
_FAILED_KEYS_SHOWN = 20  # keys listed under "failed" in the report


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a replica keeps history, and the floor that is kept whatever its age.

    ``window_seconds`` None means retention is off (``retention: 0`` in litestream.yml):
    everything is kept. ``source`` says where the window came from, for the report.
    """

    window_seconds: float | None = DEFAULT_WINDOW_SECONDS
    keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS
    margin_seconds: float = DEFAULT_MARGIN_SECONDS
    source: str = "Litestream's default"

    def cutoff(self, now: datetime) -> datetime | None:
        """Objects last modified before this are outside the window (None: no window)."""
        if self.window_seconds is None:
            return None
        return now - timedelta(seconds=self.window_seconds)

    def __str__(self) -> str:
        window = "off" if self.window_seconds is None else format_duration(self.window_seconds)
        return (f"window {window} ({self.source}), keep at least {self.keep_snapshots} snapshot(s) and the "
                f"verified-good restore point, margin {format_duration(self.margin_seconds)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "window": None if self.window_seconds is None else format_duration(self.window_seconds),
            "window_seconds": self.window_seconds,
            "source": self.source,
            "keep_snapshots": self.keep_snapshots,
            "margin_seconds": self.margin_seconds,
        }


def policy_for(replica: "ReplicaConfig", db_settings: Any, override_seconds: float | None = None) -> RetentionPolicy:
    """The policy for one replica: ``override_seconds`` (``--retention``), else the verifier
    settings' ``retention``, else the replica's ``retention`` in litestream.yml, else 24h.

    A litestream.yml ``retention`` of 0 or less turns Litestream's retention off; restorable
    then keeps everything too, unless its own settings or ``--retention`` give a window.

    :raises ConfigError: an explicit window or ``keep-snapshots`` below 1.
    """
    keep = int(getattr(db_settings, "keep_snapshots", DEFAULT_KEEP_SNAPSHOTS) or DEFAULT_KEEP_SNAPSHOTS)
    if keep < 1:
        raise ConfigError(f"keep-snapshots={keep} must be at least 1")
    settings_window = getattr(db_settings, "retention_seconds", None)
    for value, source in ((override_seconds, "--retention"), (settings_window, "restorable settings")):
        if value is not None:
            if value <= 0:
                raise ConfigError(f"retention {value}s from {source} must be positive; use e.g. 24h or 7d")
            return RetentionPolicy(float(value), keep, source=source)
    replica_window = getattr(replica, "retention_seconds", None)
    if replica_window is not None:
        if replica_window <= 0:
            return RetentionPolicy(None, keep, source="retention disabled in litestream.yml")
        return RetentionPolicy(float(replica_window), keep, source="litestream.yml retention")
    return RetentionPolicy(DEFAULT_WINDOW_SECONDS, keep, source="Litestream's default")


# --------------------------------------------------------------------------- restore points


@dataclass(frozen=True)
class RestorePoint:
    """A position that must stay restorable: v0.3 (generation, index, offset) or v0.5 TXID."""

    format: str
    generation: str | None = None
    index: int = 0
    offset: int = 0
    txid: int | None = None
    label: str = "verified-good"

    def __str__(self) -> str:
        if self.format == FORMAT_V5:
            return f"{self.txid or 0:016x}"
        return f"{self.generation}/{self.index:08x}:{self.offset}"


_V3_POSITION_RE = re.compile(r"^([0-9a-f]{16})/([0-9a-f]{8,}):(\d+)$")
_V5_POSITION_RE = re.compile(r"^[0-9a-f]{1,16}$")


def parse_position(position: str | None, fmt: str | None, label: str = "verified-good") -> RestorePoint | None:
    """A ``DbResult.position`` / history position as a :class:`RestorePoint` (None if unparsable).

    v0.3 positions read ``<generation>/<index hex>:<offset decimal>``, v0.5 ones a hex TXID.
    """
    if not position:
        return None
    if fmt == FORMAT_V3 and (m := _V3_POSITION_RE.match(position)):
        return RestorePoint(FORMAT_V3, m.group(1), int(m.group(2), 16), int(m.group(3)), label=label)
    if fmt == FORMAT_V5 and _V5_POSITION_RE.match(position):
        return RestorePoint(FORMAT_V5, txid=int(position, 16), label=label)
    return None


def as_restore_point(value: Any, label: str = "verified-good") -> RestorePoint | None:
    """Accept a RestorePoint, a ``lib.history.GoodRun`` (anything with ``position`` and
    ``format``) or None."""
    if value is None or isinstance(value, RestorePoint):
        return value
    return parse_position(getattr(value, "position", None), getattr(value, "format", None), label)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Decision:
    """One object and what the plan does with it, and why."""

    key: str
    size: int
    last_modified: datetime
    action: str  # KEEP | DELETE
    reason: str

    @classmethod
    def of(cls, info: ObjectInfo, action: str, reason: str) -> "Decision":
        return cls(info.key, info.size, info.last_modified, action, reason)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "last_modified": iso(self.last_modified), "reason": self.reason}


@dataclass
class RetentionPlan:
    """Every listed object of the chosen format with a decision; ``delete`` is oldest first."""

    format: str | None
    policy: RetentionPolicy
    now: datetime
    keep: list[Decision] = field(default_factory=list)
    delete: list[Decision] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def keep_bytes(self) -> int:
        return sum(d.size for d in self.keep)

    @property
    def delete_bytes(self) -> int:
        return sum(d.size for d in self.delete)

    def reason_for(self, key: str) -> str | None:
        return next((d.reason for d in self.keep + self.delete if d.key == key), None)


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
            reason = (f"generation {gen.id}: its newest object ({iso(gen.updated_at)}) is older than the "
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
    from lib.restore_v5 import SNAPSHOT_LEVEL, plan_v5

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
    doomed.update(_v5_l0_doomed(v5, now))
    decisions = [Decision.of(f.info, DELETE, doomed[f.key]) if f.key in doomed
                 else Decision.of(f.info, KEEP, "Litestream's retention keeps it") for f in files]
    notes = ["report-only: Litestream v0.5 enforces its own retention while it runs, restorable deletes no LTX file"]
    return _finish(FORMAT_V5, policy, now, decisions, needed, notes)


def _v5_l0_doomed(v5: "V5State", now: datetime) -> dict[str, str]:
    l1_max = max((f.max_txid for f in v5.levels.get(1, [])), default=0)
    l0_cutoff = now - timedelta(seconds=V5_L0_RETENTION_SECONDS)
    doomed = {}
    for f in v5.levels.get(0, [])[:-1]:
        if f.max_txid > l1_max or f.info.last_modified >= l0_cutoff:
            break
        doomed[f.key] = "level 0 file compacted into level 1 and older than l0-retention (5m)"
    return doomed


# --------------------------------------------------------------------------- choosing what to delete


def select_deletions(planned: RetentionPlan, fresh: RetentionPlan, fresh_state: ReplicaState) -> list[Decision]:
    """What may really be deleted: planned, still planned by ``fresh`` (made from a new
    listing with ``now - margin``), same size and time, and whole WAL indexes only. Pure.

    An index left with later segments but no offset-0 segment makes ``litestream restore``
    refuse its generation (format doc section 9, P3), so a WAL index goes all or nothing.
    """
    if planned.format != FORMAT_V3 or fresh.format != FORMAT_V3:
        return []
    still = {(d.key, d.size, d.last_modified) for d in fresh.delete}
    chosen = [d for d in planned.delete if (d.key, d.size, d.last_modified) in still]
    chosen_keys = {d.key for d in chosen}
    partial: set[tuple[str, int]] = set()
    for group, keys in _wal_groups(o.key for o in fresh_state.objects()).items():
        if not keys <= chosen_keys and keys & chosen_keys:
            partial.add(group)
    return [d for d in chosen if _wal_group(d.key) not in partial]


def _wal_group(key: str) -> tuple[str, int] | None:
    """``(wal directory, index)`` for a v0.3 WAL segment key, else None."""
    directory, _, name = key.rpartition("/")
    m = WAL_SEGMENT_RE.match(name)
    return (directory, int(m.group(1), 16)) if m else None


def _is_initial_segment(key: str) -> bool:
    m = WAL_SEGMENT_RE.match(key.rpartition("/")[2])
    return bool(m) and int(m.group(2), 16) == 0


def _wal_groups(keys: Iterable[str]) -> dict[tuple[str, int], set[str]]:
    groups: dict[tuple[str, int], set[str]] = defaultdict(set)
    for key in keys:
        group = _wal_group(key)
        if group is not None:
            groups[group].add(key)
    return groups


def delete_passes(selected: Sequence[Decision]) -> tuple[list[Decision], list[Decision]]:
    """Split deletions into two passes, each oldest first: everything but offset-0 WAL
    segments, then those. If the first pass fails for part of an index, its offset-0
    segment stays, and Litestream can still restore the generation."""
    order = sorted(selected, key=lambda d: (d.last_modified, d.key))
    return ([d for d in order if not _is_initial_segment(d.key)], [d for d in order if _is_initial_segment(d.key)])


# --------------------------------------------------------------------------- enforcing


@dataclass
class RetentionOutcome:
    """What one retention step did; ``summary()`` goes into ``DbResult.extra["retention"]``."""

    mode: str
    plan: RetentionPlan | None = None
    selected: list[Decision] = field(default_factory=list)  # passed the re-list checks
    deleted: list[Decision] = field(default_factory=list)
    failures: list[DeleteFailure] = field(default_factory=list)
    held: list[Decision] = field(default_factory=list)  # offset-0 segments kept because their index failed
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        if self.plan is not None:
            out["format"] = self.plan.format
            out["policy"] = self.plan.policy.to_json()
            deleted_keys = {d.key for d in self.deleted}
            kept = self.plan.keep + [d for d in self.plan.delete if d.key not in deleted_keys]
            out["kept"] = _count(kept)
            out["reclaimable"] = _count(self.plan.delete)
            out["deleted"] = _count(self.deleted)
        if self.failures:
            sizes = {d.key: d.size for d in self.selected}
            out["failed"] = {"objects": len(self.failures), "bytes": sum(sizes.get(f.key, 0) for f in self.failures),
                             "held_back": len(self.held), "keys": [f.key for f in self.failures[:_FAILED_KEYS_SHOWN]]}
        if self.mode == MODE_DRY_RUN:
            out["would_delete"] = [{"key": d.key, "size": d.size, "reason": d.reason} for d in self.selected]
        notes = (self.plan.notes if self.plan else []) + self.notes
        if notes:
            out["notes"] = notes
        return out


def _count(decisions: Sequence[Decision]) -> dict[str, int]:
    return {"objects": len(decisions), "bytes": sum(d.size for d in decisions)}


def verified_points(result: DbResult, verified_good: Any = None) -> list[RestorePoint]:
    """The point this run just verified and the last verified-good one from history."""
    points = [parse_position(result.position, result.format, label="just verified")]
    points.append(as_restore_point(verified_good))
    return [p for p in points if p is not None]


def skipped_unverified(result: DbResult) -> bool:
    """Record retention as skipped when ``result`` did not verify (ok or warning); say whether it did.

    Callers check this before listing anything, so a replica that failed or could not be
    reached is never touched again, not even by a listing outside the run's deadline.
    """
    if result.status in (OK, WARN):
        return False
    outcome = RetentionOutcome(MODE_SKIPPED, notes=[
        f"verification {result.status}: retention runs only after a successful verification"])
    result.extra["retention"] = outcome.summary()
    return True


def enforce_after_verify(
    store: ObjectStore,
    replica: "ReplicaConfig",
    state: ReplicaState,
    result: DbResult,
    policy: RetentionPolicy,
    *,
    enforce: bool,
    dry_run: bool,
    now: datetime,
    verified_good: Any = None,
) -> list[Finding]:
    """Plan retention for a verified replica, then report, dry-run or delete; return findings.

    Call it after verifying ``result`` from the listing ``state``. It records a summary in
    ``result.extra["retention"]`` and returns findings for the caller to add (it does not
    add them to ``result`` itself). Never raises for storage problems.

    * verification failed or inconclusive: nothing is planned or deleted (mode "skipped");
    * neither ``enforce`` nor ``dry_run``: report only, with a ``retention`` warning when
      the replica holds objects Litestream's retention should already have deleted;
    * ``dry_run`` (wins over ``enforce``): re-list and select exactly as for deleting, log
      and record every key that would go, delete nothing;
    * ``enforce``: delete the selection (v0.3 only), then re-list and check that the newest
      restore point still plans; refused deletes give an error finding, other failures a
      warning.

    :param verified_good: the last verified-good point (``lib.history.GoodRun`` or
        :class:`RestorePoint`); the point ``result`` verified is protected as well.
    :param now: the clock to judge ages by (the store's clock when it gives one).
    """
    if skipped_unverified(result):
        return []
    points = verified_points(result, verified_good)
    outcome = RetentionOutcome(MODE_DRY_RUN if dry_run else MODE_ENFORCE if enforce else MODE_REPORT)
    outcome.plan = plan(state, policy, now, points)
    if state.format != FORMAT_V3:
        outcome.mode = MODE_REPORT  # v0.5 is report-only (the plan's notes say so)
    if outcome.mode == MODE_REPORT:
        outcome.findings += _overdue_findings(state, policy, now, points, replica)
    else:
        _select_and_delete(store, replica, outcome, policy, now, points)
    _log_outcome(outcome, replica)
    result.extra["retention"] = outcome.summary()
    return outcome.findings


def _select_and_delete(store: ObjectStore, replica: "ReplicaConfig", outcome: RetentionOutcome,
                       policy: RetentionPolicy, now: datetime, points: Sequence[RestorePoint]) -> None:
    try:
        fresh_state = discover(store, replica)
    except StorageError as exc:
        outcome.findings.append(warning("retention", f"retention not applied: re-listing {replica.describe()} "
                                        f"before deleting failed ({exc}); nothing was deleted"))
        return
    fresh = plan(fresh_state, policy, now - timedelta(seconds=policy.margin_seconds), points)
    outcome.selected = select_deletions(outcome.plan, fresh, fresh_state)
    if outcome.mode == MODE_DRY_RUN:
        outcome.findings += _overdue_findings(fresh_state, policy, now, points, replica)
        return
    outcome.deleted, outcome.failures, outcome.held = delete_selected(store, outcome.selected)
    outcome.findings += _failure_findings(outcome, store)
    if outcome.deleted:
        outcome.findings += _check_after(store, replica, fresh_state)


def delete_selected(store: ObjectStore,
                    selected: Sequence[Decision]) -> tuple[list[Decision], list[DeleteFailure], list[Decision]]:
    """Delete in two passes (see :func:`delete_passes`).

    Returns what went, what failed, and the offset-0 segments held back because another
    segment of their index failed to go."""
    first, last = delete_passes(selected)
    failures = store.delete([d.key for d in first]) if first else []
    failed_groups = {_wal_group(f.key) for f in failures}
    held = [d for d in last if _wal_group(d.key) in failed_groups]
    last = [d for d in last if _wal_group(d.key) not in failed_groups]
    if last:
        failures += store.delete([d.key for d in last])
    failed = {f.key for f in failures}
    deleted = [d for d in first + last if d.key not in failed]
    return deleted, failures, held


def _failure_findings(outcome: RetentionOutcome, store: ObjectStore) -> list[Finding]:
    """One loud finding for refused deletes (error) and one for other failures (warning)."""
    findings = []
    refused = [f for f in outcome.failures if _PERMISSION_RE.search(f.error)]
    other = [f for f in outcome.failures if not _PERMISSION_RE.search(f.error)]
    total = len(outcome.selected)
    held = (f"; {len(outcome.held)} offset-0 WAL segment(s) were kept so that their WAL indexes stay whole"
            if outcome.held else "")
    if refused:
        findings.append(error(
            "retention",
            f"retention could not delete {len(refused)} of {total} object(s) from {store.description}: "
            f"{refused[0].error} (e.g. {_examples(refused)}){held}. The backup itself verified; grant the "
            "credentials s3:DeleteObject on the replica path (or write access to the replica directory), or turn "
            "enforcement off (unset RESTORABLE_ENFORCE_RETENTION / enforce-retention)",
            refused[0].key))
    if other:
        findings.append(warning(
            "retention",
            f"retention could not delete {len(other)} of {total} object(s) from {store.description}: "
            f"{other[0].error} (e.g. {_examples(other)}){held}; the next run tries again",
            other[0].key))
    return findings


def _examples(failures: Sequence[DeleteFailure]) -> str:
    shown = ", ".join(f.key for f in failures[:_EXAMPLE_KEYS])
    return shown + (f" and {len(failures) - _EXAMPLE_KEYS} more" if len(failures) > _EXAMPLE_KEYS else "")


def _check_after(store: ObjectStore, replica: "ReplicaConfig", before: ReplicaState) -> list[Finding]:
    """After deleting: the newest restore point must still plan as cleanly as before."""
    try:
        after = discover(store, replica)
    except StorageError as exc:
        return [warning("retention", f"could not re-list {replica.describe()} after deleting: {exc}")]
    if after.format != FORMAT_V3 or after.v3 is None or before.v3 is None:
        return []
    _, problems_before = plan_v3(before.v3)
    known = {f.message for f in problems_before}
    restored, problems = plan_v3(after.v3)
    new = [f for f in problems if f.message not in known]
    if restored is None or new:
        detail = "; ".join(f.message for f in new) or "nothing can be restored"
        return [error("retention", f"after retention deleted objects, the newest restore point of "
                      f"{replica.describe()} no longer plans: {detail}")]
    return []


def _overdue_findings(state: ReplicaState, policy: RetentionPolicy, now: datetime,
                      points: Sequence[RestorePoint], replica: "ReplicaConfig") -> list[Finding]:
    """A warning when the replica holds objects Litestream's retention should long have deleted.

    Litestream deletes on its own cadence (v0.3 hourly, v0.5 once per snapshot interval),
    so objects are "overdue" only past that grace plus the margin; what is merely
    reclaimable now is reported in the summary, not as a finding.
    """
    if policy.window_seconds is None:
        return []
    grace = V3_CHECK_INTERVAL_SECONDS if state.format == FORMAT_V3 else policy.window_seconds
    overdue = plan(state, policy, now - timedelta(seconds=grace + policy.margin_seconds), points)
    if not overdue.delete:
        return []
    reclaimable = plan(state, policy, now, points)
    action = ("Litestream v0.5 should delete them itself: is litestream running with retention enabled?"
              if state.format == FORMAT_V5 else
              "see them with `python -m jobs.retention --dry-run`, delete them with --enforce or "
              "RESTORABLE_ENFORCE_RETENTION=true")
    return [warning(
        "retention",
        f"{replica.describe()} holds {len(overdue.delete)} object(s) ({_human(overdue.delete_bytes)}) beyond the "
        f"retention policy ({policy}) that Litestream's own retention has not deleted; reclaimable now: "
        f"{len(reclaimable.delete)} object(s), {_human(reclaimable.delete_bytes)}. {action}")]


def _human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size} bytes"


def _log_outcome(outcome: RetentionOutcome, replica: "ReplicaConfig") -> None:
    where = replica.describe()
    if outcome.plan is not None:
        log.info("retention plan replica=%s mode=%s keep=%d delete=%d reclaimable_bytes=%d policy=%s", where,
                 outcome.mode, len(outcome.plan.keep), len(outcome.plan.delete), outcome.plan.delete_bytes,
                 outcome.plan.policy)
    for d in outcome.selected:
        verb = "would delete" if outcome.mode == MODE_DRY_RUN else "deleting"
        log.info("retention %s key=%s bytes=%d reason=%s", verb, d.key, d.size, d.reason)
    if outcome.mode == MODE_ENFORCE:
        log.info("retention deleted replica=%s objects=%d bytes=%d failed=%d", where, len(outcome.deleted),
                 sum(d.size for d in outcome.deleted), len(outcome.failures))


def format_dry_run(selected: Sequence[Decision]) -> str:
    """The dry-run listing: one ``key<TAB>size<TAB>reason`` line per object, oldest first."""
    return "".join(f"{d.key}\t{d.size}\t{d.reason}\n" for d in selected)


def now_for(store: ObjectStore) -> datetime:
    """The clock retention judges ages by: the store's (S3 Date header) when known."""
    return store.server_now() or datetime.now(timezone.utc)
