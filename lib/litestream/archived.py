"""Objects S3 keeps in an archive storage class: unreadable until someone restores them."""
from __future__ import annotations

from lib.report.model import Finding, error

# S3 storage classes whose objects need a RestoreObject request before a GET succeeds
# (GLACIER_IR, "instant retrieval", is readable; Litestream's `storage-class:` or a bucket
# lifecycle rule puts objects in these).
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def archived_finding(state) -> Finding | None:
    """An error when objects of the replica's chosen layout are in an archive class, else None.

    Neither ``litestream restore`` nor restorable can read them (S3 answers
    ``InvalidObjectState``), so the backup cannot be restored as it is: that is a verdict
    about the backup, not a passing storage problem.
    """
    archived = [o for o in state.objects() if (o.storage_class or "").upper() in ARCHIVE_CLASSES]
    if not archived:
        return None
    classes = ", ".join(sorted({o.storage_class.upper() for o in archived}))
    return error(
        "archived_object",
        f"{len(archived)} of {len(state.objects())} backup object(s) are in the archive storage class {classes} "
        f"(e.g. {archived[0].key}): S3 serves them only after a restore request, so neither litestream restore "
        "nor restorable can read them; check the replica's storage-class: and the bucket's lifecycle rules "
        "(GLACIER_IR or STANDARD_IA stay readable)", archived[0].key)
