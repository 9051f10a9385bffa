"""Native v0.5 restore: key layout, restore plan, apply, and damage to real replicas.

Real replicas come from the shared session fixtures (``v5_file_replica``, ``v5_s3_replica``,
``clone``); the reference for every byte-identical check is ``litestream restore`` 0.5.17
run on the same replica with the same target. Synthetic replicas are written with
``tests.test_ltx.encode_ltx`` where Litestream can't be made to produce the case.
"""
from __future__ import annotations

import json
import os
import random
import sqlite3
import struct
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.litestream.v5 import layout as r5_layout, restore as r5_restore
from lib.storage import pool
from lib.errors import ObjectNotFound, StorageUnavailable
from lib.litestream.v5.ltx import LtxDecoder
from lib.litestream.sqlite import lock_pgno
from lib.litestream.outcome import RestoreTarget
from lib.litestream.discover import list_replica
from lib.litestream.v5.layout import LtxFile, V5State, parse_ltx_name, parse_v5_listing, v5_prefix
from lib.litestream.v5.plan import plan_v5
from lib.litestream.v5.restore import restore_v5
from lib.storage.local import LocalStore
from lib.storage.base import ObjectInfo
from lib.storage.s3 import S3Settings, S3Store
from tests.support.litestream import V5, Replicator, run_litestream
from tests.support.replicas import (
    database_row_counts,
    delete_object,
    integrity_check,
    litestream_restore,
    read_object,
    replica_listing,
    sha256_file,
    write_object,
)
from tests.test_ltx import encode_ltx, page_bytes

LATEST = RestoreTarget()
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# ============================================================================ layout


@pytest.mark.parametrize("replica_type, path, prefix", [
    ("s3", "backups/app.db", "backups/app.db/"),
    ("s3", "", "/"),  # config without path: keys start with a slash [obs]
    ("s3", ".", "./"),  # URL s3://bucket without a path [obs]
    ("s3", "a/", "a//"),  # trailing slash kept verbatim
    ("s3", "/lead", "/lead/"),
    ("file", "/var/backups/app", "ltx/"),  # the LocalStore is rooted at the replica directory
])
def test_v5_prefix_is_plain_concatenation(replica_type, path, prefix):
    assert v5_prefix(replica_type, path) == prefix


@pytest.mark.parametrize("replica_type, path, key, level", [
    ("s3", "", "/0009/", 9), ("s3", "x", "x/0001/", 1), ("file", "/r", "ltx/9/", 9)])
def test_level_prefixes_match_litestream(replica_type, path, key, level):
    key += r5_layout.format_ltx_name(1, 1)
    state = parse_v5_listing([ObjectInfo(key, 1, T0)], v5_prefix(replica_type, path), replica_type)
    assert [(f.key, f.level) for f in state.files()] == [(key, level)]


def _info(key: str, when: datetime = T0, size: int = 100) -> ObjectInfo:
    return ObjectInfo(key, size, when)


@pytest.mark.parametrize("prefix, replica_type, level_dirs", [
    ("/", "s3", ("0000", "0001", "0009")),
    ("./", "s3", ("0000", "0001", "0009")),
    ("a//", "s3", ("0000", "0001", "0009")),
    ("backups/app.db/", "s3", ("0000", "0001", "0009")),
    ("ltx/", "file", ("0", "1", "9")),
])
def test_listing_is_grouped_by_level_and_sorted(prefix, replica_type, level_dirs):
    keys = [
        f"{prefix}{level_dirs[1]}/0000000000000004-0000000000000006.ltx",
        f"{prefix}{level_dirs[0]}/000000000000000a-000000000000000a.ltx",
        f"{prefix}{level_dirs[0]}/0000000000000009-0000000000000009.ltx",
        f"{prefix}{level_dirs[2]}/0000000000000001-0000000000000008.ltx",
        f"{prefix}{level_dirs[2]}/0000000000000001-0000000000000003.ltx",
    ]
    state = parse_v5_listing([_info(k) for k in keys], prefix, replica_type)
    assert [(f.min_txid, f.max_txid) for f in state.levels[0]] == [(9, 9), (10, 10)]
    assert [(f.min_txid, f.max_txid) for f in state.levels[1]] == [(4, 6)]
    assert [(f.min_txid, f.max_txid) for f in state.snapshots] == [(1, 3), (1, 8)]
    assert state.ignored == [] and state.max_txid == 10


def test_keys_litestream_would_not_read_are_ignored():
    prefix = "app/"
    good = "app/0000/0000000000000001-0000000000000001.ltx"
    odd = [
        "app/0000/0000000000000001-0000000000000001.ltx.tmp",
        "app/0000/000000000000000A-000000000000000A.ltx",  # upper case
        "app/0000/1-1.ltx",
        "app/000a/0000000000000001-0000000000000001.ltx",  # level 10
        "app/0/0000000000000001-0000000000000001.ltx",  # file spelling on S3
        "app/0000/sub/0000000000000001-0000000000000001.ltx",
        "app/generations/0123456789abcdef/snapshots/00000000.snapshot.lz4",
        "app/0000",
        "other/0000/0000000000000001-0000000000000001.ltx",
    ]
    state = parse_v5_listing([_info(k) for k in [good, *odd]], prefix, "s3")
    assert [f.key for f in state.files()] == [good]
    assert state.ignored == odd


