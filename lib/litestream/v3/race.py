"""Judging damage on a live replica: a finding stands only if the objects it rests on are still there, unchanged."""
from __future__ import annotations

from datetime import datetime

from lib.litestream.layout import FORMAT_V3
from lib.litestream.outcome import RestoreTarget, race_kinds
from lib.litestream.v3.layout import V3State, segment_order, snapshot_settle_seconds
from lib.litestream.v3.plan import V3Plan, plan_v3
from lib.litestream.v3.replay import MID_TRANSACTION
from lib.report.model import Finding


def findings_stand(old: V3State, fresh: V3State, findings: list[Finding],
                   target: RestoreTarget = RestoreTarget()) -> bool:
    """True when a fresh listing still holds the basis of every racy error finding.

    Litestream never rewrites a WAL segment, so what a restore found is settled when the
    objects it read up to the culprit are listed unchanged in ``fresh`` and nothing new
    appeared before the culprit (a missing object is settled when it is still missing).
    ``integrity`` has no culprit: it stands when the whole plan is unchanged, apart from
    new indexes after the snapshot's (Litestream uploads them only once that index is
    complete). Otherwise the caller verifies again from ``fresh``.
    """
    racy = [f for f in findings if f.severity == "error" and f.kind in race_kinds(FORMAT_V3) and not f.inconclusive]
    if not racy:
        return True
    old_plan, old_problems = plan_v3(old, target)
    new_plan, new_problems = plan_v3(fresh, target)
    if old_plan is None or new_plan is None:
        return old_plan is None and new_plan is None and _same_problems(old_problems, new_problems)
    old_objects, new_objects = _plan_objects(old_plan), _plan_objects(new_plan)
    return all(_stands(f, old_plan, old_objects, new_objects) for f in racy)


def _same_problems(old: list[Finding], new: list[Finding]) -> bool:
    return {(f.kind, f.object) for f in old} == {(f.kind, f.object) for f in new}


def _plan_objects(plan: V3Plan) -> list[tuple[str, int, datetime]]:
    infos = [plan.snapshot.info] + [s.info for s in plan.segments]
    return [(o.key, o.size, o.last_modified) for o in infos]


def _stands(finding: Finding, old_plan: V3Plan, old: list, new: list) -> bool:
    if finding.kind == "integrity" or not finding.object:
        return new[: len(old)] == old and _no_new_in_index(new, old, old_plan.snapshot.index)
    keys = [o[0] for o in old]
    if finding.object in keys:
        end = keys.index(finding.object) + 1
        if MID_TRANSACTION in finding.message:
            return new[:end] == old[:end] and not _continued(finding.object, keys, new)
        return new[:end] == old[:end]
    if finding.object.endswith("/"):
        return new[:1] == old[:1]  # about the generation's snapshots: settled by the snapshot
    # A missing object: everything listed before its place, and the next one, are unchanged.
    end = 1 + sum(1 for key in keys[1:] if segment_order(key) < segment_order(finding.object))
    return new[: end + 1] == old[: end + 1] and finding.object not in {o[0] for o in new}


def _continued(key: str, old_keys: list[str], new: list) -> bool:
    """Whether ``new`` holds a segment, absent before, that may continue ``key``'s transaction
    (between it and the next segment of its index that was already listed)."""
    index, offset = segment_order(key)
    following = [o for i, o in map(segment_order, old_keys) if i == index and o > offset]
    bound = min(following, default=None)
    for other in (o[0] for o in new if o[0] not in old_keys):
        i, o = segment_order(other)
        if i == index and o > offset and (bound is None or o < bound):
            return True
    return False


def _no_new_in_index(new: list, old: list, index: int) -> bool:
    """The fresh plan holds no segment of ``index`` that the old one lacked."""
    old_keys = {o[0] for o in old}
    return not any(segment_order(o[0])[0] == index and o[0] not in old_keys for o in new)


# --------------------------------------------------------------------------- a snapshot ahead of its WAL

def settle_delay(state: V3State, findings: list[Finding], now: datetime, sync_interval_seconds: float,
                 target: RestoreTarget = RestoreTarget()) -> float:
    """Seconds to wait before the fresh listing that judges ``findings``. Pure.

    Non-zero only while the plan's snapshot is younger than the settle time, the WAL after it
    lies within the snapshot's own index (a later index means Litestream had uploaded the
    rest of it) and an ``integrity`` or ``wal_gap`` error may come from that snapshot being
    ahead of the listed WAL.
    """
    if not any(f.severity == "error" and not f.inconclusive and f.kind in ("integrity", "wal_gap")
               for f in findings):
        return 0.0
    plan, _ = plan_v3(state, target)
    if plan is None or any(s.index > plan.snapshot.index for s in plan.segments):
        return 0.0
    settle = snapshot_settle_seconds(sync_interval_seconds)
    age = (now - plan.snapshot.info.last_modified).total_seconds()
    return max(0.0, min(settle - age, settle))
