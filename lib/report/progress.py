"""Progress of long restores on stderr, never on stdout: a bar on a terminal, log lines elsewhere.

A restore writes its scratch file as it goes, so the file's size is an honest measure of
bytes applied; the replica's compressed size bounds what is downloaded.

* On a real terminal (stderr is a tty, ``TERM`` not ``dumb``, log format not JSON): a
  ``rich`` progress bar per restore, drawn once a restore has run ``BAR_DELAY`` seconds and
  removed when it ends; log lines print above it (``lib.report.logs.set_live_writer``).
  ``RESTORABLE_PROGRESS=lines`` asks for log lines instead.
* Elsewhere (Railway, a pipe): a log line at most every ``interval`` seconds, and only
  once a restore has run longer than that, so short restores stay quiet.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from lib.report import logs

log = logging.getLogger("restorable.progress")


TERMINAL_INTERVAL = 2.0

LOG_INTERVAL = 5.0


BAR_DELAY = 1.0  # seconds before a bar appears: quick restores draw nothing

BAR_REFRESH = 0.2


def default_interval() -> float:
    return TERMINAL_INTERVAL if sys.stderr.isatty() else LOG_INTERVAL


def wants_bar(environ=None, stream: TextIO | None = None) -> bool:
    """A bar only where a person watches: a real terminal showing text logs."""
    environ = os.environ if environ is None else environ
    stream = stream or sys.stderr
    if (environ.get("RESTORABLE_PROGRESS") or "").strip().lower() == "lines":
        return False
    return (logs.is_terminal_device(stream) and (environ.get("TERM") or "") != "dumb"
            and not logs.is_json_format(environ, stream))


class _Bars:
    """One ``rich`` Progress shared by the restores running at once (``--parallel``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress = None
        self._users = 0

    def add(self, label: str, stream: TextIO, force: bool) -> tuple[object, int]:
        with self._lock:
            if self._progress is None:
                self._progress = _new_progress(stream, force)
                self._progress.start()
                console = self._progress.console
                from rich.text import Text

                logs.set_live_writer(lambda line: console.print(Text.from_ansi(line), soft_wrap=True))
            self._users += 1
            return self._progress, self._progress.add_task(label, total=None)

    def remove(self, task: int) -> None:
        with self._lock:
            if self._progress is None:
                return
            self._progress.remove_task(task)
            self._users -= 1
            if self._users == 0:
                logs.set_live_writer(None)
                self._progress.stop()
                self._progress = None


def _new_progress(stream: TextIO, force: bool):
    # deferred: rich is for people at a terminal; cron runs never import it
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    console = Console(file=stream, force_terminal=force or None, stderr=stream is sys.stderr)
    return Progress(TextColumn("restoring {task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeElapsedColumn(), console=console, transient=True,
                    refresh_per_second=5)


BARS = _Bars()


class RestoreProgress:
    """Context manager: while open, show the restored file's growth, rate and elapsed time.

    :param bar: draw a bar on ``stream`` (default: ``wants_bar()``); else log lines.
    """

    def __init__(self, path: Path, label: str, compressed_bytes: int, interval: float | None = None,
                 *, bar: bool | None = None, stream: TextIO | None = None):
        self.path = path
        self.label = label
        self.compressed_bytes = compressed_bytes
        self.stream = stream or sys.stderr
        self.bar = wants_bar(stream=self.stream) if bar is None else bar
        self.interval = interval or (BAR_REFRESH if self.bar else default_interval())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._started = 0.0
        self._task: tuple[object, int] | None = None

    def __enter__(self) -> "RestoreProgress":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        if self._task is not None:
            BARS.remove(self._task[1])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.bar:
                self.draw()
            else:
                self.report()

    def draw(self) -> None:
        """Update this restore's bar (created once the restore has run ``BAR_DELAY`` seconds)."""
        if self._task is None:
            if time.monotonic() - self._started < BAR_DELAY:
                return
            self._task = BARS.add(self.label, self.stream, force=self.stream is not sys.stderr)
        progress, task = self._task
        try:
            size = os.stat(self.path).st_size
        except OSError:
            size = 0
        progress.update(task, completed=size, total=expected_size(self.path))

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
