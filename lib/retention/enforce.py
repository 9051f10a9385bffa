"""Retention: decide what a replica may lose, and delete it only when asked, safely.

Railway buckets have no lifecycle rules, versioning or object lock, so a replica grows
whenever Litestream's own retention (``docs/formats/litestream-v0.3.md``
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
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from lib.errors import StorageError
from lib.litestream.discover import ReplicaState, discover
from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.litestream.v3.layout import WAL_SEGMENT_RE
from lib.litestream.v3.plan import plan_v3
from lib.report.model import OK, WARN, DbResult, Finding, error, warning
from lib.storage.base import DeleteFailure, ObjectStore

if TYPE_CHECKING:
    from lib.config.model import ReplicaConfig
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

log = logging.getLogger(__name__)


# Per-key delete errors that mean "not allowed" (a configuration problem a human must fix)
# rather than a transient failure the next run retries.
_PERMISSION_RE = re.compile(
    r"AccessDenied|Forbidden|\b403\b|credentials refused|Permission denied|Operation not permitted|"
    r"Read-only file system|AllAccessDisabled|ObjectLocked",
    re.IGNORECASE,
)

_EXAMPLE_KEYS = 3  # keys named in a finding's message

_FAILED_KEYS_SHOWN = 20  # keys listed under "failed" in the report

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