def test_without_a_replica_type_both_level_spellings_are_read():
    state = parse_v5_listing([_info("ltx/0/0000000000000001-0000000000000001.ltx"),
                              _info("ltx/0001/0000000000000001-0000000000000002.ltx")], "ltx/")
    assert [(f.level, f.max_txid) for f in state.files()] == [(0, 1), (1, 2)]


def test_ltx_names():
    assert parse_ltx_name("00000000000000ff-0000000000000100.ltx") == (0xFF, 0x100)
    assert parse_ltx_name("00000000000000ff-0000000000000100.ltx.tmp") is None
    assert parse_ltx_name("ff-100.ltx") is None
    assert r5_layout.format_ltx_name(0xFF, 0x100) == "00000000000000ff-0000000000000100.ltx"


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet="0123456789abcdefABx-./_ltx", max_size=60), max_size=20),
       st.sampled_from(["", "/", "./", "ltx/", "a//"]), st.sampled_from([None, "s3", "file"]))
def test_key_parser_never_raises_and_keeps_every_key(keys, prefix, replica_type):
    state = parse_v5_listing([_info(k) for k in keys], prefix, replica_type)
    files = state.files()
    assert len(files) + len(state.ignored) == len(keys)
    for f in files:
        assert f.key.startswith(prefix) and f.key.endswith(f.name) and 0 <= f.level <= 9
    for name in keys:
        parsed = parse_ltx_name(name)
        assert parsed is None or r5_layout.format_ltx_name(*parsed) == name


# ============================================================================ plan

def state_of(*specs: str, prefix: str = "ltx/") -> V5State:
    """``"L0 5"``, ``"L1 4-6"``, ``"L9 1-8 @30"`` (time = T0 + 30 s) -> a state."""
    infos = []
    for n, spec in enumerate(specs):
        parts = spec.split()
        level = int(parts[0][1:])
        lo, _, hi = parts[1].partition("-")
        lo, hi = int(lo, 16), int(hi or lo, 16)
        seconds = int(parts[2][1:]) if len(parts) > 2 else n
        key = f"{prefix}{level}/{r5_layout.format_ltx_name(lo, hi)}"
        infos.append(_info(key, T0 + timedelta(seconds=seconds)))
    return parse_v5_listing(infos, prefix, "file")


def names(plan: list[LtxFile]) -> list[str]:
    return [f"L{f.level} {f.min_txid:x}-{f.max_txid:x}" for f in plan]


PLAN_CASES = [
    # (files, target, expected plan, expected finding kinds)
    (["L9 1-4", "L0 5", "L0 6", "L0 7"], LATEST, ["L9 1-4", "L0 5-5", "L0 6-6", "L0 7-7"], []),
    (["L0 1", "L0 2", "L0 3"], LATEST, ["L0 1-1", "L0 2-2", "L0 3-3"], []),
    # overlap with the snapshot is normal (snapshot 1-c6 then L2 bd-d6) [obs]
    (["L9 1-c6", "L2 bd-d6", "L0 d7"], LATEST, ["L9 1-c6", "L2 bd-d6", "L0 d7-d7"], []),
    # larger max wins over level
    (["L9 1-4", "L0 5", "L1 5-8", "L0 6"], LATEST, ["L9 1-4", "L1 5-8"], []),
    # same max: smaller min wins, then higher level
    (["L9 1-4", "L1 3-8", "L2 5-8"], LATEST, ["L9 1-4", "L1 3-8"], []),
    (["L9 1-4", "L1 5-8", "L2 5-8"], LATEST, ["L9 1-4", "L2 5-8"], []),
    # the last snapshot wins, even with L0 files left below it
    (["L9 1-3", "L9 1-9", "L0 1", "L0 2", "L0 a"], LATEST, ["L9 1-9", "L0 a-a"], []),
    # observed plan for -txid 2e: L9 1-f, L2 10-24, L1 25-2e [obs]
    (["L9 1-f", "L9 1-4c", "L2 10-24", "L1 25-2e", "L1 2f-40", "L0 2d", "L0 2e", "L0 2f"],
     RestoreTarget(txid=0x2E), ["L9 1-f", "L2 10-24", "L1 25-2e"], []),
    (["L9 1-5", "L9 1-10", "L0 6"], RestoreTarget(txid=5), ["L9 1-5"], []),
    # -txid must end a file: nothing is applied partially
    (["L9 1-f", "L1 10-20"], RestoreTarget(txid=0x18), ["L9 1-f"], ["no_backups"]),
    (["L9 1-f"], RestoreTarget(txid=0x30), ["L9 1-f"], ["no_backups"]),
    (["L9 1-4", "L0 5", "L0 7", "L0 8"], RestoreTarget(txid=8), ["L9 1-4", "L0 5-5"], ["wal_gap"]),
    # a gap on a latest restore
    (["L9 1-4", "L0 5", "L0 7"], LATEST, ["L9 1-4", "L0 5-5"], ["wal_gap"]),
    # ... is harmless when another level bridges it
    (["L9 1-4", "L0 5", "L0 7", "L1 5-7"], LATEST, ["L9 1-4", "L1 5-7"], []),
    (["L9 1-4", "L1 2-3", "L1 9-a", "L0 5"], LATEST, ["L9 1-4", "L0 5-5"], ["wal_gap"]),
    # no snapshot and nothing from TXID 1
    (["L0 5", "L0 6"], LATEST, [], ["missing_snapshot"]),
    (["L9 1-9"], RestoreTarget(txid=3), [], ["missing_snapshot"]),
    ([], LATEST, [], ["no_backups"]),
]


