"""Page writes done on a thread of their own, in order, while the caller decodes the next pages.

``pwritev`` into the page cache releases the GIL, so on a second core the copies of a
restore's pages into the output file overlap the decoding (LZ4, checksums) of the next
ones instead of following it. :class:`WriteBehind` runs the writes it is given one after
another, in the order given (so the last write of a page wins, as when written inline),
holding at most ``limit`` bytes of pages queued.
"""
from __future__ import annotations

import collections
import ctypes
import threading
from typing import Callable

WRITE_AHEAD_BYTES = 4 << 20  # pages queued for the writer at most (RSS: +4 MiB, and a staged batch)

POLL_SECONDS = 0.5  # waits are sliced so that a signal handler runs on the waiting thread

_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writeback of the range's dirty pages, do not wait


def _sync_file_range():
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int) -> None:
    """Have the kernel start writing the file's dirty pages to disk now, without waiting.

    Best effort (nothing happens where ``sync_file_range`` is missing, and its errors are
    ignored: this is no durability step). The ``fsync`` before the file is published then
    waits for the last pages only, instead of all of them at the end.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


class WriteBehind:
    """One daemon thread running queued writes in order.

    :meth:`submit` queues ``fn()`` weighing ``size`` bytes, waiting (in slices, so SIGTERM
    still interrupts) while more than ``limit`` bytes are queued; a write submitted ``apart``
    (a big batch) does not count against ``limit``, but at most one such is queued or under
    way at a time. The first error a write raises stops the thread and is raised again by
    the next :meth:`submit` or by :meth:`drain`. :meth:`close` must be called before the file's descriptor is closed:
    it drops what is queued and waits for the write under way, so no write ever reaches a
    descriptor number that has been closed (and perhaps reused).
    """

    def __init__(self, limit: int = WRITE_AHEAD_BYTES):
        self._limit = limit
        self._jobs: collections.deque[tuple[Callable[[], object], int, bool]] = collections.deque()
        self._queued = 0
        self._apart_pending = False
        self._error: BaseException | None = None
        self._closed = False
        self._busy = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="page_writes", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], object], size: int, *, apart: bool = False) -> None:
        """Queue ``fn()``. ``apart``: a batch of ``size`` bytes the caller holds anyway (a page
        stage): it does not hold up the writes queued after it, and a second one waits until
        the first is written (why: counted against ``limit``, a 16 MiB stage stopped the
        decoding for as long as its write took, ~0.1 s of a 200 MB v0.5 restore)."""
        with self._cond:
            while (self._apart_pending if apart else self._queued > self._limit) and self._error is None:
                self._cond.wait(POLL_SECONDS)
            self._raise_error()
            weight = 0 if apart else size
            self._jobs.append((fn, weight, apart))
            self._queued += weight
            self._apart_pending = self._apart_pending or apart
            self._cond.notify_all()

    def drain(self) -> None:
        """Wait until every queued write is done; raise the first error one met."""
        with self._cond:
            while (self._jobs or self._busy) and self._error is None:
                self._cond.wait(POLL_SECONDS)
            self._raise_error()

    def close(self) -> None:
        """Stop: queued writes are dropped, the one under way is waited for."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify_all()
        while self._thread.is_alive():
            self._thread.join(POLL_SECONDS)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed or self._error is not None:
                    return
                fn, size, apart = self._jobs.popleft()
                self._busy = True
            try:
                fn()
            except BaseException as exc:  # handed to the submitting thread
                error: BaseException | None = exc
            else:
                error = None
            with self._cond:
                self._busy = False
                self._queued -= size
                self._apart_pending = self._apart_pending and not apart
                self._error = self._error or error
                self._cond.notify_all()
                if error is not None:
                    return
