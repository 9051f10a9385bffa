"""Streaming downloads of a few large objects at once, chunk by chunk, bounded in memory (v0.5 LTX files)."""
from __future__ import annotations

import queue
from concurrent.futures import Future
from typing import Sequence

from lib.storage.base import ObjectStore
from lib.storage.pool import SIGNAL_POLL_SECONDS, in_background, sliced_result

PREFETCH_OBJECTS = 4  # objects downloading at once (the one being applied included)

PREFETCH_CHUNK = 1 << 20  # bytes per read from the store

PREFETCH_CHUNKS_AHEAD = 4  # chunks buffered per object: at most ~20 MiB in flight in total

# --------------------------------------------------------------------------- download


class _Pipe:
    """The consumer end of one object being downloaded by a background pump.

    A raw reader (``read(n)`` may return fewer bytes; ``b""`` at the end). Errors the pump
    met (``ObjectNotFound``, ``StorageUnavailable``) are raised here, on read. Closing it
    tells the pump to stop.
    """

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=PREFETCH_CHUNKS_AHEAD)
        self.closed = False
        self.bytes = 0
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

    def _next_item(self):
        """The next queued chunk, waiting in short slices so that signal handlers run meanwhile."""
        while True:
            try:
                return self.queue.get(timeout=SIGNAL_POLL_SECONDS)
            except queue.Empty:
                continue

    def close(self) -> None:
        """Stop the download and drop what is queued, so a blocked pump can finish."""
        self.closed = True
        self._chunk = b""  # the prefetcher keeps every pipe: don't let each keep its last chunk
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return

    def __enter__(self) -> "_Pipe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Prefetcher:
    """Download the plan's objects in order, ``ahead`` at a time.

    Each object streams through a small bounded queue, so a big snapshot never sits in
    memory whole, while the next few small files arrive during its apply.
    """

    def __init__(self, store: ObjectStore, keys: Sequence[str], ahead: int = PREFETCH_OBJECTS):
        self._store = store
        self._keys = list(keys)
        self._ahead = max(1, ahead)
        self._pumps: list[Future] = []
        self._pipes: list[_Pipe] = []
        self.objects_read = 0

    def __enter__(self) -> "_Prefetcher":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        """Stop every download. After an error or a signal, a pump stuck in a slow GET is not
        waited for (it fills only its pipe, never a file, and is a daemon thread)."""
        for pipe in self._pipes:
            pipe.close()
        if exc_type is None:
            for pump in self._pumps:
                sliced_result(pump)

    @property
    def bytes_downloaded(self) -> int:
        return sum(pipe.bytes for pipe in self._pipes)

    def reader(self, index: int) -> _Pipe:
        """The reader for ``keys[index]`` (take them in order); starts the next downloads."""
        while len(self._pipes) < min(len(self._keys), index + self._ahead):
            pipe = _Pipe()
            self._pumps.append(in_background(self._pump, self._keys[len(self._pipes)], pipe, name="ltx-fetch"))
            self._pipes.append(pipe)
        self.objects_read = max(self.objects_read, index + 1)
        return self._pipes[index]

    def _pump(self, key: str, pipe: _Pipe) -> None:
        try:
            with self._store.open(key) as source:
                while not pipe.closed:
                    chunk = source.read(PREFETCH_CHUNK)
                    self._put(pipe, chunk)
                    if not chunk:
                        return
        except BaseException as exc:  # handed to the consumer, raised on its next read
            self._put(pipe, exc)

    @staticmethod
    def _put(pipe: _Pipe, item) -> None:
        while not pipe.closed:
            try:
                pipe.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