@pytest.mark.parametrize("files, target, expected, kinds", PLAN_CASES)
def test_plan_matches_litestream(files, target, expected, kinds):
    plan, findings = plan_v5(state_of(*files), target)
    assert names(plan) == expected
    assert [f.kind for f in findings] == kinds
    assert all(f.severity == "error" for f in findings)


def test_gap_finding_names_the_txids_and_the_next_file():
    plan, [finding] = plan_v5(state_of("L9 1-4", "L0 5", "L0 9", "L1 8-9"), LATEST)
    assert finding.kind == "wal_gap"
    assert finding.object == "ltx/1/0000000000000008-0000000000000009.ltx"  # levels 8..0, as Litestream scans
    assert "have up to TXID 0000000000000005" in finding.message
    assert "starts at 0000000000000008" in finding.message


def test_timestamp_target_keeps_files_strictly_before_it():
    files = ["L9 1-3 @10", "L0 4 @20", "L0 5 @30", "L9 1-5 @40", "L0 6 @50"]
    at = lambda s: RestoreTarget(timestamp=T0 + timedelta(seconds=s))  # noqa: E731
    assert names(plan_v5(state_of(*files), at(30))[0]) == ["L9 1-3", "L0 4-4"]
    assert names(plan_v5(state_of(*files), at(31))[0]) == ["L9 1-3", "L0 4-4", "L0 5-5"]
    assert names(plan_v5(state_of(*files), at(41))[0]) == ["L9 1-5"]
    assert names(plan_v5(state_of(*files), at(10))[0]) == []
    naive = RestoreTarget(timestamp=(T0 + timedelta(seconds=31)).replace(tzinfo=None))
    assert names(plan_v5(state_of(*files), naive)[0]) == ["L9 1-3", "L0 4-4", "L0 5-5"]


def test_txid_and_timestamp_together_are_refused():
    with pytest.raises(ValueError):
        plan_v5(state_of("L0 1"), RestoreTarget(txid=1, timestamp=T0))


def test_plan_is_fast_on_a_huge_level_0():
    files = ["L9 1-1"] + [f"L0 {t:x}" for t in range(2, 30_000)]
    state = state_of(*files)
    started = time.process_time()  # CPU time: other processes on a loaded machine do not count
    plan, findings = plan_v5(state, LATEST)
    assert len(plan) == 29_999 and not findings
    assert time.process_time() - started < 5  # linear takes well under a second; quadratic, tens of seconds


def reference_plan(state: V5State, txid: int | None, before: datetime | None):
    """An independent transcription of the algorithm in spec 3.1 (one cursor per level)."""
    def ok(f):
        return (txid is None or f.max_txid <= txid) and (before is None or f.time < before)

    snaps = [f for f in state.snapshots if ok(f)]
    plan = snaps[-1:]
    cur = plan[0].max_txid if plan else 0
    if txid is not None and cur >= txid:
        return plan, None
    while True:
        cands = [f for lvl in range(9) for f in state.levels[lvl]
                 if f.min_txid <= cur + 1 and f.max_txid > cur and ok(f)]
        if not cands:
            break
        best = cands[0]
        for f in cands[1:]:
            if (f.max_txid, -f.min_txid, f.level, -f.time.timestamp()) > \
                    (best.max_txid, -best.min_txid, best.level, -best.time.timestamp()):
                best = f
        plan.append(best)
        cur = best.max_txid
        if txid is not None and cur >= txid:
            break
    gap = None
    if plan and txid is None and before is None:
        for lvl in range(8, -1, -1):
            beyond = [f for f in state.levels[lvl] if f.min_txid > cur + 1]
            if beyond:
                gap = beyond[0]
                break
    return plan, gap


@st.composite
def random_states(draw):
    top = draw(st.integers(1, 30))
    specs = []
    for level in (0, 1, 2, 9):
        for _ in range(draw(st.integers(0, 12))):
            lo = 1 if level == 9 else draw(st.integers(1, top))
            hi = draw(st.integers(lo, min(top, lo + (0 if level == 0 else 8))))
            specs.append(f"L{level} {lo:x}-{hi:x} @{draw(st.integers(0, 60))}")
    return list(dict.fromkeys(specs))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_states(), st.one_of(st.none(), st.integers(1, 32)), st.one_of(st.none(), st.integers(0, 61)))
def test_plan_agrees_with_a_transcription_of_the_spec(specs, txid, seconds):
    if txid is not None and seconds is not None:
        seconds = None
    # keys must be unique per level; duplicates of (level, range) collapse with their time
    seen, unique = set(), []
    for spec in specs:
        if spec.rsplit(" ", 1)[0] not in seen:
            seen.add(spec.rsplit(" ", 1)[0])
            unique.append(spec)
    state = state_of(*unique)
    before = T0 + timedelta(seconds=seconds) if seconds is not None else None
    plan, findings = plan_v5(state, RestoreTarget(txid=txid, timestamp=before))
    want, gap = reference_plan(state, txid, before)
    if not unique:
        assert [f.kind for f in findings] == ["no_backups"]
        return
    assert names(plan) == names(want)
    kinds = [f.kind for f in findings]
    if not want:
        assert kinds == ["missing_snapshot"]
    elif gap is not None:
        assert kinds == ["wal_gap"] and findings[0].object == gap.key
    elif txid is not None and want[-1].max_txid < txid:
        assert kinds in (["no_backups"], ["wal_gap"])
    else:
        assert kinds == []


# ============================================================================ synthetic replicas


