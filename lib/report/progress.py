"""Progress of long restores, as log lines (stderr), never on stdout.

A restore writes its scratch file as it goes, so the file's size is an honest measure of
bytes applied; the replica's compressed size bounds what is downloaded. A line appears at
most every ``interval`` seconds, and only once a restore has run longer than that, so
short restores stay quiet.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("restorable.progress")


TERMINAL_INTERVAL = 2.0

LOG_INTERVAL = 5.0


def default_interval() -> float:
    return TERMINAL_INTERVAL if sys.stderr.isatty() else LOG_INTERVAL


class RestoreProgress:
    """Context manager: while open, log the restored file's growth, rate and elapsed time."""

    def __init__(self, path: Path, label: str, compressed_bytes: int, interval: float | None = None):
        self.path = path
        self.label = label
        self.compressed_bytes = compressed_bytes
        self.interval = interval or default_interval()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._started = 0.0

    def __enter__(self) -> "RestoreProgress":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def report(self) -> None:
        try:
            size = os.stat(self.path).st_size
        except OSError:
            size = 0
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = size / elapsed
        total = expected_size(self.path)
        if total and total > size and rate > 0:
            estimate = f"of ~{total / 1e6:.1f} MB, ~{(total - size) / rate:.0f}s left"
        else:
            estimate = f"replica holds {self.compressed_bytes / 1e6:.1f} MB compressed"
        log.info("restoring %s: %.1f MB written in %.0fs (%.1f MB/s; %s)",
                 self.label, size / 1e6, elapsed, rate / 1e6, estimate, extra={"stage": "restore"})


def expected_size(path: Path) -> int | None:
    """The database size page 1's header declares, once the restore has written page 1.

    Both layouts write page 1 first (a v0.3 snapshot streams from offset 0, a v0.5
    snapshot's pages ascend from 1), so this estimates the snapshot phase honestly;
    WAL or later LTX files may still grow or shrink the database.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return None
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    return pages * page_size or None
