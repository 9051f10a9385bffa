"""The v0.3 snapshot, streamed into the scratch file, and the file the WAL is replayed into.

``SnapshotStream`` downloads and decompresses the snapshot on its own thread and writes it
on another (``_Writer``), so the WAL segments are downloaded, decoded and validated
meanwhile on the caller's thread (all of them mostly run C code that releases the GIL: two
cores overlap them). ``Output`` stages the replayed pages and writes nothing until the
snapshot is complete.
"""
from __future__ import annotations

import errno
import os
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from lib.errors import CorruptObject
from lib.litestream import lz4 as lz4stream
from lib.litestream import sqlite
from lib.litestream.pages import STAGE_LIMIT_BYTES, PageFile, PageStage
from lib.litestream.v3 import age
from lib.litestream.v3.layout import Snapshot
from lib.storage.base import ObjectInfo, ObjectStore
from lib.storage.pool import ObjectChanged, sliced_wait

# A database file may be longer than its header says (an incomplete checkpoint after the
# database shrank leaves the old tail), so a snapshot may carry that much more, but a surplus
# beyond the declared size or this, whichever is larger, is damage (or a decompression bomb).
SNAPSHOT_SURPLUS_BYTES = 64 << 20

# Header fields every SQLite database has (sqlite.org/fileformat.html, "The Database Header").
_FIXED_HEADER_BYTES = {21: (64, "maximum embedded payload fraction"), 22: (32, "minimum embedded payload fraction"),
                       23: (32, "leaf payload fraction")}


# The fraction of the staged pages, the most recently staged, that a full stage keeps: on a
# WAL-heavy replica they are the pages rewritten again and again (writes per restored page
# fell by about a third against writing the whole stage each time).
STAGE_KEEP = 0.75


@dataclass(frozen=True)
class SnapshotHeader:
    page_size: int
    change_counter: int  # page 1's file change counter (header offset 24)
    pages: int | None  # the in-header database size, when SQLite would trust it


class SnapshotDamaged(Exception):
    """The snapshot is damaged (its ``CorruptObject`` is ``SnapshotStream.error``): nothing built on it counts."""


class _Cancelled(Exception):
    pass


def restore_snapshot(store: ObjectStore, snapshot: Snapshot, out_path: Path, limit: int) -> tuple[int, int]:
    """Stream the snapshot into ``out_path``; return (page_size, bytes).

    Raises CorruptObject when the snapshot is damaged, and ``ObjectChanged`` when the
    object read is not the one listed (Litestream rewrote it meanwhile).
    """
    return _stream_into(store, snapshot, PageFile.create(out_path), limit)


def _stream_into(store: ObjectStore, snapshot: Snapshot, out: PageFile, limit: int, on_header=None,
                 cancelled: threading.Event | None = None) -> tuple[int, int]:
    """``restore_snapshot`` into ``out``, a new file this closes. ``on_header(SnapshotHeader)``
    is called once the header is validated, before the rest is written; ``cancelled`` is
    looked at before each piece."""
    key = snapshot.info.key
    written = 0
    page_size = 0
    expected_size = None
    head = b""
    with out, store.open(key) as reader, _Writer(out) as writer:
        counted = _CountingChunks(reader)
        # A damaged object raises here: an open file or a GET always yields one whole
        # object, so a replacement by Litestream can't look damaged (and verify.py re-lists
        # before believing the finding); a replaced, sound one is caught by its size below.
        plain = age.plain_chunks(key, iter(counted), age.keys_of(store))
        for piece in lz4stream.decompress_pieces(key, plain, limit, ring=_Writer.BEHIND + 1):
            if cancelled is not None and cancelled.is_set():
                raise _Cancelled()
            if page_size == 0 and len(head) < sqlite.HEADER_SIZE:
                head += bytes(piece[: sqlite.HEADER_SIZE - len(head)])
                if len(head) == sqlite.HEADER_SIZE:
                    page_size, expected_size = _validate_db_header(key, head)
                    _check_room(key, out, expected_size, limit)
                    if on_header is not None:
                        on_header(SnapshotHeader(page_size, sqlite.change_counter_of(head), sqlite.declared_pages(head)))
            if expected_size and written + len(piece) > expected_size + max(expected_size, SNAPSHOT_SURPLUS_BYTES):
                raise CorruptObject(key, f"snapshot inflates past {written + len(piece)} bytes but its header "
                                    f"declares {expected_size // page_size} pages ({expected_size} bytes)")
            writer.write(piece)
            written += len(piece)
        writer.finish()
        _check_unchanged(snapshot.info, counted.count)
    if written and not page_size:
        _validate_db_header(key, head)  # fewer bytes than a header: raises
    if written < 100:
        raise CorruptObject(key, f"snapshot is {written} bytes, too short for a SQLite database")
    if written % page_size:
        raise CorruptObject(key, f"snapshot is {written} bytes, not a whole number of {page_size}-byte pages")
    if expected_size and written < expected_size:
        raise CorruptObject(key, f"snapshot is {written} bytes but its header says {expected_size} "
                            f"({expected_size // page_size} pages): truncated")
    return page_size, written


