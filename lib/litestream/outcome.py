"""What a restore is asked for and what it yields; shared by the v0.3 and v0.5 restorers."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lib.litestream.layout import FORMAT_V3
from lib.report.model import Finding

DEFAULT_MAX_RESTORE_BYTES = 1 << 40  # 1 TiB: a ceiling on any restored file, whatever headers claim

# Finding kinds that a listing racing Litestream's uploads, compaction and retention can
# produce on a healthy replica: before one counts, the replica is listed again. An
# ``integrity`` failure is racy only in v0.3, where a snapshot can be uploaded before the
# WAL it contains; a v0.5 restore applies only files that check out whole.
RACE_KINDS_V5 = ("corrupt_object", "wal_gap", "missing_snapshot")

RACE_KINDS_V3 = RACE_KINDS_V5 + ("integrity",)


def race_kinds(fmt: str | None) -> tuple[str, ...]:
    """The race-prone finding kinds of a layout (``FORMAT_V3`` or ``FORMAT_V5``)."""
    return RACE_KINDS_V3 if fmt == FORMAT_V3 else RACE_KINDS_V5


@dataclass(frozen=True)
class RestoreTarget:
    """Which restore point to rebuild; all None means "the latest"."""

    timestamp: datetime | None = None  # point in time (upload time, like litestream -timestamp)
    generation: str | None = None  # v0.3 only
    txid: int | None = None  # v0.5 only


@dataclass
class RestoreOutcome:
    """The result of restoring one replica into a scratch file.

    ``path`` is None when nothing could be restored; ``findings`` then says why. A restore
    that produced a file may still carry error findings (for example a corrupt frame in
    the newest WAL index): the file is then what Litestream would have produced, and the
    findings say why it can't be trusted.
    """

    format: str
    path: Path | None = None
    generation: str | None = None
    position: str | None = None
    page_size: int = 0
    bytes: int = 0
    sha256: str = ""  # only when asked for (``digest=True``): hashing is a second read of the whole file
    last_backup_at: datetime | None = None
    findings: list[Finding] = field(default_factory=list)
    objects_read: int = 0
    bytes_downloaded: int = 0


def file_sha256(path: Path) -> str:
    """The sha256 of the file at ``path``, read through one reused buffer (``hashlib.file_digest``)."""
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