def write_ltx(root: Path, level: int, lo: int, hi: int, pages: dict[int, bytes], commit: int,
              *, when: datetime | None = None, **header) -> Path:
    path = root / "ltx" / str(level) / r5_layout.format_ltx_name(lo, hi)
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = when or T0 + timedelta(seconds=hi)
    path.write_bytes(encode_ltx(pages, commit=commit, min_txid=lo, max_txid=hi,
                                timestamp=int(ts.timestamp() * 1000), **header))
    os.utime(path, (ts.timestamp(), ts.timestamp()))
    return path


def local_state(root: Path) -> tuple[LocalStore, V5State]:
    store = LocalStore(root)
    return store, list_replica(store, "file", str(root)).v5


def expected_db(history: list[tuple[dict[int, bytes], int]], page_size: int = 4096) -> bytes:
    """Database bytes after applying (pages, commit) transactions in order."""
    db: dict[int, bytes] = {}
    for pages, commit in history:
        db.update(pages)
        db = {p: v for p, v in db.items() if p <= commit}
    commit = history[-1][1]
    lock = lock_pgno(page_size)
    return b"".join(db.get(p, bytes(page_size)) if p != lock else bytes(page_size) for p in range(1, commit + 1))


def test_synthetic_chain_restores_last_writer_wins_and_truncates(tmp_path):
    root = tmp_path / "replica"
    tx1 = ({p: page_bytes(p) for p in range(1, 6)}, 5)
    tx2 = ({2: page_bytes(2, fill=b"two"), 6: page_bytes(6), 7: page_bytes(7)}, 7)
    tx3 = ({3: page_bytes(3, fill=b"three")}, 4)  # shrinks: pages 5..7 go away
    write_ltx(root, 0, 1, 1, *tx1)
    write_ltx(root, 0, 2, 2, *tx2)
    write_ltx(root, 0, 3, 3, *tx3)
    store, state = local_state(root)
    out = tmp_path / "out.db"
    outcome = restore_v5(store, state, out, LATEST)
    assert outcome.findings == []
    assert out.read_bytes() == expected_db([tx1, tx2, tx3])
    assert (outcome.position, outcome.page_size, outcome.bytes) == ("0000000000000003", 4096, 4 * 4096)
    assert outcome.format == "v0.5" and outcome.generation is None and outcome.objects_read == 3
    assert outcome.last_backup_at == T0 + timedelta(seconds=3)
    assert outcome.bytes_downloaded == sum(p.stat().st_size for p in root.rglob("*.ltx"))


@st.composite
def histories(draw):
    """Transactions as Litestream would sync them: growth always writes the new pages."""
    commit = draw(st.integers(1, 12))
    txs = [({p: page_bytes(p, fill=b"1-%d " % p) for p in range(1, commit + 1)}, commit)]
    for txid in range(2, draw(st.integers(2, 10)) + 1):
        new_commit = draw(st.integers(1, 16))
        changed = set(draw(st.lists(st.integers(1, new_commit), max_size=5)))
        changed |= set(range(commit + 1, new_commit + 1))
        txs.append(({p: page_bytes(p, fill=b"%d-%d " % (txid, p)) for p in sorted(changed)}, new_commit))
        commit = new_commit
    return txs


def compact(txs: list[tuple[dict[int, bytes], int]]) -> tuple[dict[int, bytes], int]:
    merged: dict[int, bytes] = {}
    for pages, _ in txs:
        merged.update(pages)
    commit = txs[-1][1]
    return {p: v for p, v in merged.items() if p <= commit}, commit


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(txs=histories(), data=st.data())
def test_restore_of_any_chain_equals_the_database_at_that_txid(tmp_path_factory, txs, data):
    root = tmp_path_factory.mktemp("chain")
    for txid, tx in enumerate(txs, start=1):
        write_ltx(root, 0, txid, txid, *tx)
    lo = data.draw(st.integers(1, len(txs)))
    hi = data.draw(st.integers(lo, len(txs)))
    write_ltx(root, 1, lo, hi, *compact(txs[lo - 1:hi]))  # a compaction, maybe from TXID 1
    snap = data.draw(st.integers(1, len(txs)))
    write_ltx(root, 9, 1, snap, *compact(txs[:snap]))
    store, state = local_state(root)
    target = data.draw(st.integers(1, len(txs)))
    for tgt, upto in ((LATEST, len(txs)), (RestoreTarget(txid=target), target)):
        out = root / "out.db"
        outcome = restore_v5(store, state, out, tgt)
        assert outcome.findings == []
        assert out.read_bytes() == expected_db(txs[:upto])
        assert outcome.position == f"{upto:016x}"


def test_timestamp_restores_compare_header_times_not_upload_times(tmp_path):
    """S3 LastModified is the upload time; Litestream compares the header time (the
    ``litestream-timestamp`` metadata), so a slow upload must not move the restore point."""
    root = tmp_path / "replica"
    tx1, tx2 = ({1: page_bytes(1)}, 1), ({1: page_bytes(1, fill=b"two")}, 1)
    write_ltx(root, 0, 1, 1, *tx1, when=T0 + timedelta(seconds=10))
    late = write_ltx(root, 0, 2, 2, *tx2, when=T0 + timedelta(seconds=20))
    uploaded = (T0 + timedelta(seconds=40)).timestamp()
    os.utime(late, (uploaded, uploaded))
    store, state = local_state(root)
    assert names(plan_v5(state, RestoreTarget(timestamp=T0 + timedelta(seconds=30)))[0]) == ["L0 1-1"]
    timed = r5_layout.with_header_times(store, state)
    assert [f.created_at for f in timed.files()] == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]
    outcome = restore_v5(store, state, tmp_path / "out.db", RestoreTarget(timestamp=T0 + timedelta(seconds=30)))
    assert outcome.position == "0000000000000002" and outcome.findings == []
    assert outcome.last_backup_at == T0 + timedelta(seconds=40)  # staleness still uses the upload time


