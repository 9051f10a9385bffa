"""Drills of older restore points on real litestream replicas, matched against `litestream restore -timestamp`."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lib.config.settings_model import DbSettings
from lib.config.sources import load
from lib.litestream.discover import discover
from lib.recovery.drill import choose_kind, choose_point, random_moment, run_drill, within_budget
from lib.recovery.rotation import carried_drills
from lib.recovery.window import window_of, with_start_times
from tests.support.replicas import delete_object, litestream_restore, read_object, replica_listing, sha256_file, \
    write_object

NOW = datetime.now(timezone.utc)


def _open(replica):
    rep = load(str(replica.config_path), replica.s3.credentials_env() if replica.s3 else {}).dbs[0].replicas[0]
    store = rep.open_store()
    return rep, store, with_start_times(store, discover(store, rep))


def _drill(replica, kind: str, tmp_path: Path, seed: int = 7, previous=None):
    rep, store, state = _open(replica)
    point = choose_point(kind, state, window_of(state), seed, previous)
    work = tmp_path / f"work-{kind}"
    work.mkdir()
    record, findings = run_drill(store, state, point, work, DbSettings(), rep, NOW)
    return point, record, findings, work / f"drill-{kind}.db"


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v5_file_replica", "v3_s3_replica", "v5_s3_replica"])
@pytest.mark.parametrize("kind", ["oldest", "random"])
def test_drill_matches_litestream_restore_at_the_same_time(fixture, kind, request, tmp_path):
    replica = request.getfixturevalue(fixture)
    point, record, findings, drilled = _drill(replica, kind, tmp_path)
    assert findings == [] and record["status"] == "ok", record
    reference = litestream_restore(replica, tmp_path / "litestream.db", timestamp=point.target.timestamp,
                                   generation=point.target.generation)
    assert record["sha256"] == sha256_file(reference) == sha256_file(drilled)


def test_random_drill_is_repeatable_by_its_seed(v3_file_replica):
    _, _, state = _open(v3_file_replica)
    window = window_of(state)
    moments = {random_moment(window, 42) for _ in range(3)}
    assert len(moments) == 1
    assert window.earliest < moments.pop() < window.latest
    assert random_moment(window, 42) != random_moment(window, 43)


def test_rotation_takes_the_kind_drilled_longest_ago():
    kinds = ("oldest", "random", "generation")
    assert choose_kind("rotate", None, kinds) == "oldest"
    drilled = {"oldest": {"at": "2026-12-03T10:00:00.000Z"}}
    assert choose_kind("rotate", drilled, kinds) == "random"
    drilled |= {"random": {"at": "2026-12-03T11:00:00.000Z"}, "generation": {"at": "2026-12-03T09:00:00.000Z"}}
    assert choose_kind("rotate", drilled, kinds) == "generation"
    assert choose_kind("rotate", drilled, ("oldest", "random")) == "oldest"
    assert choose_kind("none", drilled, kinds) is None
    assert choose_kind("generation", None, ("oldest", "random")) is None  # v0.5 has no generations


def _older_generation_keys(replica) -> list[str]:
    old = replica.generations[0]
    return [k for k in replica_listing(replica) if f"/{old}/" in k]


def test_damaged_older_snapshot_is_caught_only_by_the_oldest_drill(v3_multigen_file_replica, clone, tmp_path):
    replica = clone(v3_multigen_file_replica)
    snapshot = next(k for k in _older_generation_keys(replica) if "/snapshots/" in k)
    data = bytearray(read_object(replica, snapshot))
    data[len(data) // 2] ^= 0xFF
    write_object(replica, snapshot, bytes(data))
    point, record, findings, _ = _drill(replica, "oldest", tmp_path)
    assert record["status"] == "failed"
    assert [(f.severity, f.kind) for f in findings] == [("error", "drill")]
    assert f"cannot restore to {point.label}" in findings[0].message and findings[0].object.endswith(snapshot)
    _, newest, _, _ = _drill(replica, "random", tmp_path, seed=_seed_in_newest_generation(replica))
    assert newest["status"] == "ok"


def _seed_in_newest_generation(replica) -> int:
    _, _, state = _open(replica)
    window = window_of(state)
    newest = window.spans[-1] if window.spans[-1].label.endswith(replica.generations[-1]) else window.spans[0]
    return next(s for s in range(1000) if newest.earliest < random_moment(window, s) <= newest.latest)


@pytest.mark.parametrize("damage", ["flipped", "deleted"])
def test_damaged_older_wal_segment_is_caught_only_by_the_generation_drill(v3_multigen_file_replica, clone, tmp_path,
                                                                         damage):
    replica = clone(v3_multigen_file_replica)
    segments = sorted(k for k in _older_generation_keys(replica) if "/wal/" in k)
    victim = segments[len(segments) // 2]
    if damage == "deleted":
        delete_object(replica, victim)
    else:
        data = bytearray(read_object(replica, victim))
        data[len(data) // 2] ^= 0xFF
        write_object(replica, victim, bytes(data))
    point, record, findings, _ = _drill(replica, "generation", tmp_path)
    assert point.target.generation == replica.generations[0]
    assert record["status"] == "failed" and [f.kind for f in findings] == ["drill"]
    assert f"generation {replica.generations[0]}" in findings[0].message
    _, newest, _, _ = _drill(replica, "random", tmp_path, seed=_seed_in_newest_generation(replica))
    assert newest["status"] == "ok"  # the newest generation does not need the damaged segment


def test_budget_skips_a_drill_the_run_has_no_time_for():
    import time

    assert within_budget(None, 100.0) == (True, "")
    assert within_budget(time.monotonic() + 60, 10.0) == (True, "")
    fits, reason = within_budget(time.monotonic() + 20, 10.0)
    assert not fits and reason.startswith("skipped:") and "needs ~30s" in reason


def test_history_keeps_the_last_drill_of_each_kind():
    old = {"oldest": {"kind": "oldest", "at": "A"}, "bogus": {"at": "B"}, "random": "not a record"}
    assert carried_drills(old, {"kind": "random", "status": "failed", "at": "C"}) == {
        "oldest": {"kind": "oldest", "at": "A"}, "random": {"kind": "random", "status": "failed", "at": "C"}}
    assert carried_drills(old, {"kind": "random", "status": "skipped"}) == {"oldest": {"kind": "oldest", "at": "A"}}
    assert carried_drills(None, None) == {}


def _v3_state(times: dict[str, datetime]):
    from lib.litestream.discover import ReplicaState
    from lib.litestream.layout import FORMAT_V3
    from lib.litestream.v3.layout import parse_v3_listing
    from lib.storage.base import ObjectInfo

    gen = "0123456789abcdef"
    objects = [ObjectInfo(f"generations/{gen}/{name}", 100, at) for name, at in times.items()]
    return gen, ReplicaState(FORMAT_V3, v3=parse_v3_listing(objects, "generations/"))


def test_a_drill_never_lands_just_after_a_snapshot_whose_index_is_still_uploading():
    """litestream 0.3.13 uploads a snapshot ahead of the rest of its index's WAL (docs/detection.md): a
    point-in-time restore to a moment in between is malformed for litestream restore and restorable
    alike, on a healthy replica. The oldest drill (snapshot + 1 ms) and a random moment that falls
    there are moved past the settle time; moments already past it are kept."""
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    gen, state = _v3_state({
        "snapshots/00000001.snapshot.lz4": t0,
        "wal/00000001_00000000.wal.lz4": t0 - timedelta(seconds=2),  # written before the snapshot
        "wal/00000001_00001000.wal.lz4": t0 + timedelta(seconds=3),  # the rest of the index, later
        "wal/00000002_00000000.wal.lz4": t0 + timedelta(minutes=10),
    })
    window = window_of(state)

    point = choose_point("oldest", state, window, 7, settle_seconds=20)
    assert point.target.generation == gen
    assert point.target.timestamp == t0 + timedelta(seconds=20)
    assert point.label == "2026-12-01T12:00:20.000Z"

    unsettled = choose_point("oldest", state, window, 7)
    assert unsettled.target.timestamp == t0 + timedelta(milliseconds=1)

    for seed in range(40):
        moment = choose_point("random", state, window, seed, settle_seconds=20).target.timestamp
        assert not t0 <= moment < t0 + timedelta(seconds=20)
