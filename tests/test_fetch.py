"""``lib.storage.pool.stream`` against the real S3 server (moto) behind the fault proxy.

What the jobs rely on: objects come back in the order given, a signal handler runs while
the caller waits for a slow download (not when it ends), and stopping early (an exception,
or closing the generator) neither waits for a download stuck on the server nor starts the
queued ones. ``test_signals.py`` checks the same end to end with ``python -m jobs.restore``.
"""
from __future__ import annotations

import signal
import threading
import time

import pytest

from lib.storage.pool import SMALL_WORKERS, in_background, sliced_result, stream
from lib.storage.s3 import S3Settings, S3Store
from tests.support.faultproxy import FaultProxy, delay
from tests.test_signals import wait_until

OBJECTS = 6
STUCK_SECONDS = 60.0  # a download held back this long (the proxy releases it when the test is done)
# A wait for a held download would last until the S3 read timeout at least; not waiting takes
# milliseconds, more on a loaded machine. The bound only fails the test.
WAIT_BOUND_SECONDS = S3Settings.read_timeout / 2


class Poked(Exception):
    pass


@pytest.fixture
def bucket(s3_server) -> str:
    name = s3_server.make_bucket("fetch")
    client = s3_server.client()
    for n in range(OBJECTS):
        client.put_object(Bucket=name, Key=f"o/{n}", Body=body(n))
    return name


@pytest.fixture
def store(s3_server, bucket, proxy) -> S3Store:
    return S3Store(S3Settings(bucket=bucket, endpoint=proxy.endpoint, region=s3_server.region,
                              access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key))


def body(n: int) -> bytes:
    return b"%d" % n * (1000 + 100 * n)


def listed(store: S3Store):
    return sorted(store.list("o/"), key=lambda info: info.key)


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before`` and still alive, the proxy's connection handlers aside."""
    return [t for t in threading.enumerate()
            if t not in before and t.is_alive() and "process_request_thread" not in t.name]


def requested_keys(proxy: FaultProxy) -> set[str]:
    return {r.key for r in proxy.requests if r.method == "GET" and r.key}


def test_yields_every_object_in_the_order_given_within_the_byte_budget_and_leaves_no_thread(store):
    infos = listed(store)
    before = set(threading.enumerate())

    got = [(info.key, reader.read_all())
           for info, reader in stream(store, infos[::-1], workers=3, max_buffered_bytes=2500)]

    assert got == [(f"o/{n}", body(n)) for n in reversed(range(OBJECTS))]
    assert new_threads(before) == []


def test_signal_handler_runs_while_waiting_for_a_stuck_download_and_queued_ones_are_cancelled(store, proxy):
    """The signal is delivered to another thread, as the kernel may do with SIGTERM: only a
    sliced wait lets the main thread run the handler before the download ends."""
    assert threading.current_thread() is threading.main_thread()
    infos = listed(store)
    proxy.set_rules([delay(STUCK_SECONDS, method="GET", key=r"^o/0$")])
    before = set(threading.enumerate())
    sent_at: list[float] = []

    def poke_when_stuck() -> None:
        if proxy.wait_for(lambda p: p.matched("delay"), timeout=30):
            sent_at.append(time.monotonic())
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # delivered to this thread

    def raise_poked(signum, frame):
        raise Poked()

    previous = signal.signal(signal.SIGUSR1, raise_poked)
    poker = threading.Thread(target=poke_when_stuck, name="poker")
    try:
        poker.start()
        with pytest.raises(Poked):
            # one worker: o/0 is stuck on the server, o/1 waits in the queue
            next(stream(store, infos, workers=1, small_workers=1))[1].read_all()
        handled_at = time.monotonic()
        poker.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)

    assert sent_at, "the download of o/0 never reached the proxy"
    assert handled_at - sent_at[0] < WAIT_BOUND_SECONDS
    # the abandoned download of o/0 ends once the proxy lets go; o/1, queued, was never started
    proxy.stop()
    assert wait_until(lambda: not new_threads(before), timeout=30), new_threads(before)
    assert requested_keys(proxy) == {"o/0"}


def test_closing_early_does_not_wait_for_stuck_downloads_and_cancels_queued_ones(store, proxy):
    infos = listed(store)
    proxy.set_rules([delay(STUCK_SECONDS, method="GET", key=r"^o/[1-9]$")])  # only o/0 is fast
    before = set(threading.enumerate())

    objects = stream(store, infos, workers=2, small_workers=2)  # 4 submitted: o/0-o/1 running, o/2-o/3 queued
    info, reader = next(objects)
    assert (info, reader.read_all()) == (infos[0], body(0))
    # o/0's thread took o/2; wait until both stuck downloads are on the server (a loaded
    # machine may not have sent o/1's request yet), so closing has two to abandon
    assert proxy.wait_for(lambda p: requested_keys(p) >= {"o/1", "o/2"}, timeout=30), requested_keys(proxy)
    started = time.monotonic()
    objects.close()
    closed_in = time.monotonic() - started

    assert closed_in < WAIT_BOUND_SECONDS
    proxy.stop()  # the abandoned downloads end once the proxy lets go
    assert wait_until(lambda: not new_threads(before), timeout=30), new_threads(before)
    assert requested_keys(proxy) == {"o/0", "o/1", "o/2"}  # o/3, queued, was cancelled


def test_small_objects_download_many_at_once_beside_the_workers(s3_server, proxy):
    """On a distant bucket a GET of a tiny WAL segment is nearly all waiting: with only
    ``workers`` of them in flight, 10,000 segments took ~2.6x longer than 8 at a time should."""
    name = s3_server.make_bucket("window")
    client = s3_server.client()
    count = 2 * SMALL_WORKERS + 4
    for n in range(count):
        client.put_object(Bucket=name, Key=f"s/{n:03d}", Body=body(n % 10))
    store = S3Store(S3Settings(bucket=name, endpoint=proxy.endpoint, region=s3_server.region,
                               access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key))
    infos = store.list("s/")
    proxy.set_rules([delay(STUCK_SECONDS, method="GET")])

    def read_all() -> list[bytes]:
        return [reader.read_all() for _, reader in stream(store, infos, workers=1)]

    result = in_background(read_all)
    held_at_once = proxy.wait_for(lambda p: len(p.matched("delay")) >= SMALL_WORKERS)
    proxy.clear()
    proxy.release()

    assert held_at_once, f"only {len(proxy.matched('delay'))} GETs were in flight at once"
    assert sliced_result(result) == [body(n % 10) for n in range(count)]


def test_an_s3_client_pools_a_connection_for_every_download_thread_of_a_restore():
    """A full urllib3 pool closes the extra connections: each later GET would open (and, on
    TLS, handshake) a new one."""
    assert S3Settings(bucket="b").max_pool_connections >= 8 + SMALL_WORKERS