def test_page_size_change_in_the_chain_is_corrupt(tmp_path):
    root = tmp_path / "replica"
    write_ltx(root, 0, 1, 1, {1: page_bytes(1)}, 1)
    bad = write_ltx(root, 0, 2, 2, {1: page_bytes(1, 1024)}, 1, page_size=1024)
    store, state = local_state(root)
    outcome = restore_v5(store, state, tmp_path / "out.db", LATEST)
    [finding] = outcome.findings
    assert (finding.kind, finding.object) == ("corrupt_object", "ltx/0/" + bad.name)
    assert "page size 1024 differs from 4096" in finding.message
    assert outcome.path is None and not (tmp_path / "out.db").exists()


def test_growth_without_its_pages_is_caught_by_coverage(tmp_path):
    root = tmp_path / "replica"
    write_ltx(root, 0, 1, 1, {1: page_bytes(1), 2: page_bytes(2)}, 2)
    write_ltx(root, 0, 2, 2, {4: page_bytes(4)}, 4)  # claims 4 pages, page 3 never written
    store, state = local_state(root)
    outcome = restore_v5(store, state, tmp_path / "out.db", LATEST)
    [finding] = outcome.findings
    assert finding.kind == "corrupt_object"
    assert "restored database lacks page 3 of 4" in finding.message
    assert finding.object == "ltx/0/0000000000000002-0000000000000002.ltx"
    assert outcome.path is None


def test_coverage_bitmap_treats_the_lock_page_as_present(tmp_path):
    writer = r5_restore._PageWriter(tmp_path / "x.db")
    try:
        writer.page_size = 65536
        lock = lock_pgno(65536)
        for pgno in range(1, lock + 3):
            if pgno != lock:
                writer._mark_range(pgno, 1)
        assert writer.first_missing(lock + 2) is None
        assert writer.first_missing(lock + 3) == lock + 3
        writer._bitmap[100 >> 3] &= ~(1 << (99 & 7))
        assert writer.first_missing(lock + 2) == 100
    finally:
        writer.close()


def test_name_and_header_disagree(tmp_path):
    root = tmp_path / "replica"
    write_ltx(root, 0, 1, 1, {1: page_bytes(1)}, 1)
    src = write_ltx(root, 0, 2, 2, {1: page_bytes(1)}, 1)
    src.rename(src.with_name(r5_layout.format_ltx_name(2, 3)))
    store, state = local_state(root)
    [finding] = restore_v5(store, state, tmp_path / "out.db", LATEST).findings
    assert finding.kind == "corrupt_object"
    assert "header TXIDs 0x2-0x2 do not match name 0000000000000002-0000000000000003" in finding.message


def test_every_corrupt_file_of_the_plan_is_reported(tmp_path):
    root = tmp_path / "replica"
    paths = [write_ltx(root, 0, t, t, {1: page_bytes(1, fill=b"%d" % t)}, 1) for t in range(1, 6)]
    for bad in (paths[1], paths[3]):
        data = bytearray(bad.read_bytes())
        data[-1] ^= 1
        bad.write_bytes(bytes(data))
    store, state = local_state(root)
    outcome = restore_v5(store, state, tmp_path / "out.db", LATEST)
    assert [(f.kind, f.object) for f in outcome.findings] == [
        ("corrupt_object", "ltx/0/" + paths[1].name), ("corrupt_object", "ltx/0/" + paths[3].name)]
    assert outcome.path is None and outcome.objects_read == 5


class _Watched:
    """A store wrapper that records concurrency and read sizes, or fails on one key."""

    def __init__(self, inner, fail_key=None, error=None):
        self.inner, self.fail_key, self.error = inner, fail_key, error
        self.description = "watched"
        self.open_now = self.open_max = 0
        self.read_sizes: list[int] = []
        self.lock = threading.Lock()

    def list(self, prefix, start_after=None, stop_after=None, limit=None):
        return self.inner.list(prefix, start_after, stop_after, limit)

    def open(self, key):
        if key == self.fail_key:
            raise self.error
        outer = self
        reader = self.inner.open(key)
        with self.lock:
            self.open_now += 1
            self.open_max = max(self.open_max, self.open_now)

        class Reader:
            def read(self, size=-1):
                outer.read_sizes.append(size)
                time.sleep(0.001)
                return reader.read(size)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                reader.close()
                with outer.lock:
                    outer.open_now -= 1

        return Reader()


def test_downloads_are_prefetched_with_bounded_concurrency_and_chunks(tmp_path):
    root = tmp_path / "replica"
    txs = [({p: page_bytes(p) for p in range(1, 400)}, 399)]
    txs += [({t % 399 + 1: page_bytes(t, fill=b"%d" % t)}, 399) for t in range(2, 40)]
    for txid, tx in enumerate(txs, start=1):
        write_ltx(root, 0, txid, txid, *tx)
    inner, state = local_state(root)
    store = _Watched(inner)
    out = tmp_path / "out.db"
    outcome = restore_v5(store, state, out, LATEST, workers=3)
    assert outcome.findings == [] and out.read_bytes() == expected_db(txs)
    assert 1 < store.open_max <= 3
    assert max(store.read_sizes) <= pool.CHUNK_BYTES


