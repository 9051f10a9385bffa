"""The recovery window, RPO and restore-time limits: pure tables over listings, and real replicas."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lib.litestream.discover import ReplicaState, discover
from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.litestream.v3.layout import parse_v3_listing
from lib.litestream.v5.layout import parse_v5_listing
from lib.recovery.objectives import Limits, limit_findings, recovery_of
from lib.recovery.window import window_of
from lib.storage.base import ObjectInfo
from lib.storage.local import LocalStore
from tests.support.replicas import LitestreamError, litestream_restore

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)

GEN_A = "aaaaaaaaaaaaaaaa"

GEN_B = "bbbbbbbbbbbbbbbb"


def _obj(key: str, minutes: float) -> ObjectInfo:
    return ObjectInfo(key, 100, T0 + timedelta(minutes=minutes))


def _v3(objects: list[ObjectInfo]) -> ReplicaState:
    return ReplicaState(format=FORMAT_V3, v3=parse_v3_listing(objects, "generations/"))


def _v5(objects: list[ObjectInfo]) -> ReplicaState:
    return ReplicaState(format=FORMAT_V5, v5=parse_v5_listing(objects, "ltx/", "file"))


def test_v3_window_runs_from_the_oldest_snapshot_to_the_newest_segment():
    state = _v3([
        _obj(f"generations/{GEN_A}/wal/00000000_00000000.wal.lz4", 0),  # before any snapshot: unreachable
        _obj(f"generations/{GEN_A}/snapshots/00000001.snapshot.lz4", 10),
        _obj(f"generations/{GEN_A}/wal/00000001_00000000.wal.lz4", 11),
        _obj(f"generations/{GEN_A}/wal/00000001_00001000.wal.lz4", 13),
        _obj(f"generations/{GEN_B}/wal/00000000_00000000.wal.lz4", 30),  # no snapshot: reaches nothing
    ])
    window = window_of(state)
    assert (window.earliest, window.latest) == (T0 + timedelta(minutes=10), T0 + timedelta(minutes=13))
    assert [s.label for s in window.spans] == [f"generation {GEN_A}"]
    assert window.spans[0].points == 3
    assert window.spans[0].granularity_seconds == 90.0  # gaps of 1 and 2 minutes
    assert not window.contains(T0 + timedelta(minutes=20))


def test_v5_window_keeps_only_coarse_levels_where_l0_is_gone():
    state = _v5([
        _obj("ltx/9/0000000000000001-0000000000000010.ltx", 0),
        _obj("ltx/1/0000000000000011-0000000000000020.ltx", 30),
        _obj("ltx/1/0000000000000021-0000000000000030.ltx", 60),
        _obj("ltx/0/0000000000000031-0000000000000031.ltx", 60.5),
        _obj("ltx/0/0000000000000032-0000000000000032.ltx", 61),
    ])
    window = window_of(state)
    assert window.earliest == T0 and window.latest == T0 + timedelta(minutes=61)
    by_label = {s.label: s for s in window.spans}
    assert by_label["level 1"].granularity_seconds == 1800.0
    assert by_label["level 0"].granularity_seconds == 30.0
    assert by_label["level 0"].earliest == T0 + timedelta(minutes=60.5)


def test_v5_without_snapshot_or_txid_1_reaches_nothing():
    window = window_of(_v5([_obj("ltx/0/0000000000000005-0000000000000005.ltx", 0)]))
    assert window.earliest is None and window.seconds == 0.0


@pytest.mark.parametrize("restore_seconds, limits, kinds", [
    (5.0, Limits(), []),
    (5.0, Limits(max_restore_seconds=10), []),
    (12.0, Limits(max_restore_seconds=10), [("error", "restore_time")]),
    (5.0, Limits(min_window_seconds=3600), [("warning", "window")]),  # reaches back 30 min
    (5.0, Limits(min_window_seconds=1200), []),
    (12.0, Limits(10, 3600), [("error", "restore_time"), ("warning", "window")]),
])
def test_limits(restore_seconds, limits, kinds):
    window = window_of(_v3([_obj(f"generations/{GEN_A}/snapshots/00000000.snapshot.lz4", 0),
                            _obj(f"generations/{GEN_A}/wal/00000000_00000000.wal.lz4", 20)]))
    found = limit_findings(window, restore_seconds, limits, now=T0 + timedelta(minutes=30))
    assert [(f.severity, f.kind) for f in found] == kinds


def test_rpo_prefers_the_freshness_querys_newest_row():
    window = window_of(_v3([_obj(f"generations/{GEN_A}/snapshots/00000000.snapshot.lz4", 0),
                            _obj(f"generations/{GEN_A}/wal/00000000_00000000.wal.lz4", 20)]))
    now = T0 + timedelta(minutes=30)
    block = recovery_of(window, now, 1.5, 4096)
    assert (block["rpo_seconds"], block["rpo_from"]) == (600.0, "newest restore point")
    assert block["restore_seconds"] == 1.5 and block["restore_bytes"] == 4096
    assert block["window_seconds"] == 1200.0
    block = recovery_of(window, now, 1.5, 4096, newest_row=T0)
    assert (block["rpo_seconds"], block["rpo_from"]) == (1800.0, "freshness query")


def _replica_state(replica) -> ReplicaState:
    from lib.config.sources import config_from_urls

    cfg = config_from_urls([replica.url()], {})
    rep = cfg.dbs[0].replicas[0]
    return discover(LocalStore(replica.replica_dir), rep)


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_multigen_file_replica"])
def test_v3_window_matches_what_litestream_restore_can_reach(fixture, request, tmp_path):
    replica = request.getfixturevalue(fixture)
    window = window_of(_replica_state(replica))
    assert window.earliest <= replica.checkpoints[0][0] and window.latest >= replica.checkpoints[-1][0]
    # Listing times carry microseconds, Litestream's nanoseconds: a millisecond after the
    # earliest point is inside the window whichever way the rounding went.
    litestream_restore(replica, tmp_path / "at-earliest.db", timestamp=window.earliest + timedelta(milliseconds=1))
    with pytest.raises(LitestreamError):
        litestream_restore(replica, tmp_path / "before.db", timestamp=window.earliest - timedelta(seconds=1))


def test_v5_window_matches_what_litestream_restore_can_reach(v5_file_replica, tmp_path):
    window = window_of(_replica_state(v5_file_replica))
    assert window.earliest <= v5_file_replica.checkpoints[0][0] <= window.latest
    litestream_restore(v5_file_replica, tmp_path / "in.db", timestamp=window.earliest + timedelta(milliseconds=1))
    with pytest.raises(LitestreamError):
        litestream_restore(v5_file_replica, tmp_path / "before.db", timestamp=window.earliest - timedelta(seconds=1))
