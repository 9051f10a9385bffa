"""Scratch space: a private folder per run, removed on every path, and leftovers of killed runs swept."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from lib.errors import ConfigError
from lib.report.model import Finding, could_not_check

log = logging.getLogger(__name__)


SCRATCH_PREFIX = "restorable-"

SCRATCH_RESERVE_BYTES = 16 << 20  # headroom for SQLite's own temporary files during checks

# --------------------------------------------------------------------------- scratch space


class Scratch:
    """A private (0700) directory for one run, removed on every path.

    Directories of earlier runs that were killed (SIGKILL leaves no chance to clean)
    are removed at start when the process that made them is gone.
    """

    live: set[Path] = set()
    _lock = threading.Lock()

    def __init__(self, root: Path | None = None):
        parent = Path(root) if root else Path(tempfile.gettempdir())
        sweep_leftovers(parent)
        self.path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent))
        os.chmod(self.path, 0o700)
        with self._lock:
            Scratch.live.add(self.path)

    def subdir(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=name[:40].replace("/", "_") + "-", dir=self.path))
        os.chmod(path, 0o700)
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with self._lock:
            Scratch.live.discard(self.path)

    @classmethod
    def cleanup_all(cls) -> None:
        """Remove every live scratch directory (signal handlers and exit paths call this)."""
        for path in list(cls.live):
            shutil.rmtree(path, ignore_errors=True)
            cls.live.discard(path)


def sweep_leftovers(parent: Path) -> None:
    try:
        entries = list(parent.glob(f"{SCRATCH_PREFIX}*-*"))
    except OSError:
        return
    for entry in entries:
        pid_text = entry.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)) and entry.is_dir():
            log.info("removing scratch directory left by an interrupted run path=%s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _scratch_space_finding(workdir: Path, compressed_bytes: int) -> Finding | None:
    """Inconclusive before downloading anything when scratch can't even hold the compressed backup.

    The restored database is at least as large as its compressed objects (LZ4 never
    shrinks below that), so this lower bound never cries wolf; running out later is still
    caught as ENOSPC and reported the same way.
    """
    free = shutil.disk_usage(workdir).free
    if free >= compressed_bytes + SCRATCH_RESERVE_BYTES:
        return None
    return could_not_check("unreachable", f"scratch space too small: the backup holds {compressed_bytes:,} bytes "
                           f"compressed and only {free:,} bytes are free in {workdir.parent.parent}; point "
                           "RESTORABLE_SCRATCH_DIR at a larger volume")


def _scratch_finding(exc: OSError) -> Finding:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return could_not_check("unreachable", "scratch disk is full while restoring; give the job more disk "
                               "or point RESTORABLE_SCRATCH_DIR at a larger volume")
    return could_not_check("unreachable", f"scratch space error: {exc.strerror} ({exc.filename or 'scratch dir'})")


def check_scratch_dir(path: str) -> Path:
    """``RESTORABLE_SCRATCH_DIR`` as a writable directory.

    :raises ConfigError: it is missing, not a directory, or a folder cannot be created in it.
    """
    p = Path(path)
    problem = ConfigError(f"RESTORABLE_SCRATCH_DIR={path} is not a writable directory; create it or unset it")
    if not p.is_dir():
        raise problem
    try:  # os.access says yes to root on /proc or a read-only mount: really try
        os.rmdir(tempfile.mkdtemp(prefix=".restorable-probe-", dir=p))
    except OSError:
        raise problem from None
    return p
