"""Deleting a selection in two passes, and the findings its failures and its aftermath give."""
from __future__ import annotations

import re
from typing import Sequence

from lib.config.model import ReplicaConfig
from lib.errors import StorageError
from lib.litestream.discover import ReplicaState, discover
from lib.litestream.layout import FORMAT_V3
from lib.litestream.v3.plan import plan_v3
from lib.report.model import Finding, error, warning
from lib.retention.policy import Decision
from lib.retention.select import delete_passes, wal_group
from lib.storage.base import DeleteFailure, ObjectStore

# Per-key delete errors that mean "not allowed" (a configuration problem a human must fix)
# rather than a transient failure the next run retries.
_PERMISSION_RE = re.compile(
    r"AccessDenied|Forbidden|\b403\b|credentials refused|Permission denied|Operation not permitted|"
    r"Read-only file system|AllAccessDisabled|ObjectLocked",
    re.IGNORECASE,
)

_EXAMPLE_KEYS = 3  # keys named in a finding's message


def delete_selected(store: ObjectStore,
                    selected: Sequence[Decision]) -> tuple[list[Decision], list[DeleteFailure], list[Decision]]:
    """Delete in two passes (see :func:`lib.retention.select.delete_passes`).

    Returns what went, what failed, and the offset-0 segments held back because another
    segment of their index failed to go."""
    first, last = delete_passes(selected)
    failures = store.delete([d.key for d in first]) if first else []
    failed_groups = {wal_group(f.key) for f in failures}
    held = [d for d in last if wal_group(d.key) in failed_groups]
    last = [d for d in last if wal_group(d.key) not in failed_groups]
    if last:
        failures += store.delete([d.key for d in last])
    failed = {f.key for f in failures}
    deleted = [d for d in first + last if d.key not in failed]
    return deleted, failures, held


def failure_findings(failures: Sequence[DeleteFailure], total: int, held: Sequence[Decision],
                     store: ObjectStore) -> list[Finding]:
    """One loud finding for refused deletes (error) and one for other failures (warning).

    :param total: how many objects the deletion tried.
    :param held: offset-0 segments kept because their index failed.
    """
    findings = []
    refused = [f for f in failures if _PERMISSION_RE.search(f.error)]
    other = [f for f in failures if not _PERMISSION_RE.search(f.error)]
    kept = (f"; {len(held)} offset-0 WAL segment(s) were kept so that their WAL indexes stay whole"
            if held else "")
    if refused:
        findings.append(error(
            "retention",
            f"retention could not delete {len(refused)} of {total} object(s) from {store.description}: "
            f"{refused[0].error} (e.g. {_examples(refused)}){kept}. The backup itself verified; grant the "
            "credentials s3:DeleteObject on the replica path (or write access to the replica directory), or turn "
            "enforcement off (unset RESTORABLE_ENFORCE_RETENTION / enforce-retention)",
            refused[0].key))
    if other:
        findings.append(warning(
            "retention",
            f"retention could not delete {len(other)} of {total} object(s) from {store.description}: "
            f"{other[0].error} (e.g. {_examples(other)}){kept}; the next run tries again",
            other[0].key))
    return findings


def _examples(failures: Sequence[DeleteFailure]) -> str:
    shown = ", ".join(f.key for f in failures[:_EXAMPLE_KEYS])
    return shown + (f" and {len(failures) - _EXAMPLE_KEYS} more" if len(failures) > _EXAMPLE_KEYS else "")


def check_after(store: ObjectStore, replica: ReplicaConfig, before: ReplicaState) -> list[Finding]:
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
