"""What a restore is asked for and what it yields; shared by the v0.3 and v0.5 restorers."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lib.report.model import Finding


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
