"""Listing a prefix in key ranges, in parallel (issue 21, v0.5 segments): exactly the plain listing.

A real moto server holds a bucket laid out like a big v0.5 replica (level 0 with a few
thousand LTX files, the other levels, and keys that are not LTX files but sort among them,
at and around every boundary used below). Every way of listing it in ranges must give what a
plain sequential boto3 listing gives: the same keys, sizes, times and storage classes;
whatever boundaries are chosen, and a range that fails ends the listing as the plain listing
ends (the same StorageUnavailable), with no listing thread left running.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from lib.errors import Interrupted, StorageUnavailable
from lib.litestream import discover
from lib.litestream.v5.layout import level0_boundaries, level0_end
from lib.storage.base import ObjectInfo, select
from lib.storage.local import LocalStore
from lib.storage.ranges import list_ranges, split
from lib.storage.s3 import S3Settings, S3Store
from tests.support.faultproxy import FaultProxy, delay, forbidden

ROOT = "db/"
LEVEL0 = ROOT + "0000/"
L0_TXIDS = range(1, 1601)  # 1,600 level-0 files: a full page of S3's and more
BOUNDARY_TXIDS = (0x100, 0x3E8, 0x3E9, 0x3FF, 0x400, 0x5DC)  # at and around pages and guesses


def _ltx(level: int, low: int, high: int) -> str:
    return f"{ROOT}{level:04x}/{low:016x}-{high:016x}.ltx"


def _bucket_keys() -> dict[str, tuple[bytes, str | None]]:
    """Key -> (body, storage class) of the test bucket."""
    keys: dict[str, tuple[bytes, str | None]] = {}
    for txid in L0_TXIDS:
        keys[_ltx(0, txid, txid)] = (b"x" * (txid % 97), None)
    for txid in BOUNDARY_TXIDS:  # keys exactly at a boundary, just before and just after it
        at = f"{LEVEL0}{txid:016x}"
        keys[at] = (b"at", None)
        keys[at[:-1] + chr(ord(at[-1]) - 1) + "~"] = (b"before", None)
        keys[at + "0"] = (b"after", "STANDARD_IA")
        keys[at + "-" + "f" * 16 + ".ltx.tmp"] = (b"tmp", None)
    for level, low, high in ((1, 1, 1500), (1, 1501, 1590), (2, 1, 1400), (9, 1, 1000)):
        keys[_ltx(level, low, high)] = (b"y" * level, "GLACIER" if level == 9 else None)
    for other in ("db/0000.tmp", "db/0000", "db/00000", "db/0000-x", "db/0000/zzz.tmp", "db/0000/",
                  "db/0001/notes.txt", "db/generations/abc/wal/00000000_00000000.wal.lz4", "db/zzz",
                  "db/\u00e9t\u00e9", "dc/0000/0000000000000001-0000000000000001.ltx", "db", "da/x"):
        keys[other] = (b"other", None)
    return keys


@pytest.fixture(scope="module")
def bucket(s3_server):
    """A fresh bucket holding :func:`_bucket_keys`, uploaded once for the module."""
    name = s3_server.make_bucket("ranges")
    client = s3_server.client()

    def put(item):
        key, (body, storage_class) = item
        extra = {"StorageClass": storage_class} if storage_class else {}
        client.put_object(Bucket=name, Key=key, Body=body, **extra)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, _bucket_keys().items()))
    return name


def _store(s3_server, bucket: str, endpoint: str | None = None) -> S3Store:
    return S3Store(S3Settings(bucket=bucket, endpoint=endpoint or s3_server.endpoint, region=s3_server.region,
                              access_key_id=s3_server.access_key_id,
                              secret_access_key=s3_server.secret_access_key, max_attempts=1))


def _plain(s3_server, bucket: str, prefix: str = ROOT) -> list[tuple]:
    """A plain sequential boto3 listing: (key, size, time, storage class) per object."""
    out = []
    for page in s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out.append((item["Key"], item["Size"], item["LastModified"].astimezone(timezone.utc),
                        item.get("StorageClass")))
    return out


def _rows(objects: list[ObjectInfo]) -> list[tuple]:
    return [(o.key, o.size, o.last_modified, o.storage_class) for o in objects]


def _boundary(txid: int) -> str:
    return f"{LEVEL0}{txid:016x}"


def _listing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("list_")]


def test_the_bucket_holds_keys_around_every_boundary(s3_server, bucket):
    keys = [row[0] for row in _plain(s3_server, bucket)]
    assert len(keys) > 1600 and keys == sorted(keys)
    for txid in BOUNDARY_TXIDS:
        at = keys.index(_boundary(txid))
        assert keys[at - 1] < _boundary(txid) < keys[at + 1]


@pytest.mark.parametrize("start_after, stop_after, limit", [
    (None, None, None), (None, None, 1000), (None, None, 1), (_boundary(0x3E8), None, None),
    (_boundary(0x3E8), _boundary(0x3FF), None), (_boundary(0x3E8), _boundary(0x400), 5),
    (None, _boundary(0x100), None), ("db/00000", None, 3), ("db/0000/", "db/00000", None),
    (_boundary(0x400), _boundary(0x400), None), (_boundary(0x400), _boundary(0x100), None),
    ("db/zzz", None, None), (None, "da", None), (_boundary(0x3E8) + "0", _boundary(0x3E9), 2000),
])
def test_one_range_is_the_plain_listing_cut_to_it(s3_server, bucket, start_after, stop_after, limit):
    expected = _rows(select(_as_infos(_plain(s3_server, bucket)), start_after, stop_after, limit))
    got = _store(s3_server, bucket).list(ROOT, start_after, stop_after, limit)
    assert _rows(got) == expected


def _as_infos(rows: list[tuple]) -> list[ObjectInfo]:
    return [ObjectInfo(*row) for row in rows]


@pytest.mark.parametrize("boundaries", [
    [_boundary(t) for t in BOUNDARY_TXIDS],  # on existing keys and page edges
    [_boundary(t) for t in (0x200, 0x300, 0x500, 0x600)],  # TXID guesses, as discover makes them
    ["db/zzzz", "dz", "\U0010ffff"],  # all beyond the last key
    ["", "a", "d", "db", "db/"],  # all before the first key
    [_boundary(0x400)] * 3 + [_boundary(0x100), _boundary(0x3FF)],  # duplicates, unsorted
    ["db/00000", "db/0000/", "db/0000", "db/0001/", "db/generations/"],  # on the edges of levels
])
def test_any_boundaries_give_exactly_the_plain_listing(s3_server, bucket, boundaries):
    got = list_ranges(_store(s3_server, bucket), ROOT, split(None, boundaries))
    assert _rows(got) == _plain(s3_server, bucket)


def test_split_covers_the_whole_range_once():
    assert split(None, []) == [(None, None)]
    assert split("b", ["c", "a", "c", "b", "e"], "d") == [("b", "c"), ("c", "d")]
    assert split("b", ["z"], "d") == [("b", "d")]


@pytest.mark.parametrize("page, splits", [(1000, False), (100, True)])  # S3's pages, and a server's smaller ones
def test_discover_lists_a_big_level0_in_ranges_and_exactly(s3_server, bucket, page, splits):
    with FaultProxy(s3_server.endpoint) as proxy:
        store = _store(s3_server, bucket, proxy.endpoint)
        store.list_page_size = page
        got = discover._list_prefixes(store, ["db/generations/", ROOT], ROOT)
        listings = [r for r in proxy.requests if r.key == ""]
    assert _rows(got) == _plain(s3_server, bucket)
    level0_starts = [r.query for r in listings if "start-after=db%2F0000%2F0" in r.query]
    sequential_pages = -(-len(got) // page)
    assert len(listings) <= sequential_pages + discover.MOST_RANGES + 1
    if splits:  # level 0 in MOST_RANGES ranges listed at once, each a few pages
        assert len(level0_starts) >= discover.MOST_RANGES
        assert len(listings) > sequential_pages


@pytest.mark.parametrize("prefixes, level0_root", [([ROOT], None), (["db/0000/"], "db/0000/"), (["db/0"], "db/0")])
def test_discover_lists_any_other_big_root_exactly(s3_server, bucket, prefixes, level0_root):
    """A root that is no v0.5 replica's (a v0.3 one), or whose first page ends past level 0:
    the rest after the first page, one page a request."""
    store = _store(s3_server, bucket)
    store.list_page_size = 100
    assert _rows(discover._list_prefixes(store, prefixes, level0_root)) == _plain(s3_server, bucket, prefixes[0])


def test_a_replica_of_one_page_is_listed_with_one_request(s3_server):
    name = s3_server.make_bucket("small")
    client = s3_server.client()
    for txid in range(1, 11):
        client.put_object(Bucket=name, Key=_ltx(0, txid, txid), Body=b"x")
    with FaultProxy(s3_server.endpoint) as proxy:
        got = discover._list_prefixes(_store(s3_server, name, proxy.endpoint), ["db/generations/", ROOT], ROOT)
        assert len([r for r in proxy.requests if r.key == ""]) == 1
    assert _rows(got) == _plain(s3_server, name)


def test_level0_boundaries_split_the_txids_after_the_first_page():
    first = [ObjectInfo(_ltx(0, t, t), 1, _now()) for t in range(1, 1001)]
    higher = [ObjectInfo(_ltx(1, 1, 4000), 1, _now()), ObjectInfo("db/0001/junk", 1, _now())]
    cuts = level0_boundaries(ROOT, first, higher, 1000, 4)
    assert cuts == [_boundary(t) for t in (1980, 2960)]  # a page each, cut a little short
    # six pages in four ranges: two pages, two pages, one, one
    assert level0_boundaries(ROOT, first, higher, 500, 4) == [_boundary(t) for t in (1980, 2960, 3450)]
    assert level0_boundaries(ROOT, first, [], 1000, 4) == []  # nothing to go by
    assert level0_boundaries(ROOT, first, [ObjectInfo(_ltx(1, 1, 1200), 1, _now())], 1000, 4) == []
    assert level0_end(ROOT) > _ltx(0, 2**64 - 1, 2**64 - 1) and level0_end(ROOT) < "db/0001/"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _failure(s3_server, bucket: str, rule, lister) -> str:
    with FaultProxy(s3_server.endpoint) as proxy:
        proxy.set_rules([rule])
        store = _store(s3_server, bucket, proxy.endpoint)
        store.list_page_size = 100  # level 0 in four ranges, each several pages
        with pytest.raises(StorageUnavailable) as caught:
            lister(store)
        assert proxy.matched()
    return str(caught.value).replace(proxy.endpoint, "ENDPOINT")


@pytest.mark.parametrize("rule", [
    forbidden(method="GET", key=r"^$", query=r"start-after=db%2F0000%2F00000000000004"),  # pages of two ranges
    forbidden(method="GET", key=r"^$", query=r"start-after=db%2F00000"),  # the levels above 0
])
def test_a_failing_range_fails_the_listing_as_the_plain_listing_fails(s3_server, bucket, rule):
    plain = _failure(s3_server, bucket, forbidden(method="GET", key=r"^$"), lambda store: store.list(ROOT))
    ranged = _failure(s3_server, bucket, rule,
                      lambda store: discover._list_prefixes(store, ["db/generations/", ROOT], ROOT))
    assert ranged == plain and "AccessDenied" in plain
    assert _listing_threads() == []


def test_the_second_list_request_failing_fails_the_listing(s3_server, bucket):
    second = forbidden(method="GET", key=r"^$", count=1)
    with FaultProxy(s3_server.endpoint) as proxy:
        store = _store(s3_server, bucket, proxy.endpoint)
        store.list(ROOT, limit=1)  # the first list request passes
        proxy.set_rules([second])
        with pytest.raises(StorageUnavailable, match="AccessDenied"):
            list_ranges(store, ROOT, split(None, [_boundary(t) for t in (0x200, 0x400)]))
    assert _listing_threads() == []


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_a_signal_stops_a_parallel_listing_at_once(s3_server, bucket):
    def interrupted(signum, frame):
        raise Interrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        with FaultProxy(s3_server.endpoint) as proxy:
            proxy.set_rules([delay(120, method="GET", key=r"^$")])
            store = _store(s3_server, bucket, proxy.endpoint)
            killer = threading.Thread(target=lambda: proxy.wait_for(lambda p: len(p.matched("delay")) >= 3)
                                      and os.kill(os.getpid(), signal.SIGTERM))
            killer.start()
            started = time.monotonic()
            with pytest.raises(Interrupted):
                list_ranges(store, ROOT, split(None, [_boundary(t) for t in (0x200, 0x400)]))
            assert time.monotonic() - started < 60  # not the 120 s the held requests take
            killer.join()
            proxy.release()  # the held requests go on; their threads see the stop and end
            for thread in _listing_threads():
                thread.join(60)
            assert _listing_threads() == []
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_folder_lists_ranges_by_selecting_them(tmp_path):
    for name in ("ltx/0/a.ltx", "ltx/0/b.ltx", "ltx/1/c.ltx", "generations/x"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"1")
    store = LocalStore(tmp_path)
    assert [o.key for o in store.list("ltx/", "ltx/0/a.ltx", "ltx/1/c.ltx")] == ["ltx/0/b.ltx", "ltx/1/c.ltx"]
    assert [o.key for o in store.list("", limit=2)] == ["generations/x", "ltx/0/a.ltx"]
    assert [o.key for o in list_ranges(store, "ltx/", split(None, ["ltx/0/b.ltx", "ltx/0/"]))] == \
        ["ltx/0/a.ltx", "ltx/0/b.ltx", "ltx/1/c.ltx"]
