"""One retention step after a verification: report, dry-run or delete, and say what happened.

Railway buckets have no lifecycle rules, versioning or object lock, so a replica grows
whenever Litestream's own retention (``docs/formats/litestream-v0.3.md`` section 5; v0.5:
``docs/formats/litestream-v0.5-ltx.md`` section 4) did not run or did not delete.
The plan is pure (``lib.retention.plan``); :func:`enforce_after_verify` is the only
function that deletes. It runs after a verification that did not fail, deletes nothing
unless enforcement is on, re-lists first and deletes only what ``lib.retention.select``
still allows (planned again with ``now - margin``, unchanged, whole WAL indexes), in the
two passes of ``lib.retention.delete``. Every per-key failure is reported.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from lib.config.model import ReplicaConfig
from lib.errors import StorageError
from lib.litestream.discover import ReplicaState, discover
from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.report.model import OK, WARN, DbResult, Finding, warning
from lib.retention.delete import check_after, delete_selected, failure_findings
from lib.retention.plan import plan
from lib.retention.policy import (
    MODE_DRY_RUN,
    MODE_ENFORCE,
    MODE_REPORT,
    MODE_SKIPPED,
    V3_CHECK_INTERVAL_SECONDS,
    Decision,
    RestorePoint,
    RetentionPlan,
    RetentionPolicy,
    as_restore_point,
    parse_position,
)
from lib.retention.select import select_deletions
from lib.storage.base import DeleteFailure, ObjectStore
from lib.units import format_bytes

log = logging.getLogger(__name__)


_FAILED_KEYS_SHOWN = 20  # keys listed under "failed" in the report

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
    not_applied: str | None = None  # why nothing was even attempted (the re-listing failed)

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
        if self.not_applied:
            out["not_applied"] = self.not_applied
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
    replica: ReplicaConfig,
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

    :param verified_good: the last verified-good point (``lib.report.history.GoodRun`` or
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


def _select_and_delete(store: ObjectStore, replica: ReplicaConfig, outcome: RetentionOutcome,
                       policy: RetentionPolicy, now: datetime, points: Sequence[RestorePoint]) -> None:
    try:
        fresh_state = discover(store, replica)
    except StorageError as exc:
        outcome.not_applied = f"re-listing before deleting failed ({exc})"
        outcome.findings.append(warning("retention", f"retention not applied: re-listing {replica.describe()} "
                                        f"before deleting failed ({exc}); nothing was deleted"))
        return
    fresh = plan(fresh_state, policy, now - timedelta(seconds=policy.margin_seconds), points)
    outcome.selected = select_deletions(outcome.plan, fresh, fresh_state)
    if outcome.mode == MODE_DRY_RUN:
        outcome.findings += _overdue_findings(fresh_state, policy, now, points, replica)
        return
    outcome.deleted, outcome.failures, outcome.held = delete_selected(store, outcome.selected)
    outcome.findings += failure_findings(outcome.failures, len(outcome.selected), outcome.held, store)
    if outcome.deleted:
        outcome.findings += check_after(store, replica, fresh_state)


def _overdue_findings(state: ReplicaState, policy: RetentionPolicy, now: datetime,
                      points: Sequence[RestorePoint], replica: ReplicaConfig) -> list[Finding]:
    """A warning when the replica holds objects Litestream's retention should long have deleted.

    Litestream deletes on its own cadence (v0.3 hourly, v0.5 once per snapshot interval),
    so objects are "overdue" only past that grace plus the margin; what is merely
    reclaimable now is reported in the summary, not as a finding.
    """
    if policy.window_seconds is None:
        return []
    grace = V3_CHECK_INTERVAL_SECONDS if state.format == FORMAT_V3 else policy.check_seconds or policy.window_seconds
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
        f"{replica.describe()} holds {len(overdue.delete)} object(s) ({format_bytes(overdue.delete_bytes)}) beyond the "
        f"retention policy ({policy}) that Litestream's own retention has not deleted; reclaimable now: "
        f"{len(reclaimable.delete)} object(s), {format_bytes(reclaimable.delete_bytes)}. {action}")]


def _log_outcome(outcome: RetentionOutcome, replica: ReplicaConfig) -> None:
    where = replica.describe()
    if outcome.plan is not None:
        log.info("retention plan replica=%s mode=%s keep=%d delete=%d reclaimable_bytes=%d policy=%s", where,
                 outcome.mode, len(outcome.plan.keep), len(outcome.plan.delete), outcome.plan.delete_bytes,
                 outcome.plan.policy)
    for d in outcome.selected:
        verb = "would delete" if outcome.mode == MODE_DRY_RUN else "deleting"
        log.info("retention %s key=%s bytes=%d reason=%s", verb, d.key, d.size, d.reason)
    if outcome.not_applied:
        log.warning("retention not applied replica=%s reason=%s", where, outcome.not_applied)
    elif outcome.mode == MODE_ENFORCE:
        log.info("retention deleted replica=%s objects=%d bytes=%d failed=%d", where, len(outcome.deleted),
                 sum(d.size for d in outcome.deleted), len(outcome.failures))


def now_for(store: ObjectStore) -> datetime:
    """The clock retention judges ages by: the store's (S3 Date header) when known."""
    return store.server_now() or datetime.now(timezone.utc)
