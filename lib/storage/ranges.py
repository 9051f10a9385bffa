"""Listing a prefix as several key ranges at once, merged into the one sorted listing.

A range is ``(start_after, stop_after]`` (None: that side open). Ranges that partition the
key space (:func:`split`) give exactly the plain listing whatever their boundaries: a
boundary guessed badly costs balance between the ranges, never a key. This rests on the
store ordering keys as S3 specifies (UTF-8 binary order, which ``StartAfter`` is defined by). Each range is listed
page by page on a daemon thread (one store, shared: botocore clients are thread-safe); the
first error stops the others at their next page, is waited out (at most one request each)
and raised as it came, so a failed listing reads as the sequential one's would. A signal
(``Interrupted`` from the waiting thread's handler) leaves at once: the threads only fill
memory and end with their current request.
"""
from __future__ import annotations

import threading
from typing import Sequence

from lib.storage.base import ObjectInfo, ObjectStore, empty_range, list_page_size
from lib.storage.waits import sliced_wait

Range = tuple[str | None, str | None]  # (start_after, stop_after]


def split(start_after: str | None, boundaries: Sequence[str], stop_after: str | None = None) -> list[Range]:
    """``(start_after, b1], (b1, b2], ..., (bn, stop_after]``: the boundaries sorted and
    deduplicated, those outside the whole range dropped, so the union is exactly
    ``(start_after, stop_after]`` and no two ranges share a key."""
    inner = sorted({b for b in boundaries if not empty_range(start_after, b) and not empty_range(b, stop_after)})
    edges: list[str | None] = [start_after, *inner, stop_after]
    return list(zip(edges[:-1], edges[1:]))


def list_ranges(store: ObjectStore, prefix: str, ranges: Sequence[Range]) -> list[ObjectInfo]:
    """Every object under ``prefix`` in any of ``ranges`` (pairwise disjoint), sorted by key.

    One range is listed on the calling thread; several, each on a thread of its own.
    """
    page = list_page_size(store) or None
    if len(ranges) <= 1:
        return [o for start, stop in ranges for o in _list_range(store, prefix, start, stop, page, None)]
    run = _Run(len(ranges))
    threads = [threading.Thread(target=run.work, args=(i, store, prefix, start, stop, page),
                                name=f"list_{i}", daemon=True) for i, (start, stop) in enumerate(ranges)]
    for thread in threads:
        thread.start()
    try:
        sliced_wait(run.finished.wait)
    except BaseException:
        run.stop.set()  # interrupted: the threads end with their current request, not waited for
        raise
    if run.error is not None:
        run.stop.set()
        for thread in threads:
            sliced_wait(lambda timeout, t=thread: _joined(t, timeout))
        raise run.error
    return sorted((o for part in run.results for o in part), key=lambda o: o.key)


def _list_range(store: ObjectStore, prefix: str, start_after: str | None, stop_after: str | None,
                page: int | None, stop: threading.Event | None) -> list[ObjectInfo]:
    """One range, a page per call (``stop`` is looked at between pages); whole when ``page`` is None."""
    if page is None:
        return store.list(prefix, start_after, stop_after)
    found: list[ObjectInfo] = []
    cursor = start_after
    while stop is None or not stop.is_set():
        batch = store.list(prefix, cursor, stop_after, page)
        found.extend(batch)
        if len(batch) < page:
            break
        cursor = batch[-1].key
    return found


def _joined(thread: threading.Thread, timeout: float) -> bool:
    thread.join(timeout)
    return not thread.is_alive()


class _Run:
    """The shared state of one parallel listing: results by range, the first error, the end."""

    def __init__(self, count: int):
        self.results: list[list[ObjectInfo]] = [[] for _ in range(count)]
        self.error: BaseException | None = None
        self.stop = threading.Event()  # set: no range starts another page
        self.finished = threading.Event()  # set: every range done, or one failed
        self._left = count
        self._lock = threading.Lock()

    def work(self, index: int, store: ObjectStore, prefix: str, start_after: str | None,
             stop_after: str | None, page: int | None) -> None:
        try:
            self.results[index] = _list_range(store, prefix, start_after, stop_after, page, self.stop)
        except BaseException as exc:
            with self._lock:
                if self.error is None:
                    self.error = exc
            self.stop.set()
            self.finished.set()
            return
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self.finished.set()