@pytest.mark.parametrize("error", [ObjectNotFound("x"), StorageUnavailable("endpoint down")])
def test_storage_errors_propagate_and_leave_no_partial_file(tmp_path, error):
    root = tmp_path / "replica"
    for t in range(1, 8):
        write_ltx(root, 0, t, t, {1: page_bytes(1, fill=b"%d" % t)}, 1)
    inner, state = local_state(root)
    store = _Watched(inner, fail_key="ltx/0/" + r5_layout.format_ltx_name(5, 5), error=error)
    out = tmp_path / "out.db"
    with pytest.raises(type(error)):
        restore_v5(store, state, out, LATEST)
    assert not out.exists()
    assert threading.active_count() < 10  # the prefetch threads are gone


def test_file_deleted_after_listing_raises_object_not_found(tmp_path):
    root = tmp_path / "replica"
    for t in range(1, 4):
        write_ltx(root, 0, t, t, {1: page_bytes(1)}, 1)
    store, state = local_state(root)
    (root / "ltx/0" / r5_layout.format_ltx_name(2, 2)).unlink()  # Litestream's retention, racing us
    with pytest.raises(ObjectNotFound) as info:
        restore_v5(store, state, tmp_path / "out.db", LATEST)
    assert info.value.key == "ltx/0/" + r5_layout.format_ltx_name(2, 2)
    assert not (tmp_path / "out.db").exists()


def test_nothing_listed(tmp_path):
    store, state = local_state(tmp_path / "empty")
    outcome = restore_v5(store, state, tmp_path / "out.db", LATEST)
    assert [f.kind for f in outcome.findings] == ["no_backups"] and outcome.path is None


# ============================================================================ real replicas


def store_of(replica):
    if replica.kind == "file":
        return LocalStore(replica.replica_dir)
    s3 = replica.s3
    return S3Store(S3Settings(bucket=replica.bucket, endpoint=s3.endpoint, region=s3.region,
                              access_key_id=s3.access_key_id, secret_access_key=s3.secret_access_key))


def listed(replica):
    store = store_of(replica)
    path = str(replica.replica_dir) if replica.kind == "file" else replica.prefix
    return store, list_replica(store, replica.kind, path).v5


def restore(replica, out: Path, target: RestoreTarget = LATEST):
    store, state = listed(replica)
    return restore_v5(store, state, out, target)


def litestream_plan(replica, txid: int | None = None) -> list[str] | None:
    args = ["restore", "-dry-run", "-json", "-config", str(replica.config_path), "-o", "/nonexistent/x.db"]
    if txid is not None:
        args += ["-txid", f"{txid:016x}"]
    env = replica.s3.credentials_env() if replica.s3 is not None else None
    proc = run_litestream(V5, *args, str(replica.db_path), env=env, check=False)
    if proc.returncode != 0:
        return None
    return [f"L{f['level']} {int(f['min_txid'], 16):x}-{int(f['max_txid'], 16):x}"
            for f in json.loads(proc.stdout)["files"]]


@pytest.fixture(params=[pytest.param(kind, marks=pytest.mark.slow) for kind in ("file", "s3")])
def v5_replica(request):
    """Each test runs on the shared file replica and on the shared S3 replica."""
    return request.getfixturevalue(f"v5_{request.param}_replica")


def test_latest_restore_is_byte_identical_to_litestream(v5_replica, tmp_path):
    outcome = restore(v5_replica, tmp_path / "out.db")
    assert outcome.findings == []
    assert outcome.sha256 == sha256_file(tmp_path / "out.db") == v5_replica.reference_sha256
    assert outcome.page_size == v5_replica.page_size
    assert database_row_counts(outcome.path) == v5_replica.row_counts
    _, state = listed(v5_replica)
    assert outcome.position == f"{state.max_txid:016x}"
    assert outcome.last_backup_at == max(f.info.last_modified for f in state.files())


def test_plans_equal_litestream_dry_run_for_every_txid(v5_file_replica):
    _, state = listed(v5_file_replica)
    assert names(plan_v5(state, LATEST)[0]) == litestream_plan(v5_file_replica)
    for txid in range(1, state.max_txid + 1):
        plan, findings = plan_v5(state, RestoreTarget(txid=txid))
        theirs = litestream_plan(v5_file_replica, txid)
        if theirs is None:
            assert findings and findings[0].severity == "error", txid
        else:
            assert not findings and names(plan) == theirs, txid


def test_every_txid_restore_is_byte_identical_to_litestream(v5_file_replica, tmp_path):
    _, state = listed(v5_file_replica)
    boundaries = sorted({f.max_txid for f in state.files()})
    assert len(boundaries) >= 3
    for txid in boundaries:
        ours = restore(v5_file_replica, tmp_path / f"ours-{txid}.db", RestoreTarget(txid=txid))
        theirs = litestream_restore(v5_file_replica, tmp_path / f"theirs-{txid}.db", txid=txid)
        assert ours.findings == [], txid
        assert ours.sha256 == sha256_file(theirs), txid
        assert ours.position == f"{txid:016x}"


