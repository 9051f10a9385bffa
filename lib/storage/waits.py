"""Waiting that lets signal handlers run, and daemon threads that an interrupted process does not wait for.

Every wait here is sliced (``SIGNAL_POLL_SECONDS``), so a signal handler (SIGTERM raising
``Interrupted``) runs at once on the waiting thread. The threads are daemons and never
joined after an error or a signal: the work given to them must fill only memory, never a file.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")

A = TypeVar("A")

SIGNAL_POLL_SECONDS = 0.5  # how often a waiting thread looks up, to run signal handlers (every sliced wait)


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
