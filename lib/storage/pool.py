"""Concurrent, bounded, retrying downloads of whole (small) objects, in listing order.

WAL segments are many and small; fetching them one by one makes per-request latency
dominate. ``prefetch`` keeps up to ``workers`` GETs in flight and a bounded number of
bytes buffered, and yields the objects in the order given so the caller can decode and
apply them while the next ones download.
"""
from __future__ import annotations

import random
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from queue import SimpleQueue
from typing import Callable, Iterable, Iterator, TypeVar

from lib.errors import ObjectNotFound, StorageError, StorageUnavailable
from lib.storage.base import ObjectInfo, ObjectStore

T = TypeVar("T")

A = TypeVar("A")

RETRY_ATTEMPTS = 4

RETRY_BASE_DELAY = 0.2

SIGNAL_POLL_SECONDS = 0.5  # how often a waiting main thread looks up, to run signal handlers (every sliced wait)


class ObjectChanged(ObjectNotFound):
    """The object read is not the one listed: Litestream replaced it after the listing.

    A kind of ``ObjectNotFound`` so that callers re-list, as they do for a vanished object;
    it is never evidence of damage.
    """

    def __init__(self, key: str, detail: str):
        StorageError.__init__(self, f"object {key} changed between listing and reading ({detail})")
        self.key = key


def fetch_whole(store: ObjectStore, info: ObjectInfo, attempts: int = RETRY_ATTEMPTS) -> bytes:
    """Read one object completely, re-fetching when the body comes back short or fails.

    A body whose size differs from the listing is never taken for corruption: a one-off
    difference is a transport problem (retried with backoff and jitter, then reported as
    ``StorageUnavailable``); the same different size twice in a row means the object was
    replaced (``ObjectChanged``). ``ObjectNotFound`` is not retried: the caller re-lists.
    """
    last: Exception | None = None
    previous_size: int | None = None
    for attempt in range(attempts):
        try:
            with store.open(info.key) as reader:
                data = reader.read()
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


def _info(item) -> ObjectInfo:
    return item if isinstance(item, ObjectInfo) else item.info


def prefetch(
    store: ObjectStore,
    items: Iterable[T],
    workers: int = 8,
    max_buffered_bytes: int = 64 << 20,
) -> Iterator[tuple[T, bytes]]:
    """Yield ``(item, data)`` for each item in order, downloading ahead concurrently.

    An item is an ``ObjectInfo`` or anything with an ``info`` attribute holding one.

    The caller waits for each download in short slices, so a signal handler (SIGTERM
    raising ``Interrupted``) runs within ``SIGNAL_POLL_SECONDS``, not when the download
    ends. When the generator is closed early or an exception propagates, queued downloads
    are cancelled and running ones are not waited for: they only fill memory that is then
    dropped, never a file, and a GET stuck on a slow server could otherwise delay the
    exit by minutes (read timeouts times retries).
    """
    pending: deque[tuple[T, Future[bytes]]] = deque()
    todo = iter(items)
    buffered = 0
    pool = _Downloads(max(1, workers))
    finished = False
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < workers * 2 and (buffered < max_buffered_bytes or not pending):
                item = next(todo, None)
                if item is None:
                    exhausted = True
                    break
                pending.append((item, pool.submit(fetch_whole, store, _info(item))))
                buffered += _info(item).size
            if not pending:
                finished = True
                return
            item, future = pending.popleft()
            data = sliced_result(future)
            buffered -= _info(item).size
            yield item, data
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=finished)


def map_sliced(fn: Callable[[A], T], items: Iterable[A], workers: int = 8) -> list[T]:
    """``[fn(item) for item in items]``, ``workers`` at a time on daemon threads.

    Waited for in short slices (signal handlers run meanwhile). When a call raises or a
    signal stops the caller, calls not yet started are cancelled and running ones are not
    waited for, like ``prefetch``'s downloads: ``fn`` must not write files.
    """
    pool = _Downloads(max(1, workers))
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


def in_background(fn: Callable[..., T], *args, name: str = "background") -> Future[T]:
    """Run ``fn(*args)`` on a daemon thread; wait for the returned Future with ``sliced_result``."""
    future: Future[T] = Future()
    threading.Thread(target=_run, args=(future, fn, args), name=name, daemon=True).start()
    return future


def sliced_result(future: Future[T]) -> T:
    """``future.result()``, waiting in short slices so that signal handlers run meanwhile."""
    while True:
        try:
            return future.result(timeout=SIGNAL_POLL_SECONDS)
        except FuturesTimeout:
            if future.done():  # finished just now, or the download itself raised TimeoutError
                return future.result()


class _Downloads:
    """A minimal pool of daemon download threads, one pool per ``prefetch`` call.

    ``ThreadPoolExecutor`` would not do: its threads are joined on shutdown and again at
    interpreter exit, so a download hanging on the server keeps an interrupted process
    alive. These threads only download into memory; abandoned, they end with their
    current request (bounded by the store's timeouts) and are never waited for.
    """

    def __init__(self, workers: int):
        self._workers = workers
        self._queue: SimpleQueue = SimpleQueue()
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