class SnapshotStream:
    """``restore_snapshot`` on a background thread.

    ``header()`` and ``finished()`` wait for it (in short slices, so SIGTERM is handled at
    once). A damaged snapshot surfaces as ``SnapshotDamaged`` (the ``CorruptObject`` is kept
    in ``error``); anything else it raised (``ObjectChanged``, ``StorageUnavailable``, ...)
    is raised again on the waiting thread. ``stop()`` must be called on every path.
    """

    def __init__(self, store: ObjectStore, snapshot: Snapshot, out_path: Path, limit: int):
        self.error: BaseException | None = None
        self._header: SnapshotHeader | None = None
        self._header_seen = threading.Event()
        self._cancel = threading.Event()
        # The file is created here, on the caller's thread: a stream cancelled before its GET
        # answered can't create it after the caller has cleaned up.
        out = PageFile.create(out_path)
        self._thread = threading.Thread(target=self._run, args=(store, snapshot, out, limit),
                                        name="snapshot", daemon=True)
        self._thread.start()

    def _run(self, store, snapshot, out, limit) -> None:
        try:
            _stream_into(store, snapshot, out, limit, self._got_header, self._cancel)
        except BaseException as exc:  # handed to the waiting thread
            self.error = exc
        finally:
            self._header_seen.set()

    def _got_header(self, header: SnapshotHeader) -> None:
        self._header = header
        self._header_seen.set()

    def header(self) -> SnapshotHeader:
        """The validated header (page size, change counter), as soon as it has been read."""
        sliced_wait(self._header_seen.wait)
        if self._header is None:
            self._raise()
            raise RuntimeError("the snapshot stream ended without reading a header")
        return self._header

    def finished(self) -> None:
        """Wait until the whole snapshot is written; raise its problem if it has one."""
        sliced_wait(self._joined)
        self._raise()

    def stop(self) -> None:
        """Cancel the stream if it still runs, without waiting for it.

        It stops at its next piece. A thread stuck in a slow GET is not waited for (a
        SIGTERM must end the run at once, not after read timeouts and retries): it is a
        daemon, and it writes only through its own descriptor, to a file that a new
        attempt unlinks before creating its own (``create_private``).
        """
        self._cancel.set()

    def _joined(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _raise(self) -> None:
        if self.error is None:
            return
        if isinstance(self.error, CorruptObject):
            raise SnapshotDamaged() from self.error
        raise self.error


class Output:
    """The scratch database file the WAL is replayed into, written at page offsets.

    Committed pages are staged (the last version of each page wins) and written in page
    order (``lib.litestream.pages``). Resizes are staged too, so pages are written once
    per ``STAGE_LIMIT_BYTES`` instead of once per WAL index. Nothing is written until
    ``snapshot_done()`` returns (it raises when the snapshot is unusable).
    """

    def __init__(self, path: Path, header: SnapshotHeader, limit: int, snapshot_done=lambda: None):
        self.path = path
        self.page_size = header.page_size
        self.limit = limit
        self.file = PageFile.open(path)
        self.fd = self.file.fd
        self._declared_pages = header.pages or 0
        self._snapshot_done = snapshot_done
        self._snapshot_bytes: int | None = None
        self._stage = PageStage(header.page_size)
        self._shortest: int | None = None  # fewest pages the file was cut to since the last flush
        self._pages: int | None = None  # the size last set, in pages
        self._checkpointed: int | None = None  # the size set at the end of the last WAL index, in pages

    def write_page(self, pgno: int, page: bytes | memoryview) -> None:
        self._stage.put(pgno, bytes(page))  # a view would keep its whole buffer alive (bytes of bytes is no copy)
        if self._stage.is_full():
            self.flush(keep=STAGE_KEEP)

    def make_room(self, held: int) -> int:
        """Write out the oldest staged pages so that they and ``held`` bytes of a transaction
        not committed yet fit in the stage's budget (``STAGE_LIMIT_BYTES``) together; return
        how many bytes the transaction may hold before it asks again.

        Why one budget for both: the stage is most of what a replay holds, and a transaction's
        pages join it at its commit anyway; held beside a full stage, a WAL of big transactions
        took up to 1.5 times the budget.
        """
        if len(self._stage) * self.page_size + held >= STAGE_LIMIT_BYTES and len(self._stage):
            keep = int(max(STAGE_LIMIT_BYTES - held, 0) * STAGE_KEEP) // self.page_size
            self._flush(len(self._stage) - keep)
        return self.room()

    def room(self) -> int:
        """How many bytes a transaction may hold before it asks :meth:`make_room`."""
        staged = len(self._stage) * self.page_size
        return STAGE_LIMIT_BYTES - staged if staged else sys.maxsize

    def set_pages(self, pages: int) -> None:
        """Resize the database to ``pages`` pages at the end of a WAL index (staged: applied in order at the next flush)."""
        self._stage.drop_above(pages)
        self._shortest = pages if self._shortest is None else min(self._shortest, pages)
        self._pages = self._checkpointed = pages

    def size_before_index(self, exact: bool) -> int:
        """The database's size in bytes before the WAL index being replayed (SQLite's "current size" at checkpoint).

        After a WAL index it is the size that index set; before, the snapshot's size. Unless
        ``exact``, the snapshot's header size stands in for it (a lower bound, known at once);
        ``exact`` waits for the snapshot to be complete.
        """
        if self._checkpointed is not None:
            return self._checkpointed * self.page_size
        if not exact:
            return self._declared_pages * self.page_size
        self._snapshot_complete()
        return self._snapshot_bytes

    def change_counter(self) -> int:
        """The file change counter in the database header (page 1, offset 24)."""
        page1 = self._stage.get(1)
        if page1 is not None:
            return sqlite.change_counter_of(page1)
        self.flush()
        return sqlite.change_counter_of(os.pread(self.fd, sqlite.HEADER_SIZE, 0))

    def flush(self, keep: float = 0.0) -> None:
        """Apply the staged resizes and pages (after the snapshot is complete), all but the
        ``keep`` fraction of the pages staged most recently (see ``PageStage.write_oldest``).

        Resizes first: every staged page is within the size last set (``set_pages`` drops
        the others), so a page kept and written later still lands inside the file.
        """
        self._flush(len(self._stage) - int(len(self._stage) * keep))

    def _flush(self, count: int) -> None:
        """``flush``, writing the ``count`` pages staged least recently."""
        self._snapshot_complete()
        if self._shortest is not None:
            # Cutting to the shortest size first zeroes what a shrink dropped before a later growth.
            os.ftruncate(self.fd, self._shortest * self.page_size)
            if self._pages != self._shortest:
                os.ftruncate(self.fd, self._pages * self.page_size)
            self._shortest = self._pages = None
        if count < len(self._stage):
            self._stage.write_oldest(self.file.pwritev, count)
        else:
            self._stage.write(self.file.pwritev)

    def _snapshot_complete(self) -> None:
        if self._snapshot_bytes is None:
            self._snapshot_done()
            self._snapshot_bytes = os.fstat(self.fd).st_size

    def close(self) -> None:
        """Flush and close; when flushing fails the file stays open for ``abandon()``."""
        self.flush()
        self.abandon()

    def abandon(self) -> None:
        """Close without writing what is staged (the restore failed); idempotent."""
        self._stage.clear()
        self.file.close()
        self.fd = -1


class _Writer:
    """Writes the snapshot's pieces one after another into ``out`` on a thread of its own,
    so the next block decompresses while one is written (both release the GIL).

    ``write`` returns once at most ``BEHIND`` pieces (this one included) are unwritten: a
    piece from a ring of ``BEHIND + 1`` reused buffers is written before its buffer is
    decoded into again.
    """

    BEHIND = 1

    def __init__(self, out: PageFile):
        self._out = out
        self._offset = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._unwritten = threading.Semaphore(self.BEHIND)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="snapshot-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.pwritev([piece], self._offset)
                    self._offset += len(piece)
                except BaseException as exc:  # raised on the caller's thread
                    self._error = exc
            self._unwritten.release()

    def write(self, piece) -> None:
        self._unwritten.acquire()
        if self._error is not None:
            self._unwritten.release()
            raise self._error
        self._queue.put(piece)

    def finish(self) -> None:
        """Wait until every piece is written; raise what writing raised."""
        self._stop()
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, *exc) -> None:
        """On an error, drop what is queued (the file is abandoned) and wait for the write under way."""
        if self._error is None:
            self._error = _Cancelled()
        self._stop()


