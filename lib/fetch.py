"""Concurrent, bounded, retrying downloads of whole (small) objects, in listing order.

WAL segments are many and small; fetching them one by one makes per-request latency
dominate. ``prefetch`` keeps up to ``workers`` GETs in flight and a bounded number of
bytes buffered, and yields the objects in the order given so the caller can decode and
apply them while the next ones download.
"""
from __future__ import annotations

import random
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Iterator, TypeVar

from lib.errors import ObjectNotFound, StorageError, StorageUnavailable
from lib.storage import ObjectInfo, ObjectStore

T = TypeVar("T")
RETRY_ATTEMPTS = 4
RETRY_BASE_DELAY = 0.2


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
    """
    pending: deque[tuple[T, Future[bytes]]] = deque()
    todo = iter(items)
    buffered = 0
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fetch") as pool:
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
                    return
                item, future = pending.popleft()
                data = future.result()
                buffered -= _info(item).size
                yield item, data
        finally:
            for _, future in pending:
                future.cancel()
