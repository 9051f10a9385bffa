"""Drills: restore an older restore point, in rotation, and check it like the newest.

Kinds (``--drill`` / ``drill:`` in restorable.yml choose one, ``rotate`` takes turns,
``none`` turns drills off):

* ``oldest``: a millisecond after the oldest snapshot of the window (listing times are
  rounded to microseconds; Litestream's are nanoseconds),
* ``random``: a time drawn uniformly from the window's spans with a seeded generator
  (the seed is recorded, so the same drill can be run again),
  (on v0.3 both are moved past a snapshot's settle time: ``past_young_snapshot``),
* ``generation`` (v0.3, more than one generation): the newest point of an older
  generation, each in turn.

``rotate`` drills the kind whose last drill (from the history) is oldest. A drill whose
restore or checks fail is an error finding of kind ``drill`` that names the time which
cannot be restored; a drill that raced Litestream's retention (the point left the
window meanwhile) is recorded as ``raced`` and is no finding. ``choose_kind`` and
``choose_point`` are pure; ``run_drill`` does the I/O.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from lib.errors import ConfigError, ObjectNotFound, StorageError
from lib.litestream.discover import ReplicaState, discover
from lib.litestream.layout import FORMAT_V3
from lib.litestream.outcome import RestoreOutcome, RestoreTarget, file_sha256
from lib.recovery.rotation import KINDS
from lib.recovery.window import RecoveryWindow
from lib.report.model import Finding, error, warning
from lib.units import format_duration, format_iso


MODES = ("rotate", "none") + KINDS

# A drill runs only when the run has this many times the newest restore's duration left.
BUDGET_FACTOR = 3.0

INSIDE = timedelta(milliseconds=1)


def check_mode(mode: str, where: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"{where}: drill {mode!r} is not one of {', '.join(MODES)}")
    return mode


@dataclass(frozen=True)
class DrillPoint:
    kind: str
    target: RestoreTarget
    label: str  # what cannot be restored if the drill fails, e.g. "2026-12-02T14:00:00.000Z"
    seed: int | None = None


def choose_kind(mode: str, previous: dict[str, Any] | None, available: tuple[str, ...]) -> str | None:
    """The kind to drill: ``mode`` itself, or under ``rotate`` the available kind drilled
    longest ago (never drilled first, in ``KINDS`` order)."""
    if mode == "none":
        return None
    if mode != "rotate":
        return mode if mode in available else None
    if not available:
        return None
    last = previous or {}
    return min(available, key=lambda k: (str((last.get(k) or {}).get("at") or ""), KINDS.index(k)))


def available_kinds(state: ReplicaState, window: RecoveryWindow) -> tuple[str, ...]:
    if window.earliest is None:
        return ()
    kinds = ("oldest", "random")
    if state.format == FORMAT_V3 and len(_older_generations(state)) > 0:
        kinds += ("generation",)
    return kinds


def _older_generations(state: ReplicaState) -> list[str]:
    gens = [g for g in state.v3.generations if g.snapshots]
    newest = max(gens, key=lambda g: g.updated_at, default=None)
    return sorted(g.id for g in gens if g is not newest)


def choose_point(kind: str, state: ReplicaState, window: RecoveryWindow, seed: int,
                 previous: dict[str, Any] | None = None, settle_seconds: float = 0.0) -> DrillPoint | None:
    """The restore point a drill of ``kind`` restores (None when the replica has none).

    :param settle_seconds: on v0.3, a time this close after a snapshot is moved past it
        (``past_young_snapshot``).
    """
    if kind == "oldest" and window.earliest is not None:
        target = _at(state, window, window.earliest + INSIDE)
        target = past_young_snapshot(state, target, settle_seconds, window)
        return DrillPoint(kind, target, format_iso(target.timestamp))
    if kind == "random" and window.spans:
        target = past_young_snapshot(state, _at(state, window, random_moment(window, seed)), settle_seconds, window)
        return DrillPoint(kind, target, format_iso(target.timestamp), seed)
    if kind == "generation" and state.format == FORMAT_V3:
        older = _older_generations(state)
        if older:
            done = str(((previous or {}).get("generation") or {}).get("generation") or "")
            gen = next((g for g in older if g > done), older[0])
            newest = next(g.updated_at for g in state.v3.generations if g.id == gen)
            return DrillPoint(kind, RestoreTarget(generation=gen),
                              f"{format_iso(newest)} (the newest point of generation {gen})")
    return None


def _at(state: ReplicaState, window: RecoveryWindow, moment: datetime) -> RestoreTarget:
    """A timestamp target; v0.3 pins the generation whose span holds ``moment``: Litestream
    picks a generation only when ``moment`` lies between its first and last upload, which a
    generation whose snapshot is its newest object (or whose objects share one S3 second)
    never satisfies a millisecond later."""
    if state.format != FORMAT_V3:
        return RestoreTarget(timestamp=moment)
    span = min(window.spans, key=lambda s: (0 if s.earliest <= moment <= s.latest + INSIDE else 1, s.earliest))
    return RestoreTarget(timestamp=moment, generation=span.label.removeprefix("generation "))


def past_young_snapshot(state: ReplicaState, target: RestoreTarget, settle_seconds: float,
                        window: RecoveryWindow) -> RestoreTarget:
    """Move a v0.3 timestamp that lies within ``settle_seconds`` after a snapshot to just past it. Pure.

    Litestream 0.3.13 can upload a snapshot that already holds transactions whose WAL
    segments reach the replica a sync or two later (docs/detection.md, "a snapshot ahead of
    its WAL"). A point-in-time restore to a moment in between replays the older segments of
    the snapshot's index over the newer snapshot and gets a malformed database, from
    restorable and from ``litestream restore`` alike, while a moment a few syncs later
    restores: drilling such a moment would report a healthy backup as failed.
    """
    if state.format != FORMAT_V3 or settle_seconds <= 0 or target.timestamp is None:
        return target
    gen = next((g for g in state.v3.generations if g.id == target.generation), None)
    taken = [s.info.last_modified for s in (gen.snapshots if gen else []) if s.info.last_modified <= target.timestamp]
    if not taken or target.timestamp - max(taken) >= timedelta(seconds=settle_seconds):
        return target
    latest = max((s.latest for s in window.spans if s.label.removeprefix("generation ") == target.generation),
                 default=target.timestamp)
    moved = min(max(taken) + timedelta(seconds=settle_seconds), max(latest, target.timestamp))
    return RestoreTarget(timestamp=moved, generation=target.generation)


def random_moment(window: RecoveryWindow, seed: int) -> datetime:
    """A time drawn uniformly from the spans of ``window`` (seeded), strictly inside one."""
    rng = random.Random(seed)
    spans = [s for s in window.spans if s.latest > s.earliest] or list(window.spans)
    if len(spans) > 1 and window.earliest is not None:
        spans = [s for s in spans if s.latest >= window.earliest]
    weights = [max((s.latest - s.earliest).total_seconds(), 1e-3) for s in spans]
    span = rng.choices(spans, weights=weights)[0]
    start = max(span.earliest, window.earliest) if window.earliest else span.earliest
    length = max((span.latest - start).total_seconds(), 0.0)
    return start + INSIDE + timedelta(seconds=rng.random() * max(length - 2 * INSIDE.total_seconds(), 0.0))


def default_seed(now: datetime | None = None) -> int:
    """A new seed per run (the run's time in milliseconds); recorded so a drill can be repeated."""
    return int((now or datetime.now(timezone.utc)).timestamp() * 1000)

# --------------------------------------------------------------------------- running one


def run_drill(store, state: ReplicaState, point: DrillPoint, workdir: Path, db_settings, replica,
              now: datetime, workers: int = 8) -> tuple[dict[str, Any], list[Finding]]:
    """Restore ``point`` into ``workdir`` and check it; returns the history record and findings.

    Checks: ``integrity_check``, row counts, expected tables and probes (minimum row counts
    and drift describe the newest point, not an older one).
    """
    record: dict[str, Any] = {"kind": point.kind, "target": point.label, "at": format_iso(now)}
    if point.seed is not None:
        record["seed"] = point.seed
    if point.target.generation:
        record["generation"] = point.target.generation
    out = workdir / f"drill-{point.kind}.db"
    started = time.monotonic()
    try:
        outcome = _restore(store, state, out, point.target, workers)
        problems = list(outcome.findings) + (_check(outcome.path, db_settings, record, workdir)
                                             if outcome.path else [])
    except ObjectNotFound as exc:
        record.update(status="raced", note=f"{exc}: the point left the window while it was drilled")
        return record, []
    except (StorageError, OSError) as exc:  # OSError: the scratch disk (full, unwritable)
        record.update(status="inconclusive", note=str(exc))
        return record, [warning("drill", f"could not drill {point.label} ({point.kind} drill): {exc}")]
    record["restore_seconds"] = round(time.monotonic() - started, 3)
    record["position"] = outcome.position
    errors = [f for f in problems if f.severity == "error"]
    if outcome.path is not None and not errors:
        record.update(status="ok", sha256=file_sha256(outcome.path), bytes=outcome.bytes)
        return record, []
    if errors and _raced(store, state, replica, errors):
        record.update(status="raced", note="the objects the drill read changed meanwhile (Litestream's retention)")
        return record, []
    first = errors[0] if errors else error("drill", "nothing was restored")
    record.update(status="failed", findings=[f.to_json() for f in errors])
    return record, [_failed(point, first, len(errors))]


def _restore(store, state: ReplicaState, out: Path, target: RestoreTarget, workers: int) -> RestoreOutcome:
    if state.format == FORMAT_V3:
        from lib.litestream.v3.restore import restore_v3

        return restore_v3(store, state.v3, out, target, workers=workers, digest=False)
    from lib.litestream.v5.restore import restore_v5

    return restore_v5(store, state.v5, out, target, digest=False)


def _check(path: Path, db_settings, record: dict[str, Any], workdir: Path) -> list[Finding]:
    """The newest point's checks, less ``min-rows`` and drift (they describe the newest point)."""
    from dataclasses import replace
    from types import MappingProxyType

    from lib.checks.suite import check_restored

    checked = check_restored(path, replace(db_settings, min_rows=MappingProxyType({})), None, workdir)
    record["tables"] = dict(checked.counts.tables)
    return checked.findings


def _raced(store, state: ReplicaState, replica, errors: list[Finding]) -> bool:
    """True when an object a finding names is gone or changed in a fresh listing."""
    named = {f.object for f in errors if f.object}
    if not named:
        return False
    try:
        fresh = {o.key: (o.size, o.last_modified) for o in discover(store, replica).objects()}
    except StorageError:
        return False
    before = {o.key: (o.size, o.last_modified) for o in state.objects()}
    return any(key in before and fresh.get(key) != before[key] for key in named)


def _failed(point: DrillPoint, first: Finding, count: int) -> Finding:
    seed = f", seed {point.seed}" if point.seed is not None else ""
    more = f" (+{count - 1} more problem(s))" if count > 1 else ""
    return error("drill", f"cannot restore to {point.label} ({point.kind} drill{seed}): [{first.kind}] "
                 f"{first.message}{more}; points after the damage may still restore, see jobs.status",
                 first.object)


def within_budget(deadline: float | None, newest_seconds: float) -> tuple[bool, str]:
    """Whether the run has time for a drill: ``BUDGET_FACTOR`` times the newest restore's time."""
    if deadline is None:
        return True, ""
    left = deadline - time.monotonic()
    needed = BUDGET_FACTOR * newest_seconds
    if left >= needed:
        return True, ""
    return False, f"skipped: {format_duration(max(left, 0))} left of the run, a drill needs ~{format_duration(needed)}"