class _CountingChunks:
    """Iterate a reader's chunks, counting the stored bytes read."""

    def __init__(self, reader):
        self.chunks = lz4stream.iter_reader(reader)
        self.count = 0

    def __iter__(self):
        for chunk in self.chunks:
            self.count += len(chunk)
            yield chunk


def _check_unchanged(info: ObjectInfo, size_read: int) -> None:
    if size_read != info.size:
        raise ObjectChanged(info.key, f"read {size_read} bytes, the listing said {info.size}")


def _validate_db_header(key: str, head: bytes) -> tuple[int, int | None]:
    """Check the SQLite header; return the page size and, when the header is trustworthy, the size."""
    if len(head) < sqlite.HEADER_SIZE or not head.startswith(sqlite.MAGIC):
        raise CorruptObject(key, "snapshot does not start with the SQLite header ('SQLite format 3')")
    page_size = sqlite.page_size_of(head)
    if not sqlite.is_valid_page_size(page_size):
        raise CorruptObject(key, f"snapshot header has invalid page size {page_size}")
    for offset, (value, name) in _FIXED_HEADER_BYTES.items():
        if head[offset] != value:
            raise CorruptObject(key, f"snapshot header byte {offset} ({name}) is {head[offset]}, must be {value}")
    if head[18] not in (1, 2) or head[19] not in (1, 2):
        raise CorruptObject(key, f"snapshot header has file format versions {head[18]}/{head[19]}, must be 1 or 2")
    if page_size - head[20] < 480:
        raise CorruptObject(key, f"snapshot header reserves {head[20]} bytes of each {page_size}-byte page")
    pages = sqlite.declared_pages(head)
    return page_size, pages * page_size if pages else None


def _check_room(key: str, out: PageFile, expected_size: int | None, limit: int) -> None:
    """Refuse, before writing, a snapshot whose header declares more than the ceiling or the free space."""
    if expected_size is None:
        return
    if expected_size > limit:
        raise CorruptObject(key, f"snapshot header declares {expected_size} bytes, beyond the restore size "
                                 f"ceiling of {limit} bytes")
    fs = os.fstatvfs(out.fd)
    free = fs.f_bavail * fs.f_frsize
    if expected_size > free:
        raise OSError(errno.ENOSPC, f"snapshot {key} declares a {expected_size}-byte database but the scratch "
                                    f"space has {free} bytes free")
