"""Writing database pages into the scratch file in page order.

Random page-sized ``pwrite`` calls into the page cache cost several times more than the
same pages written in ascending order with consecutive ones gathered into one ``pwritev``
(``bench/`` measures it). Both restorers stage the pages they replay in a
:class:`PageStage`, write them with :func:`write_sorted`, and write their output through a
:class:`PageFile`, which bypasses the page cache where it can.
"""
from __future__ import annotations

import errno
import mmap
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

WRITE_RUN_PAGES = 256  # consecutive pages per pwritev (IOV_MAX is 1024 on Linux)

STAGE_LIMIT_BYTES = 16 << 20  # staged pages are written out once they hold this much (RSS: +16 MiB at most)


# O_DIRECT needs the file offset, the length and the memory of each write aligned to the
# device's logical block size: 4096 covers every common one (512 and 4096).
DIRECT_ALIGN = 4096
DIRECT_CHUNK_BYTES = 1 << 20  # the aligned buffer pages are copied into for a direct write
# A direct write waits for the disk: worth it for long runs of pages, not for scattered
# ones (thousands of small synchronous writes), which the page cache gathers.
DIRECT_MIN_BYTES = 256 << 10

Pwritev = Callable[[Sequence[bytes], int], None]

_bypass_cache = False  # see page_cache_bypassed


@contextmanager
def page_cache_bypassed(enabled: bool) -> Iterator[None]:
    """Within the block, new :class:`PageFile` s write long runs with ``O_DIRECT`` (when
    ``enabled``); the choice made before is back after it. The entry point decides:
    ``jobs.restore`` hands the file to the user and reads nothing back (direct: no page cache
    to fill, nothing left to write back at ``fsync``); ``jobs.verify`` reads the whole file
    right back (the sha256, then ``integrity_check``'s scattered page reads), which the page
    cache then serves."""
    global _bypass_cache
    previous, _bypass_cache = _bypass_cache, enabled
    try:
        yield
    finally:
        _bypass_cache = previous


def write_sorted(pwritev: Pwritev, pages: Mapping[int, bytes], page_size: int) -> None:
    """Write ``pages`` (page number -> page bytes) at their offsets, in ascending page order,
    consecutive ones gathered into one ``pwritev(buffers, offset)`` call."""
    run: list[bytes] = []
    start = prev = 0
    for pgno in sorted(pages):
        if run and (pgno != prev + 1 or len(run) >= WRITE_RUN_PAGES):
            pwritev(run, (start - 1) * page_size)
            run = []
        if not run:
            start = pgno
        run.append(pages[pgno])
        prev = pgno
    if run:
        pwritev(run, (start - 1) * page_size)


def pwritev_all(fd: int, buffers: Sequence[bytes], offset: int) -> None:
    """``os.pwritev`` that treats a short write as the error it is (a hole would read as zeros)."""
    written = os.pwritev(fd, buffers, offset)
    expected = sum(map(len, buffers))
    if written != expected:
        raise OSError(errno.EIO, f"short write: {written} of {expected} bytes at offset {offset}")


