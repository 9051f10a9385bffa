"""The v0.3 snapshot, streamed into the scratch file, and the file the WAL is replayed into.

``SnapshotStream`` downloads and decompresses the snapshot on its own thread and writes it
on another (``_Writer``), so the WAL segments are downloaded, decoded and validated
meanwhile on the caller's thread (all of them mostly run C code that releases the GIL: two
cores overlap them) into ``lib.litestream.v3.output.Output``, which waits for the snapshot.
"""
from __future__ import annotations

import errno
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from lib.errors import CorruptObject
from lib.litestream import lz4 as lz4stream
from lib.litestream import sqlite
from lib.litestream.pages import PageFile
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
