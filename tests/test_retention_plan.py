"""The retention planner and the pure selection rules, as tables of listings.

Objects are written in a short notation: ``"A s4"`` is snapshot index 4 of generation A,
``"A w3.1"`` the WAL segment of generation A at index 3 and offset 1, each with an age in
hours before ``NOW``. The window is 24h unless a case says otherwise.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from lib.errors import ConfigError
from lib.litestream.discover import ReplicaState
from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.litestream.v3.layout import format_snapshot_name, format_wal_segment_name, parse_v3_listing
from lib.litestream.v3.plan import plan_v3
from lib.litestream.v5.layout import format_ltx_name, parse_v5_listing
from lib.report.history import GoodRun
from lib.retention.delete import failure_findings
from lib.retention.plan import plan
from lib.retention.policy import RestorePoint, RetentionPlan, RetentionPolicy, as_restore_point, parse_position, policy_for
from lib.retention.select import delete_passes, select_deletions
from lib.storage.base import DeleteFailure, ObjectInfo

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
PREFIX = "generations/"
GENS = {"A": "aaaaaaaaaaaaaaaa", "B": "bbbbbbbbbbbbbbbb", "C": "cccccccccccccccc"}
SHORT = {v: k for k, v in GENS.items()}
DAY = RetentionPolicy(24 * 3600.0)


def key_of(short: str) -> str:
    gen, obj = short.split()
    if obj.startswith("s"):
        return f"{PREFIX}{GENS[gen]}/snapshots/{format_snapshot_name(int(obj[1:]))}"
    index, offset = obj[1:].split(".")
    return f"{PREFIX}{GENS[gen]}/wal/{format_wal_segment_name(int(index), int(offset))}"


def short_of(key: str) -> str:
    gen, kind, name = key[len(PREFIX):].split("/")
    if kind == "snapshots":
        return f"{SHORT[gen]} s{int(name[:8], 16)}"
    return f"{SHORT[gen]} w{int(name[:8], 16)}.{int(name[9:17], 16)}"


def v3_state(objects: dict[str, float], size: int = 100) -> ReplicaState:
    infos = [ObjectInfo(key_of(s), size, NOW - timedelta(hours=h)) for s, h in objects.items()]
    infos.sort(key=lambda o: o.key)
    return ReplicaState(format=FORMAT_V3, v3=parse_v3_listing(infos, PREFIX))


def deleted(decided: RetentionPlan) -> set[str]:
    return {short_of(d.key) for d in decided.delete}


def point(gen: str, index: int, offset: int = 0) -> RestorePoint:
    return RestorePoint(FORMAT_V3, GENS[gen], index, offset)


# A healthy single generation without snapshot-interval: one old snapshot, WAL from it.
ONE_GEN = {"A s0": 50, "A w0.0": 50, "A w0.1": 40, "A w1.0": 30, "A w1.1": 2}
# Snapshots every so often (snapshot-interval): 0 and 2 old, 4 inside the window.
SNAPSHOTS = {
    "A s0": 50, "A w0.0": 50, "A w0.1": 49, "A w1.0": 40, "A w1.1": 39,
    "A s2": 30, "A w2.0": 30, "A w2.1": 29, "A w3.0": 25, "A w3.1": 20,
    "A s4": 10, "A w4.0": 10, "A w4.1": 1,
}
# An old generation that ended 40h ago, and the current one.
TWO_GENS = {"A s0": 60, "A w0.0": 60, "A w0.1": 40, "B s0": 30, "B w0.0": 30, "B w0.1": 1}

PLAN_CASES = [
    # (id, objects, policy, verified points, expected deleted)
    ("one generation, one old snapshot: keep all", ONE_GEN, DAY, (), set()),
    ("old generation goes whole, current stays", TWO_GENS, DAY, (), {"A s0", "A w0.0", "A w0.1"}),
    ("old generation holding the verified-good point stays", TWO_GENS, DAY, (point("A", 0, 1),), set()),
    ("old generation stays while inside the window", TWO_GENS, replace(DAY, window_seconds=48 * 3600.0), (),
     set()),
    ("newest generation older than the window stays",
     {"A s0": 90, "A w0.0": 90, "B s0": 70, "B w0.0": 70, "B w0.1": 60}, DAY, (), {"A s0", "A w0.0"}),
    ("old snapshots and whole WAL indexes below the oldest kept snapshot", SNAPSHOTS, DAY, (),
     {"A s0", "A s2", "A w0.0", "A w0.1", "A w1.0", "A w1.1", "A w2.0", "A w2.1"}),
    ("a WAL index only partly outside the window stays whole",
     {"A s0": 50, "A w0.0": 50, "A w0.1": 20, "A s1": 10, "A w1.0": 10}, DAY, (), {"A s0"}),
    ("keep-snapshots 2 keeps snapshot 2 and the WAL from it", SNAPSHOTS, replace(DAY, keep_snapshots=2), (),
     {"A s0", "A w0.0", "A w0.1", "A w1.0", "A w1.1"}),
    ("keep-snapshots 3 keeps everything", SNAPSHOTS, replace(DAY, keep_snapshots=3), (), set()),
    ("a verified-good point at index 1 keeps snapshot 0 and all WAL", SNAPSHOTS, DAY, (point("A", 1, 1),),
     {"A s2"}),
    ("a verified-good point at index 3 keeps snapshot 2", SNAPSHOTS, DAY, (point("A", 3, 1),),
     {"A s0", "A w0.0", "A w0.1", "A w1.0", "A w1.1"}),
    ("a verified point of another format is ignored", TWO_GENS, DAY, (RestorePoint(FORMAT_V5, txid=5),),
     {"A s0", "A w0.0", "A w0.1"}),
    ("a verified point whose generation is gone protects nothing", TWO_GENS, DAY, (point("C", 3),),
     {"A s0", "A w0.0", "A w0.1"}),
    ("keep-snapshots reaching into an old generation keeps it",
     TWO_GENS, replace(DAY, keep_snapshots=2), (), set()),
    ("retention off keeps everything", SNAPSHOTS, RetentionPolicy(None), (), set()),
    ("newest generation without snapshot: nothing deleted",
     {"A s0": 90, "A w0.0": 90, "B w0.0": 1}, DAY, (), set()),
    ("a WAL index missing in the newest chain: nothing deleted",
     {"A s0": 90, "A w0.0": 90, "A w2.0": 1, "B s0": 200, "B w0.0": 200}, DAY, (), set()),
    ("generation without snapshot inside the window stays",
     {"A w0.0": 20, "B s0": 10, "B w0.0": 10}, DAY, (), set()),
    ("old generation without snapshot goes", {"A w0.0": 30, "B s0": 10, "B w0.0": 10}, DAY, (), {"A w0.0"}),
    ("a one-week window keeps a 50h-old snapshot", SNAPSHOTS, replace(DAY, window_seconds=7 * 86400.0), (),
     set()),
]


@pytest.mark.parametrize("objects, policy, verified, expected",
                         [case[1:] for case in PLAN_CASES], ids=[case[0] for case in PLAN_CASES])
def test_v3_plan_table(objects, policy, verified, expected):
    state = v3_state(objects)

    decided = plan(state, policy, NOW, verified)

    assert deleted(decided) == expected
    assert {d.key for d in decided.keep} | {d.key for d in decided.delete} == {o.key for o in state.objects()}
    assert all(d.reason for d in decided.keep + decided.delete)


def test_plan_never_deletes_what_the_newest_restore_point_needs():
    for case in PLAN_CASES:
        state = v3_state(case[1])
        newest, problems = plan_v3(state.v3)
        if newest is None or problems:
            continue
        needed = {newest.snapshot.info.key} | {s.info.key for s in newest.segments}
        decided = plan(state, case[2], NOW, case[3])
        assert needed.isdisjoint(d.key for d in decided.delete), case[0]


def test_plan_keeps_the_restore_point_just_verified_in_an_old_generation():
    # The newest generation has no snapshot; the verification restored generation A.
    objects = {"A s0": 90, "A w0.0": 90, "B s0": 30, "B w0.0": 30}

    decided = plan(v3_state(objects), DAY, NOW, [point("A", 0, 0)])

    assert deleted(decided) == set()
    assert "verified-good restore point" in decided.reason_for(key_of("A s0"))


def test_plan_orders_deletions_oldest_first():
    decided = plan(v3_state(SNAPSHOTS), DAY, NOW)

    times = [(d.last_modified, d.key) for d in decided.delete]
    assert times == sorted(times)
    assert short_of(decided.delete[0].key) in ("A s0", "A w0.0")


def test_plan_reasons_name_the_rule():
    decided = plan(v3_state(TWO_GENS | {"B s1": 3, "B w1.0": 3, "B s2": 2, "B w2.0": 2}), DAY, NOW)

    assert "generation aaaaaaaaaaaaaaaa" in decided.reason_for(key_of("A s0"))
    assert "older than the 1d window" in decided.reason_for(key_of("A s0"))
    assert "inside the 1d window" in decided.reason_for(key_of("B s1"))
    assert "a newer snapshot is kept" in decided.reason_for(key_of("B s0"))
    assert "not all of it is older than the 1d window" in decided.reason_for(key_of("B w0.1"))
    assert decided.reason_for(key_of("B w2.0")).startswith("needed to restore the newest restore point")


def test_plan_window_boundary_is_inclusive_for_keeping():
    objects = {"A s0": 24, "A w0.0": 24, "B s0": 1, "B w0.0": 1}

    assert deleted(plan(v3_state(objects), DAY, NOW)) == set()
    later = plan(v3_state(objects), DAY, NOW + timedelta(microseconds=1))
    assert deleted(later) == {"A s0", "A w0.0"}


def test_plan_keeps_snapshots_tied_for_newest():
    objects = {"A s0": 40, "A w0.0": 40, "A s1": 30, "A s2": 30, "A w1.0": 30, "A w2.0": 30}

    decided = plan(v3_state(objects), DAY, NOW)

    assert deleted(decided) == {"A s0", "A w0.0"}


def test_plan_of_an_empty_replica_is_empty():
    decided = plan(ReplicaState(format=None), DAY, NOW)

    assert decided.keep == [] and decided.delete == []


def test_plan_bytes():
    decided = plan(v3_state(TWO_GENS, size=1000), DAY, NOW)

    assert (decided.delete_bytes, decided.keep_bytes) == (3000, 3000)


# --------------------------------------------------------------------------- v0.5


def v5_state(files: dict[tuple[int, int, int], float]) -> ReplicaState:
    infos = [ObjectInfo(f"ltx/{level}/{format_ltx_name(lo, hi)}", 50, NOW - timedelta(hours=h))
             for (level, lo, hi), h in files.items()]
    return ReplicaState(format=FORMAT_V5, v5=parse_v5_listing(infos, "ltx/", "file"))


V5_FILES = {
    (9, 1, 10): 70, (9, 1, 20): 40, (9, 1, 30): 5,
    (1, 1, 10): 70, (1, 11, 20): 40, (1, 21, 30): 5, (1, 31, 32): 0.5,
    (0, 31, 31): 1, (0, 32, 32): 0.5, (0, 33, 33): 0.01,
}


def test_v5_plan_reports_what_litestream_would_delete():
    decided = plan(v5_state(V5_FILES), DAY, NOW)

    assert {d.key for d in decided.delete} == {
        "ltx/9/0000000000000001-000000000000000a.ltx",  # snapshots older than 24h, not the newest
        "ltx/9/0000000000000001-0000000000000014.ltx",
        "ltx/1/0000000000000001-000000000000000a.ltx",  # L1 below TXID 0x14 of the newest deleted snapshot
        "ltx/0/000000000000001f-000000000000001f.ltx",  # L0 compacted into L1 and older than 5m
        "ltx/0/0000000000000020-0000000000000020.ltx",
    }
    assert any("report-only: Litestream v0.5 enforces its own retention" in n for n in decided.notes)


def test_v5_plan_keeps_the_newest_snapshot_and_each_levels_last_file():
    files = {(9, 1, 10): 70, (1, 1, 10): 70}

    assert plan(v5_state(files), DAY, NOW).delete == []


# --------------------------------------------------------------------------- selection before deleting


def test_select_deletions_takes_only_what_the_fresh_listing_still_plans():
    state = v3_state(SNAPSHOTS)
    planned = plan(state, DAY, NOW)
    # Re-listed with the margin: now - 10m; index 2 (29h/30h old) is still outside.
    fresh = plan(state, DAY, NOW - timedelta(minutes=10))

    chosen = select_deletions(planned, fresh, state)

    assert {d.key for d in chosen} == {d.key for d in planned.delete}


def test_select_deletions_skips_objects_inside_the_margin():
    objects = {"A s0": 24.1, "A w0.0": 24.1, "B s0": 1, "B w0.0": 1}
    state = v3_state(objects)
    planned = plan(state, DAY, NOW)
    fresh = plan(state, DAY, NOW - timedelta(minutes=10))

    assert deleted(planned) == {"A s0", "A w0.0"}
    assert select_deletions(planned, fresh, state) == []


def test_select_deletions_skips_a_changed_object_and_the_rest_of_its_index():
    state = v3_state(SNAPSHOTS)
    planned = plan(state, DAY, NOW)
    rewritten = [o if o.key != key_of("A w1.1") else ObjectInfo(o.key, 999, o.last_modified)
                 for o in state.objects()]
    fresh_state = ReplicaState(format=FORMAT_V3, v3=parse_v3_listing(sorted(rewritten, key=lambda o: o.key), PREFIX))
    fresh = plan(fresh_state, DAY, NOW - timedelta(minutes=10))

    chosen = {short_of(d.key) for d in select_deletions(planned, fresh, fresh_state)}

    assert chosen == {"A s0", "A s2", "A w0.0", "A w0.1", "A w2.0", "A w2.1"}


def test_select_deletions_drops_an_index_that_gained_a_segment():
    state = v3_state(SNAPSHOTS)
    planned = plan(state, DAY, NOW)
    fresh_state = v3_state(SNAPSHOTS | {"A w0.2": 48})
    fresh = plan(fresh_state, DAY, NOW - timedelta(minutes=10))

    chosen = {short_of(d.key) for d in select_deletions(planned, fresh, fresh_state)}

    assert "A w0.2" not in chosen  # never planned, so never deleted
    assert not {"A w0.0", "A w0.1"} & chosen  # and its index stays whole
    assert {"A w1.0", "A w1.1", "A s0"} <= chosen


def test_select_deletions_of_a_v5_plan_is_empty():
    state = v5_state(V5_FILES)
    planned = plan(state, DAY, NOW)

    assert planned.delete
    assert select_deletions(planned, planned, state) == []


def test_delete_passes_put_offset_zero_segments_last_and_oldest_first():
    decided = plan(v3_state(SNAPSHOTS), DAY, NOW)

    first, last = delete_passes(decided.delete)

    assert {short_of(d.key) for d in last} == {"A w0.0", "A w1.0", "A w2.0"}
    assert [short_of(d.key) for d in first] == ["A s0", "A w0.1", "A w1.1", "A s2", "A w2.1"]


# --------------------------------------------------------------------------- policy and positions


def settings(**kw):
    return SimpleNamespace(**{"retention_seconds": None, "keep_snapshots": 1, **kw})


def replica(retention_seconds=None):
    return SimpleNamespace(retention_seconds=retention_seconds)


POLICY_CASES = [
    ("Litestream's default", replica(), settings(), None, 86400.0, "Litestream's default"),
    ("litestream.yml retention", replica(3600.0), settings(), None, 3600.0, "litestream.yml retention"),
    ("settings win over litestream.yml", replica(3600.0), settings(retention_seconds=7200.0), None, 7200.0,
     "restorable settings"),
    ("--retention wins over all", replica(3600.0), settings(retention_seconds=7200.0), 60.0, 60.0, "--retention"),
    ("retention: 0 in litestream.yml turns it off", replica(0.0), settings(), None, None,
     "retention disabled in litestream.yml"),
    ("settings window still applies when litestream's is off", replica(0.0), settings(retention_seconds=10.0),
     None, 10.0, "restorable settings"),
    ("no settings object at all", replica(), None, None, 86400.0, "Litestream's default"),
]


@pytest.mark.parametrize("rep, db_settings, override, window, source",
                         [c[1:] for c in POLICY_CASES], ids=[c[0] for c in POLICY_CASES])
def test_policy_for(rep, db_settings, override, window, source):
    policy = policy_for(rep, db_settings, override)

    assert (policy.window_seconds, policy.source) == (window, source)


def test_policy_for_reads_keep_snapshots_and_renders_itself():
    policy = policy_for(replica(), settings(keep_snapshots=3))

    assert policy.keep_snapshots == 3
    assert str(policy) == ("window 1d (Litestream's default), keep at least 3 snapshot(s) and the verified-good "
                           "restore point, margin 10m")


@pytest.mark.parametrize("override, db_settings", [(0.0, settings()), (None, settings(retention_seconds=-1.0)),
                                                    (None, settings(keep_snapshots=-2))])
def test_policy_for_rejects_non_positive_values(override, db_settings):
    with pytest.raises(ConfigError):
        policy_for(replica(), db_settings, override)


POSITION_CASES = [
    ("aaaaaaaaaaaaaaaa/00000003:4152", FORMAT_V3, RestorePoint(FORMAT_V3, GENS["A"], 3, 4152)),
    ("aaaaaaaaaaaaaaaa/0000000a:0", FORMAT_V3, RestorePoint(FORMAT_V3, GENS["A"], 10, 0)),
    ("000000000000002e", FORMAT_V5, RestorePoint(FORMAT_V5, txid=0x2E)),
    ("000000000000002e", FORMAT_V3, None),
    ("garbage", FORMAT_V3, None),
    (None, FORMAT_V3, None),
    ("aaaaaaaaaaaaaaaa/00000003:4152", None, None),
]


@pytest.mark.parametrize("position, fmt, expected", POSITION_CASES)
def test_parse_position(position, fmt, expected):
    assert parse_position(position, fmt) == expected


def test_as_restore_point_reads_a_history_good_run():
    good = GoodRun(at=NOW, format=FORMAT_V3, generation=GENS["A"], position=f"{GENS['A']}/00000002:32",
                   last_backup_at=None, tables={})

    assert as_restore_point(good) == RestorePoint(FORMAT_V3, GENS["A"], 2, 32)
    assert str(as_restore_point(good)) == f"{GENS['A']}/00000002:32"


# --------------------------------------------------------------------------- delete failures


def test_refused_deletes_are_errors_and_other_failures_warnings():
    chosen = plan(v3_state(SNAPSHOTS), DAY, NOW).delete
    failures = [
        DeleteFailure(chosen[0].key, "AccessDenied: Access Denied"),
        DeleteFailure(chosen[1].key, "Permission denied"),
        DeleteFailure(chosen[2].key, "SlowDown: Please reduce your request rate"),
    ]

    findings = failure_findings(failures, len(chosen), [], SimpleNamespace(description="s3://bucket"))

    assert [(f.severity, f.kind, f.object) for f in findings] == [
        ("error", "retention", chosen[0].key), ("warning", "retention", chosen[2].key)]
    assert f"could not delete 2 of {len(chosen)} object(s) from s3://bucket: AccessDenied" in findings[0].message
    assert "the next run tries again" in findings[1].message