def test_timestamp_restores_match_litestream_and_the_recorded_rows(v5_replica, tmp_path):
    for n, (moment, counts) in enumerate(v5_replica.checkpoints):
        ours = restore(v5_replica, tmp_path / f"ours-{n}.db", RestoreTarget(timestamp=moment))
        if ours.path is None:  # before the first file: litestream finds nothing either
            assert [f.kind for f in ours.findings] == ["missing_snapshot"]
            continue
        assert ours.findings == []
        assert database_row_counts(ours.path) == counts, n
        theirs = litestream_restore(v5_replica, tmp_path / f"theirs-{n}.db", timestamp=moment)
        assert ours.sha256 == sha256_file(theirs), n


def test_all_files_written_by_0_5_17_use_the_block_encoding(v5_replica):
    """0.5.16+ writes size + LZ4 block frames; the restore above is a pure block chain."""
    store, state = listed(v5_replica)
    for f in state.files():
        with store.open(f.key) as reader:
            data = reader.read()
        for pgno, offset, _size in _index_of(data):
            assert struct.unpack(">IH", data[offset:offset + 6]) == (pgno, 1), f.key


def _index_of(data: bytes) -> list[tuple[int, int, int]]:
    from tests.test_ltx import _frames_of
    return _frames_of(data)


def test_replica_reencoded_as_legacy_frames_restores_identically(v5_file_replica, clone, tmp_path):
    """A 0.5.0-0.5.15 replica (LZ4 frame per page) or a mixed chain gives the same database,
    and so does litestream 0.5.17 on our re-encoded files (a check of the writer itself)."""
    replica = clone(v5_file_replica)
    for n, path in enumerate(sorted(replica.replica_dir.glob("ltx/*/*.ltx"))):
        if n % 3 == 2:
            continue  # leave some in block encoding: a mixed chain
        stat = path.stat()
        with open(path, "rb") as reader:
            decoder = LtxDecoder(reader, str(path))
            pages = dict(decoder.pages())
        h = decoder.header
        path.write_bytes(encode_ltx(pages, encoding="frame", page_size=h.page_size, commit=h.commit,
                                    min_txid=h.min_txid, max_txid=h.max_txid, timestamp=h.timestamp_ms,
                                    wal_offset=h.wal_offset, wal_size=h.wal_size, salt1=h.wal_salt1,
                                    salt2=h.wal_salt2))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    outcome = restore(replica, tmp_path / "out.db")
    assert outcome.findings == [] and outcome.sha256 == v5_file_replica.reference_sha256
    theirs = litestream_restore(replica, tmp_path / "theirs.db")
    assert sha256_file(theirs) == v5_file_replica.reference_sha256


# ============================================================================ damage


def _plan_keys(replica) -> list[str]:
    """Replica-relative keys of the latest restore plan."""
    _, state = listed(replica)
    plan, _ = plan_v5(state, LATEST)
    return [_relative(replica, f.key) for f in plan]


def _relative(replica, key: str) -> str:
    return key if replica.kind == "file" else key[len(replica.prefix) + 1:]


def _key_of(replica, relative: str) -> str:
    return relative if replica.kind == "file" else f"{replica.prefix}/{relative}"


def test_flipped_byte_inside_a_page_block_is_a_corrupt_object(v5_replica, clone, tmp_path):
    replica = clone(v5_replica)
    victim = max(_plan_keys(replica), key=lambda k: len(read_object(replica, k)))
    data = bytearray(read_object(replica, victim))
    _pgno, offset, size = _index_of(bytes(data))[0]
    data[offset + size - 1] ^= 0x01  # an LZ4 block always ends in literals: the page changes
    write_object(replica, victim, bytes(data))
    outcome = restore(replica, tmp_path / "out.db")
    [finding] = outcome.findings
    assert (finding.kind, finding.object) == ("corrupt_object", _key_of(replica, victim))
    assert "file checksum mismatch" in finding.message
    assert outcome.path is None and not (tmp_path / "out.db").exists()
    with pytest.raises(Exception, match="checksum mismatch"):
        litestream_restore(replica, tmp_path / "theirs.db")


