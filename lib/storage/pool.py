"""The one download pool: objects fetched ahead of their reader on daemon threads, bounded in memory.

Both restorers read objects in plan order: v0.3 many small WAL segments after a big
snapshot, v0.5 LTX files of any size. :class:`Prefetcher` keeps a window of objects
downloading ahead of the reader, each flowing through its own :class:`Pipe`, a bounded
queue of chunks, so a big object never sits in memory whole while the next few small
ones arrive during its apply. An object streams chunk by chunk, and a failed body fails
the read (the caller's attempt is retried as a whole); when asked (``whole_max_bytes``),
one no larger than that is read whole and re-read when its body fails or comes back
short (:func:`fetch_whole`), which saves many small WAL segments a whole new attempt.
Small objects (``SMALL_OBJECT_BYTES``) get a wider window on threads of their own: their
GETs are mostly waiting for the bucket, so throughput is the number in flight per round trip.

Every wait is sliced (``SIGNAL_POLL_SECONDS``), so a signal handler (SIGTERM raising
``Interrupted``) runs at once on the waiting thread; downloads run on daemon threads that
an error or a signal does not wait for: they fill only memory, never a file.
"""
from __future__ import annotations

import queue
import random
import time
from concurrent.futures import Future
from typing import BinaryIO, Iterable, Iterator, Sequence, TypeVar

from lib.errors import ObjectNotFound, StorageError, StorageUnavailable
from lib.storage.base import ObjectInfo, ObjectStore
# The sliced waits and daemon threads live in lib.storage.waits; re-exported for the callers that import them from here.
from lib.storage.waits import (SIGNAL_POLL_SECONDS, Downloads, in_background, map_sliced, sliced_result,
                               sliced_wait)

__all__ = ["CHUNK_BYTES", "Downloads", "ObjectChanged", "PIPE_BYTES", "PREFETCH_OBJECTS", "Pipe", "Prefetcher",
           "RETRY_ATTEMPTS", "SIGNAL_POLL_SECONDS", "SMALL_OBJECT_BYTES", "SMALL_WORKERS", "fetch_whole",
           "in_background", "map_sliced", "sliced_result", "sliced_wait", "stream"]

T = TypeVar("T")

RETRY_ATTEMPTS = 4  # reads of one whole (small) object before giving up

RETRY_BASE_DELAY = 0.2

CHUNK_BYTES = 1 << 20  # bytes per read from the store; an object up to this size is read whole

PIPE_CHUNKS = 4  # chunks buffered per object

PIPE_BYTES = PIPE_CHUNKS * CHUNK_BYTES  # the most one object holds in memory while it waits for its reader

PREFETCH_OBJECTS = 4  # objects downloading at once by default (the one being read included)

# An object up to this size costs a round trip more than a transfer: on a distant bucket a
# window of a few such GETs leaves the connection idle, so they get a wider window of their own.
SMALL_OBJECT_BYTES = 128 << 10

SMALL_WORKERS = 32  # small objects downloading at once (each S3 client pools at least this many connections)


class ObjectChanged(ObjectNotFound):
    """The object read is not the one listed: Litestream replaced it after the listing.

    A kind of ``ObjectNotFound`` so that callers re-list, as they do for a vanished object;
    it is never evidence of damage.
    """

    def __init__(self, key: str, detail: str):
        StorageError.__init__(self, f"object {key} changed between listing and reading ({detail})")
        self.key = key


# --------------------------------------------------------------------------- whole objects


def fetch_whole(store: ObjectStore, info: ObjectInfo, attempts: int = RETRY_ATTEMPTS) -> bytes:
    """Read one object completely, re-fetching when the body comes back short or fails.

    A body whose size differs from the listing is never taken for corruption: a one-off
    difference is a transport problem (retried with backoff and jitter, then reported as
    ``StorageUnavailable``); the same different size twice in a row means the object was
    replaced (``ObjectChanged``). ``ObjectNotFound`` is not retried: the caller re-lists.
    Never reads more than one byte beyond the listed size.
    """
    last: Exception | None = None
    previous_size: int | None = None
    for attempt in range(attempts):
        try:
            with store.open(info.key) as reader:
                data = _read_at_most(reader, info.size + 1)
            if len(data) == info.size:
                return data
            if len(data) == previous_size:
                raise ObjectChanged(info.key, f"{len(data)} bytes read twice, the listing said {info.size}")
            previous_size = len(data)
            last = StorageUnavailable(f"read {info.key}: got {len(data)} of {info.size} bytes")
        except ObjectNotFound:
            raise
        except StorageUnavailable as exc:
            last = exc
        if attempt + 1 < attempts:  # no point waiting after the last attempt
            time.sleep(RETRY_BASE_DELAY * (2**attempt) * (0.5 + random.random()))
    assert last is not None
    raise last


