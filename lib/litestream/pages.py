"""Writing database pages into the scratch file in page order.

Random page-sized ``pwrite`` calls into the page cache cost several times more than the
same pages written in ascending order with consecutive ones gathered into one ``pwritev``
(``bench/`` measures it). Both restorers stage the pages they replay in a
:class:`PageStage`, write them with :func:`write_sorted`, and create their output with
:func:`create_private`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

WRITE_RUN_PAGES = 256  # consecutive pages per pwritev (IOV_MAX is 1024 on Linux)

STAGE_LIMIT_BYTES = 16 << 20  # staged pages are written out once they hold this much (RSS: +16 MiB at most)


def write_sorted(fd: int, pages: Mapping[int, bytes], page_size: int) -> None:
    """Write ``pages`` (page number -> page bytes) at their offsets, in ascending page order."""
    run: list[bytes] = []
    start = prev = 0
    for pgno in sorted(pages):
        if run and (pgno != prev + 1 or len(run) >= WRITE_RUN_PAGES):
            os.pwritev(fd, run, (start - 1) * page_size)
            run = []
        if not run:
            start = pgno
        run.append(pages[pgno])
        prev = pgno
    if run:
        os.pwritev(fd, run, (start - 1) * page_size)


class PageStage:
    """Scattered pages waiting to be written: the last version staged of a page wins.

    The owner decides when to write (:meth:`is_full` says when it holds
    ``STAGE_LIMIT_BYTES``); :meth:`write` puts every staged page at its offset in page order,
    :meth:`write_oldest` only the pages staged least recently.
    """

    def __init__(self, page_size: int = 0):
        self.page_size = page_size
        self._pages: dict[int, bytes] = {}

    def put(self, pgno: int, page: bytes) -> None:
        self._pages.pop(pgno, None)  # a page staged again moves to the end: the dict is in recency order
        self._pages[pgno] = page

    def get(self, pgno: int) -> bytes | None:
        return self._pages.get(pgno)

    def is_full(self) -> bool:
        return len(self._pages) * self.page_size >= STAGE_LIMIT_BYTES

    def drop_above(self, pages: int) -> None:
        """Forget staged pages beyond ``pages`` (the database was cut to that size)."""
        if self._pages and max(self._pages) > pages:
            self._pages = {p: page for p, page in self._pages.items() if p <= pages}

    def write(self, fd: int) -> None:
        """Write everything staged, in page order, and forget it."""
        write_sorted(fd, self._pages, self.page_size)
        self._pages = {}

    def write_oldest(self, fd: int, count: int) -> None:
        """Write the ``count`` pages staged least recently, in page order, and forget them.

        The pages staged recently (a b-tree's inner pages, the leaf being filled) are the
        likeliest to be staged again: kept, they are written once instead of once per
        flush. Every staged page is the newest version of its page, so writing some of
        them earlier than others leaves the same file in the end.
        """
        oldest = {}
        for pgno in self._pages:
            if len(oldest) >= count:
                break
            oldest[pgno] = self._pages[pgno]
        for pgno in oldest:
            del self._pages[pgno]
        write_sorted(fd, oldest, self.page_size)

    def __len__(self) -> int:
        return len(self._pages)

    def clear(self) -> None:
        self._pages = {}


def create_private(path: Path) -> int:
    """A write descriptor for a new file at ``path``, mode 0600 from the start.

    Whatever is there is unlinked first (a symlink itself, never its target), and the file
    is created exclusively without following links (``O_EXCL | O_NOFOLLOW``): a link
    planted at ``path`` can't redirect the restore, and a new inode means a cancelled
    writer still holding the old descriptor can't reach this file.
    """
    path.unlink(missing_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def publish(tmp: Path, out: Path) -> None:
    """Move a finished file to ``out`` durably: its bytes reach the disk before its name
    does, then the directory entry, so a crash right after never leaves a short file at
    ``out`` (``litestream restore`` syncs its output too)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    directory = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