def test_truncated_file_is_a_corrupt_object(v5_replica, clone, tmp_path):
    replica = clone(v5_replica)
    victim = _plan_keys(replica)[-1]
    data = read_object(replica, victim)
    write_object(replica, victim, data[:len(data) // 2])
    outcome = restore(replica, tmp_path / "out.db")
    [finding] = outcome.findings
    assert (finding.kind, finding.object) == ("corrupt_object", _key_of(replica, victim))
    assert f"truncated after {len(data) // 2} bytes" in finding.message
    assert outcome.path is None


def _l0_gap_candidate(replica) -> tuple[int, list[str]]:
    """An L0 TXID after the newest snapshot and before the last TXID, and the keys that
    hold it (that L0 file and every compacted file spanning it)."""
    _, state = listed(replica)
    newest_snapshot = max((f.max_txid for f in state.snapshots), default=0)
    inner = [f for f in state.levels[0] if newest_snapshot + 1 < f.min_txid < state.max_txid]
    assert inner, "the fixture replica has no L0 file in the middle of its chain"
    txid = inner[len(inner) // 2].min_txid
    holders = [f for level in range(9) for f in state.levels[level] if f.min_txid <= txid <= f.max_txid]
    return txid, [_relative(replica, f.key) for f in holders]


def test_deleted_level0_file_bridged_by_a_compaction_changes_nothing(v5_file_replica, clone, tmp_path):
    replica = clone(v5_file_replica)
    _, state = listed(replica)
    bridged = [f for f in state.levels[0]
               if any(c.min_txid < f.min_txid and c.max_txid >= f.max_txid
                      for c in state.levels[1] + state.levels[2])]
    assert bridged, "the fixture replica has no L0 file inside a compaction"
    victim = bridged[len(bridged) // 2]
    delete_object(replica, victim.key)
    outcome = restore(replica, tmp_path / "out.db")
    assert outcome.findings == []
    assert outcome.sha256 == v5_file_replica.reference_sha256


def test_deleted_level0_file_in_the_middle_of_the_chain_is_a_wal_gap(v5_replica, clone, tmp_path):
    replica = clone(v5_replica)
    txid, holders = _l0_gap_candidate(replica)
    for key in holders:
        delete_object(replica, key)
    outcome = restore(replica, tmp_path / "out.db")
    [finding] = outcome.findings
    assert finding.kind == "wal_gap"
    assert f"have up to TXID {txid - 1:016x}" in finding.message
    assert _relative(replica, finding.object) in replica_listing(replica)
    assert parse_ltx_name(finding.object.rsplit("/", 1)[1])[0] > txid
    # the chain up to the gap is still restored, for what it is worth
    assert outcome.position == f"{txid - 1:016x}" and integrity_check(outcome.path) == ["ok"]
    with pytest.raises(Exception, match="non-contiguous"):
        litestream_restore(replica, tmp_path / "theirs.db")


def test_deleted_snapshot_is_a_missing_snapshot(v5_replica, clone, tmp_path):
    replica = clone(v5_replica)
    for key in replica_listing(replica):
        name = key.rsplit("/", 1)[-1]
        parsed = parse_ltx_name(name)
        if parsed and parsed[0] == 1:  # every L9 snapshot and every file that could stand in
            delete_object(replica, key)
    outcome = restore(replica, tmp_path / "out.db")
    assert [f.kind for f in outcome.findings] == ["missing_snapshot"]
    assert outcome.path is None
    with pytest.raises(Exception, match="no matching backup"):
        litestream_restore(replica, tmp_path / "theirs.db")


# ============================================================================ VACUUM


def _settle(replica_dir: Path, before: dict, timeout: float = 30) -> dict:
    """Wait until the replica listing changed and then stayed put for half a second."""
    def snap():
        return {p: p.stat().st_mtime_ns for p in replica_dir.rglob("*.ltx")} if replica_dir.exists() else {}
    deadline = time.monotonic() + timeout
    current = snap()
    while current == before:
        assert time.monotonic() < deadline, "litestream uploaded nothing"
        time.sleep(0.05)
        current = snap()
    stable = time.monotonic()
    while time.monotonic() - stable < 0.5:
        time.sleep(0.05)
        latest = snap()
        if latest != current:
            current, stable = latest, time.monotonic()
    return current


@pytest.fixture(scope="module")
def v5_vacuum_replica(tmp_path_factory):
    """A database that grows, then shrinks by VACUUM, replicated by litestream 0.5.17 with
    compaction slowed down so the shrink stays visible as separate L0 files."""
    from tests.support.replicas import BuiltReplica, write_config

    work = tmp_path_factory.mktemp("v5-vacuum")
    db_path, replica_dir = work / "app.db", work / "replica"
    config = write_config(V5, work / "litestream.yml", db_path, {"type": "file", "path": str(replica_dir),
                                                                "sync-interval": "100ms"})
    doc = yaml.safe_load(config.read_text())
    doc["levels"] = [{"interval": "1h"}]
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA wal_autocheckpoint = 0")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)")
    rng = random.Random(5)
    txids = {}
    with Replicator(V5, config, work / "litestream.log") as rep:
        listing = _settle(replica_dir, {})
        con.executemany("INSERT INTO t (blob) VALUES (?)", [(rng.randbytes(900),) for _ in range(400)])
        listing = _settle(replica_dir, listing)
        txids["grown"] = max(int(p.stem.split("-")[1], 16) for p in listing)
        con.execute("DELETE FROM t WHERE id > 40")
        con.execute("VACUUM")
        listing = _settle(replica_dir, listing)
        con.execute("INSERT INTO t (blob) VALUES (x'00')")
        _settle(replica_dir, listing)
        rep.stop()
    con.close()
    replica = BuiltReplica(litestream_version=V5, kind="file", config_path=config, db_path=db_path,
                           replica_dir=replica_dir, bucket=None, prefix=None, s3=None, page_size=4096,
                           reference_sha256="", row_counts={"t": 41})
    replica.reference_sha256 = sha256_file(litestream_restore(replica, work / "reference.db"))
    return replica, txids


@pytest.mark.slow
def test_restore_after_vacuum_shrank_the_database(v5_vacuum_replica, tmp_path):
    replica, txids = v5_vacuum_replica
    store, state = listed(replica)
    plan, _ = plan_v5(state, LATEST)
    commits = []
    for f in plan:
        with store.open(f.key) as reader:
            commits.append(LtxDecoder(reader, f.key).header.commit)
    assert max(commits) > commits[-1], "the plan does not shrink the database"
    outcome = restore(replica, tmp_path / "out.db")
    assert outcome.findings == []
    assert outcome.sha256 == replica.reference_sha256
    assert outcome.bytes == commits[-1] * 4096
    assert database_row_counts(outcome.path) == {"t": 41}
    grown = restore(replica, tmp_path / "grown.db", RestoreTarget(txid=txids["grown"]))
    theirs = litestream_restore(replica, tmp_path / "theirs-grown.db", txid=txids["grown"])
    assert grown.sha256 == sha256_file(theirs) and grown.bytes > outcome.bytes
