"""Scratch space: a private folder per run, removed on every path, and leftovers of killed runs swept.

A run's folder carries a marker file naming the process, its PID namespace and the boot.
A later run removes a folder only when it is ours (a real directory owned by this user,
with our marker) and either its process is gone from this very PID namespace and boot, or
the marker is older than ``STALE_AFTER_SECONDS``: processes in another container look
dead from here, so for them only age counts.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

from lib.errors import ConfigError
from lib.litestream.discover import ReplicaState
from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v3.plan import plan_v3
from lib.litestream.v5.plan import plan_v5
from lib.report.model import Finding, could_not_check
from lib.units import format_bytes

log = logging.getLogger(__name__)


SCRATCH_PREFIX = "restorable-"

MARKER_NAME = ".restorable-scratch"

STALE_AFTER_SECONDS = 24 * 3600.0  # a folder whose owner we cannot see is swept after this long

SCRATCH_RESERVE_BYTES = 16 << 20  # headroom for SQLite's own temporary files during checks

# --------------------------------------------------------------------------- scratch space


class Scratch:
    """A private (0700) directory for one run, removed on every path.

    Directories of earlier runs that were killed (SIGKILL leaves no chance to clean)
    are swept at start (see the module docstring).
    """

    live: set[Path] = set()
    _lock = threading.Lock()

    def __init__(self, root: Path | None = None):
        parent = Path(root) if root else Path(tempfile.gettempdir())
        sweep_leftovers(parent)
        self.path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent))
        os.chmod(self.path, 0o700)
        write_marker(self.path)
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


def write_marker(path: Path) -> None:
    """Mark ``path`` as a scratch folder of this process (see :func:`sweep_leftovers`)."""
    identity = {"pid": os.getpid(), **_process_context()}
    fd = os.open(path / MARKER_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(identity, f)


def sweep_leftovers(parent: Path) -> None:
    """Remove the scratch folders of earlier runs that are certainly over (module docstring)."""
    try:
        entries = list(parent.glob(f"{SCRATCH_PREFIX}*-*"))
    except OSError:
        return
    for entry in entries:
        if entry.name[len(SCRATCH_PREFIX):].split("-", 1)[0].isdigit() and _is_over(entry):
            log.info("removing scratch directory left by an interrupted run path=%s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _is_over(entry: Path) -> bool:
    """``entry`` is our scratch folder and the run that made it has ended."""
    marker = _our_marker(entry)
    if marker is None:
        return False
    identity, written_at = marker
    if time.time() - written_at > STALE_AFTER_SECONDS:
        return True
    here = _process_context()
    if None in here.values() or any(identity.get(k) != v for k, v in here.items()):
        return False  # another PID namespace or boot (or unknown): its PIDs mean nothing here
    pid = identity.get("pid")
    return isinstance(pid, int) and not _pid_alive(pid)


def _our_marker(entry: Path) -> tuple[dict, float] | None:
    """The marker's content and time when ``entry`` is a real directory of this user with our
    marker, a regular file of this user, in it; None otherwise."""
    try:
        folder = os.lstat(entry)
        marker = os.lstat(entry / MARKER_NAME)
        if not (stat.S_ISDIR(folder.st_mode) and stat.S_ISREG(marker.st_mode)):
            return None
        if folder.st_uid != os.getuid() or marker.st_uid != os.getuid():
            return None
        identity = json.loads((entry / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return (identity, marker.st_mtime) if isinstance(identity, dict) else None


def _process_context() -> dict[str, str | None]:
    """What makes a PID meaningful: the PID namespace and the boot it lives in (None when unknown)."""
    return {"pid_namespace": _read_link("/proc/self/ns/pid"), "boot_id": _read_text("/proc/sys/kernel/random/boot_id")}


def _read_link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


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


def restore_needs_at_least(state: ReplicaState, target: RestoreTarget) -> int:
    """Bytes of scratch the restore of ``target`` surely fills: a lower bound from the listing.

    Only objects the restore plan reads count, and of those only what must land on disk
    page by page: v0.3 writes the whole snapshot before replaying WAL (segments may rewrite
    the same pages, so their sizes add nothing certain); v0.5 writes every page of every
    LTX file (each holds a page at most once), so its largest file counts. Compressed
    sizes stand for page bytes less LZ4's worst-case growth. 0 when the plan is unknown
    here (no plan; a v0.5 time target, planned on header times the listing lacks).
    """
    if state.format == FORMAT_V3 and state.v3 is not None:
        plan, _ = plan_v3(state.v3, target)
        size = plan.snapshot.info.size if plan is not None else 0
    elif state.format == FORMAT_V5 and state.v5 is not None and target.timestamp is None:
        files, _ = plan_v5(state.v5, target)
        size = max((f.info.size for f in files), default=0)
    else:
        return 0
    return max(0, size - size // 64 - 4096)


def scratch_space_finding(workdir: Path, needed: int) -> Finding | None:
    """Inconclusive before downloading anything when scratch can't hold what the restore surely writes.

    ``needed`` is a lower bound (:func:`restore_needs_at_least`), so this never cries wolf;
    running out later is still caught as ENOSPC and reported the same way.
    """
    free = shutil.disk_usage(workdir).free
    if free >= needed + SCRATCH_RESERVE_BYTES:
        return None
    return could_not_check("unreachable", f"scratch space too small: restoring this backup writes at least "
                           f"{format_bytes(needed)} ({needed:,} bytes) and only {free:,} bytes are free in "
                           f"{workdir.parent.parent}; point RESTORABLE_SCRATCH_DIR at a larger volume")


def scratch_finding(exc: OSError) -> Finding:
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