def _read_at_most(reader: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes (fewer only at the end of the object), in reads of at most a chunk."""
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        chunk = reader.read(min(CHUNK_BYTES, limit - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- streams


class Pipe:
    """The reading end of one object being downloaded: a raw reader over a bounded queue.

    ``read(n)`` may return fewer bytes; ``b""`` at the end. Errors the download met
    (``ObjectNotFound``, ``ObjectChanged``, ``StorageUnavailable``) are raised here, on
    read. Closing it tells the download to stop.
    """

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=PIPE_CHUNKS)
        self.closed = False
        self.bytes = 0  # bytes handed to the reader
        self._chunk = b""
        self._pos = 0
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if self._pos >= len(self._chunk):
            if self._done:
                return b""
            item = self._next_item()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
                return b""
            self._chunk, self._pos = item, 0
            self.bytes += len(item)
        end = len(self._chunk) if size is None or size < 0 else self._pos + size
        data = self._chunk[self._pos:end]
        self._pos += len(data)
        return data

    def chunks(self) -> Iterator[bytes]:
        """The rest of the object, chunk by chunk as it was downloaded."""
        while chunk := self.read():
            yield chunk

    def read_all(self) -> bytes:
        return b"".join(self.chunks())

    def put(self, item: bytes | BaseException) -> None:
        """The download's end: queue a chunk (``b""`` ends the object) or an error, unless closed."""
        while not self.closed:
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _next_item(self):
        while True:
            try:
                return self.queue.get(timeout=SIGNAL_POLL_SECONDS)
            except queue.Empty:
                continue

    def close(self) -> None:
        """Stop the download and drop what is queued, so a blocked download can finish."""
        self.closed = True
        self._chunk = b""  # the prefetcher keeps every pipe: don't let each keep its last chunk
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return

    def __enter__(self) -> "Pipe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Prefetcher:
    """Download ``infos`` in order, a bounded window ahead of the reader (see the module docstring).

    At most ``ahead`` objects larger than ``SMALL_OBJECT_BYTES`` are downloading or waiting
    to be read, on ``workers`` threads (default ``ahead``); besides them, up to twice
    ``small_workers`` small objects, on ``small_workers`` threads of their own (None: small
    objects share the big ones' window and threads). All of them hold no more than
    ``max_buffered_bytes``, each counted at most ``PIPE_BYTES`` (the object being read is
    always started). Objects up to ``whole_max_bytes`` (at most ``CHUNK_BYTES``) are read
    whole, with retries. Take the readers in order with :meth:`reader`; use it as a context
    manager.
    """

    def __init__(self, store: ObjectStore, infos: Sequence[ObjectInfo], ahead: int = PREFETCH_OBJECTS,
                 workers: int | None = None, max_buffered_bytes: int | None = None, whole_max_bytes: int = 0,
                 small_workers: int | None = None):
        self._store = store
        self._infos = list(infos)
        self._ahead = max(1, ahead)
        self._budget = max_buffered_bytes
        self._whole_max = min(whole_max_bytes, CHUNK_BYTES)
        self._pool = Downloads(max(1, workers or self._ahead))
        self._small_pool = Downloads(max(1, small_workers)) if small_workers is not None else None
        self._small_ahead = 2 * max(1, small_workers or 0)
        self._futures: list[Future | None] = []
        self._pipes: list[Pipe | None] = []
        self._released = 0  # pipes before this index are forgotten (see _release_before)
        self._released_bytes = 0
        # the window: objects started from _window_start on, big and small, and their bytes as the budget counts them
        self._window_start = 0
        self._big = self._small = self._counted = 0
        self.objects_read = 0

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        """Stop every download. After an error or a signal, a download stuck in a slow GET
        is not waited for (it fills only its pipe, never a file, and is a daemon thread)."""
        live = self._pipes[self._released:], self._futures[self._released:]
        for pipe in live[0]:
            pipe.close()
        for future in live[1]:
            future.cancel()
        if exc_type is None:
            for future in live[1]:
                if not future.cancelled():
                    sliced_result(future)
        for pool in (self._pool, self._small_pool):
            if pool is not None:
                pool.shutdown(wait=exc_type is None)

    @property
    def bytes_downloaded(self) -> int:
        return self._released_bytes + sum(pipe.bytes for pipe in self._pipes[self._released:])

    def reader(self, index: int) -> Pipe:
        """The reader for ``infos[index]`` (take them in order); starts the next downloads."""
        self._release_before(index)
        self._advance(index)
        while len(self._pipes) < len(self._infos) and self._may_start(index, len(self._pipes)):
            self._start(self._infos[len(self._pipes)])
        self.objects_read = max(self.objects_read, index + 1)
        return self._pipes[index]

    def _release_before(self, index: int) -> None:
        """Forget the pipes before ``index`` whose downloads have ended, and their futures.

        Kept to the end, each object's queue, conditions and future (~3.5 KB) made a replica of
        10,000 WAL segments peak ~35 MB higher than one of 100. A download not ended yet stays
        listed, so ``__exit__`` still stops and waits for it.
        """
        while self._released < min(index, len(self._pipes)):
            future = self._futures[self._released]
            if not future.done():
                return
            self._released_bytes += self._pipes[self._released].bytes
            self._pipes[self._released] = self._futures[self._released] = None
            self._released += 1

    def _is_small(self, info: ObjectInfo) -> bool:
        return self._small_pool is not None and info.size <= SMALL_OBJECT_BYTES

    def _count(self, info: ObjectInfo, sign: int) -> None:
        if self._is_small(info):
            self._small += sign
        else:
            self._big += sign
        self._counted += sign * min(info.size, PIPE_BYTES)

    def _advance(self, index: int) -> None:
        """Take the objects before ``index`` (the reader is past them) out of the window."""
        while self._window_start < min(index, len(self._pipes)):
            self._count(self._infos[self._window_start], -1)
            self._window_start += 1

    def _may_start(self, index: int, n: int) -> bool:
        if n <= index:
            return True
        info = self._infos[n]
        if self._small >= self._small_ahead if self._is_small(info) else self._big >= self._ahead:
            return False
        return self._budget is None or self._counted + min(info.size, PIPE_BYTES) <= self._budget

    def _start(self, info: ObjectInfo) -> None:
        pipe = Pipe()
        pool = self._small_pool if self._is_small(info) else self._pool
        self._futures.append(pool.submit(self._download, info, pipe))
        self._pipes.append(pipe)
        self._count(info, 1)

    def _download(self, info: ObjectInfo, pipe: Pipe) -> None:
        try:
            if info.size <= self._whole_max:
                pipe.put(fetch_whole(self._store, info))
            else:
                self._stream(info, pipe)
            pipe.put(b"")
        except BaseException as exc:  # handed to the reader, raised on its next read
            pipe.put(exc)

    def _stream(self, info: ObjectInfo, pipe: Pipe) -> None:
        """Copy a big object into ``pipe``; raise ``ObjectChanged`` when its size is not the listed one."""
        count = 0
        with self._store.open(info.key) as source:
            while not pipe.closed:
                chunk = source.read(min(CHUNK_BYTES, info.size + 1 - count))
                if not chunk:
                    break
                count += len(chunk)
                if count > info.size:
                    raise ObjectChanged(info.key, f"more than the {info.size} bytes listed")
                pipe.put(chunk)
        if not pipe.closed and count != info.size:
            raise ObjectChanged(info.key, f"read {count} bytes, the listing said {info.size}")


def stream(store: ObjectStore, items: Iterable[T], workers: int = 8, max_buffered_bytes: int = 64 << 20,
           small_workers: int | None = SMALL_WORKERS) -> Iterator[tuple[T, Pipe]]:
    """Yield ``(item, reader)`` for each item in order, downloading ahead of the reader.

    Up to ``2 * workers`` objects larger than ``SMALL_OBJECT_BYTES`` are in the window on
    ``workers`` threads, and up to ``2 * small_workers`` small ones on threads of their own
    (see :class:`Prefetcher`). An item is an ``ObjectInfo`` or anything with an ``info``
    attribute holding one. Read each reader before taking the next. Objects up to one chunk
    are read whole, with retries. When the generator is closed early or an exception
    propagates, queued downloads are cancelled and running ones are not waited for.
    """
    items = list(items)
    infos = [item if isinstance(item, ObjectInfo) else item.info for item in items]
    with Prefetcher(store, infos, ahead=2 * workers, workers=workers, max_buffered_bytes=max_buffered_bytes,
                    whole_max_bytes=CHUNK_BYTES, small_workers=small_workers) as fetch:
        for index, item in enumerate(items):
            with fetch.reader(index) as reader:
                yield item, reader