class PageFile:
    """A restore's output file, created private (:func:`create_private`), whose aligned
    writes bypass the page cache (``O_DIRECT``) where the file system allows it, when
    ``direct`` (None: as :func:`page_cache_bypassed` chose; off unless chosen).

    Why: a restore writes every page of the database once or more, and into the page cache
    each write first costs a fresh page of memory (in a small VM or container, the most
    expensive part of a restore, and counted against the container's memory), then a
    write-back before the final ``fsync``. Direct writes go from one reused buffer to the
    disk. A write shorter than ``DIRECT_MIN_BYTES`` or not aligned to ``DIRECT_ALIGN``, and every write once the file
    system refused a direct one (tmpfs, some overlays), goes through the page cache; the
    kernel keeps both kinds coherent, so reads (:attr:`fd`) see every write.

    ``fd`` (read-write, owned) is for reads, ``ftruncate`` and ``fsync``; :meth:`close`
    closes it and the direct one.
    """

    def __init__(self, fd: int, path: Path, direct: bool | None = None):
        self.fd = fd
        self._direct_fd = _open_direct(path, fd) if (_bypass_cache if direct is None else direct) else -1
        self._buffer: mmap.mmap | None = None
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, direct: bool | None = None) -> "PageFile":
        """A new file at ``path`` (see :func:`create_private`)."""
        return cls(create_private(path), path, direct)

    @classmethod
    def open(cls, path: Path, direct: bool | None = None) -> "PageFile":
        """The existing file at ``path``, never through a symlink."""
        return cls(os.open(path, os.O_RDWR | os.O_NOFOLLOW), path, direct)

    def __enter__(self) -> "PageFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def direct(self) -> bool:
        """Whether aligned writes still bypass the page cache."""
        return self._direct_fd >= 0

    def pwritev(self, buffers: Sequence[bytes], offset: int) -> None:
        """Write ``buffers`` one after another from ``offset``, wholly (a short write raises)."""
        total = sum(map(len, buffers))
        with self._lock:
            if (self._direct_fd >= 0 and total >= DIRECT_MIN_BYTES
                    and offset % DIRECT_ALIGN == 0 and total % DIRECT_ALIGN == 0):
                try:
                    self._write_direct(buffers, offset)
                    return
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # EINVAL: this file system takes no such write
                        raise
                    self._stop_direct()
        pwritev_all(self.fd, buffers, offset)

    def _write_direct(self, buffers: Sequence[bytes], offset: int) -> None:
        """Copy the buffers into the aligned buffer a chunk at a time and write each chunk."""
        if self._buffer is None:
            self._buffer = mmap.mmap(-1, DIRECT_CHUNK_BYTES)  # anonymous maps are page-aligned
        chunk, filled = self._buffer, 0
        for data in buffers:
            if type(data) is bytes and len(data) < DIRECT_CHUNK_BYTES - filled:  # a page that fits: no views
                chunk[filled:filled + len(data)] = data
                filled += len(data)
                continue
            view = memoryview(data).cast("B")
            while view:
                n = min(len(view), DIRECT_CHUNK_BYTES - filled)
                chunk[filled:filled + n] = view[:n]
                filled, view = filled + n, view[n:]
                if filled == DIRECT_CHUNK_BYTES:
                    offset = self._flush_chunk(filled, offset)
                    filled = 0
        if filled:
            self._flush_chunk(filled, offset)

    def _flush_chunk(self, size: int, offset: int) -> int:
        written = os.pwrite(self._direct_fd, memoryview(self._buffer)[:size], offset)
        if written != size:
            raise OSError(errno.EIO, f"short write: {written} of {size} bytes at offset {offset}")
        return offset + size

    def _stop_direct(self) -> None:
        os.close(self._direct_fd)
        self._direct_fd = -1

    def close(self) -> None:
        """Close both descriptors; idempotent."""
        with self._lock:
            if self._direct_fd >= 0:
                self._stop_direct()
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            if self._buffer is not None:
                self._buffer.close()
                self._buffer = None


def _open_direct(path: Path, fd: int) -> int:
    """A second, ``O_DIRECT`` write descriptor on the file ``fd`` created at ``path``, or -1
    (no ``O_DIRECT`` here, the file system refuses it, or ``path`` is no longer that file)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return -1
    try:
        direct = os.open(path, os.O_WRONLY | flag | os.O_NOFOLLOW)
    except OSError:
        return -1
    mine, opened = os.fstat(fd), os.fstat(direct)
    if (mine.st_dev, mine.st_ino) != (opened.st_dev, opened.st_ino):
        os.close(direct)
        return -1
    return direct


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

    def write(self, pwritev: Pwritev) -> None:
        """Write everything staged, in page order, and forget it."""
        write_sorted(pwritev, self._pages, self.page_size)
        self._pages = {}

    def write_oldest(self, pwritev: Pwritev, count: int) -> None:
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
        write_sorted(pwritev, oldest, self.page_size)

    def __len__(self) -> int:
        return len(self._pages)

    def clear(self) -> None:
        self._pages = {}


def create_private(path: Path) -> int:
    """A read-write descriptor for a new file at ``path``, mode 0600 from the start.

    Whatever is there is unlinked first (a symlink itself, never its target), and the file
    is created exclusively without following links (``O_EXCL | O_NOFOLLOW``): a link
    planted at ``path`` can't redirect the restore, and a new inode means a cancelled
    writer still holding the old descriptor can't reach this file.
    """
    path.unlink(missing_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


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
