"""The one download pool: objects fetched ahead of their reader on daemon threads, bounded in memory.

Both restorers read objects in plan order: v0.3 many small WAL segments after a big
snapshot, v0.5 LTX files of any size. :class:`Prefetcher` keeps a window of objects
downloading ahead of the reader, each flowing through its own :class:`Pipe`, a bounded
queue of chunks, so a big object never sits in memory whole while the next few small
ones arrive during its apply. An object streams chunk by chunk, and a failed body fails
the read (the caller's attempt is retried as a whole); when asked (``whole_max_bytes``),
one no larger than that is read whole and re-read when its body fails or comes back
short (:func:`fetch_whole`), which saves many small WAL segments a whole new attempt.

Every wait is sliced (``SIGNAL_POLL_SECONDS``), so a signal handler (SIGTERM raising
``Interrupted``) runs at once on the waiting thread; downloads run on daemon threads that
an error or a signal does not wait for: they fill only memory, never a file.
"""
from __future__ import annotations

import queue
import random
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence, TypeVar

from lib.errors import ObjectNotFound, StorageError, StorageUnavailable
from lib.storage.base import ObjectInfo, ObjectStore

T = TypeVar("T")

A = TypeVar("A")

RETRY_ATTEMPTS = 4  # reads of one whole (small) object before giving up

RETRY_BASE_DELAY = 0.2

SIGNAL_POLL_SECONDS = 0.5  # how often a waiting thread looks up, to run signal handlers (every sliced wait)

CHUNK_BYTES = 1 << 20  # bytes per read from the store; an object up to this size is read whole

PIPE_CHUNKS = 4  # chunks buffered per object

PIPE_BYTES = PIPE_CHUNKS * CHUNK_BYTES  # the most one object holds in memory while it waits for its reader

PREFETCH_OBJECTS = 4  # objects downloading at once by default (the one being read included)


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


# --------------------------------------------------------------------------- sliced waits


def sliced_result(future: Future[T]) -> T:
    """``future.result()``, waiting in short slices so that signal handlers run meanwhile."""
    while True:
        try:
            return future.result(timeout=SIGNAL_POLL_SECONDS)
        except FuturesTimeout:
            if future.done():  # finished just now, or the call itself raised TimeoutError
                return future.result()


def sliced_wait(wait: Callable[[float], bool]) -> None:
    """Call ``wait(timeout)`` (an ``Event.wait``, a join that says whether it ended) until it returns True."""
    while not wait(SIGNAL_POLL_SECONDS):
        pass


def in_background(fn: Callable[..., T], *args, name: str = "background") -> Future[T]:
    """Run ``fn(*args)`` on a daemon thread; wait for the returned Future with ``sliced_result``."""
    future: Future[T] = Future()
    threading.Thread(target=_run, args=(future, fn, args), name=name, daemon=True).start()
    return future


def map_sliced(fn: Callable[[A], T], items: Iterable[A], workers: int = 8) -> list[T]:
    """``[fn(item) for item in items]``, ``workers`` at a time on daemon threads.

    Waited for in short slices (signal handlers run meanwhile). When a call raises or a
    signal stops the caller, calls not yet started are cancelled and running ones are not
    waited for: ``fn`` must not write files.
    """
    pool = Downloads(max(1, workers))
    futures = [pool.submit(fn, item) for item in items]
    finished = False
    try:
        results = [sliced_result(future) for future in futures]
        finished = True
        return results
    finally:
        for future in futures:
            future.cancel()
        pool.shutdown(wait=finished)


class Downloads:
    """A minimal pool of daemon threads.

    ``ThreadPoolExecutor`` would not do: its threads are joined on shutdown and again at
    interpreter exit, so a download hanging on the server keeps an interrupted process
    alive. These threads only download into memory; abandoned, they end with their
    current request (bounded by the store's timeouts) and are never waited for.
    """

    def __init__(self, workers: int):
        self._workers = workers
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., T], *args) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, fn, args))
        if len(self._threads) < self._workers:
            thread = threading.Thread(target=self._work, name=f"fetch_{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return future

    def shutdown(self, wait: bool) -> None:
        """Let every thread end once the queue is drained; ``wait`` joins them (all idle then)."""
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            _run(*task)
            task = None  # an idle thread keeps no downloaded body alive


def _run(future: Future[T], fn: Callable[..., T], args: tuple) -> None:
    if not future.set_running_or_notify_cancel():
        return  # cancelled while queued
    try:
        result = fn(*args)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


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

    At most ``ahead`` objects are downloading or waiting to be read, on ``workers``
    threads (default ``ahead``), and no more than ``max_buffered_bytes`` of them, each
    counted at most ``PIPE_BYTES`` (the object being read is always started). Objects up
    to ``whole_max_bytes`` (at most ``CHUNK_BYTES``) are read whole, with retries. Take
    the readers in order with :meth:`reader`; use it as a context manager.
    """

    def __init__(self, store: ObjectStore, infos: Sequence[ObjectInfo], ahead: int = PREFETCH_OBJECTS,
                 workers: int | None = None, max_buffered_bytes: int | None = None, whole_max_bytes: int = 0):
        self._store = store
        self._infos = list(infos)
        self._ahead = max(1, ahead)
        self._budget = max_buffered_bytes
        self._whole_max = min(whole_max_bytes, CHUNK_BYTES)
        self._pool = Downloads(max(1, workers or self._ahead))
        self._futures: list[Future | None] = []
        self._pipes: list[Pipe | None] = []
        self._released = 0  # pipes before this index are forgotten (see _release_before)
        self._released_bytes = 0
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
        self._pool.shutdown(wait=exc_type is None)

    @property
    def bytes_downloaded(self) -> int:
        return self._released_bytes + sum(pipe.bytes for pipe in self._pipes[self._released:])

    def reader(self, index: int) -> Pipe:
        """The reader for ``infos[index]`` (take them in order); starts the next downloads."""
        self._release_before(index)
        while len(self._pipes) < len(self._infos) and self._may_start(index, len(self._pipes)):
            pipe = Pipe()
            self._futures.append(self._pool.submit(self._download, self._infos[len(self._pipes)], pipe))
            self._pipes.append(pipe)
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

    def _may_start(self, index: int, n: int) -> bool:
        if n <= index:
            return True
        if n >= index + self._ahead:
            return False
        if self._budget is None:
            return True
        waiting = sum(min(info.size, PIPE_BYTES) for info in self._infos[index:n + 1])
        return waiting <= self._budget

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


def stream(store: ObjectStore, items: Iterable[T], workers: int = 8,
           max_buffered_bytes: int = 64 << 20) -> Iterator[tuple[T, Pipe]]:
    """Yield ``(item, reader)`` for each item in order, downloading up to ``2 * workers`` ahead.

    An item is an ``ObjectInfo`` or anything with an ``info`` attribute holding one. Read
    each reader before taking the next. Objects up to one chunk are read whole, with
    retries. When the generator is closed early or an exception propagates, queued
    downloads are cancelled and running ones are not waited for.
    """
    items = list(items)
    infos = [item if isinstance(item, ObjectInfo) else item.info for item in items]
    with Prefetcher(store, infos, ahead=2 * workers, workers=workers, max_buffered_bytes=max_buffered_bytes,
                    whole_max_bytes=CHUNK_BYTES) as fetch:
        for index, item in enumerate(items):
            with fetch.reader(index) as reader:
                yield item, reader
