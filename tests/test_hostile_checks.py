"""Hostile input for the checks and the run around them (issue 20: 2, 3, 5, 9, 11, 12, 13).

Healthy databases the checks cannot fully read (extension virtual tables, application
collations) are not corruption; user SQL and odd values cannot stall or crash a run;
dates in the future are not freshness; the scratch pre-check counts only what the restore
writes; sweeping leaves alone what is not certainly ours and over; a replica path that is
no directory gets no history beside it.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lib.checks.integrity import integrity, open_readonly
from lib.checks.probes import probes
from lib.checks.suite import check_restored, sqlite_temp_dir
from lib.config.model import DbConfig, ReplicaConfig
from lib.config.settings_model import DbSettings, Probe
from lib.litestream.discover import ReplicaState
from lib.litestream.layout import FORMAT_V5
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v5.layout import format_ltx_name, parse_v5_listing
from lib.report.model import DbResult, Report, could_not_check
from lib.report.notify import RunNotifier
from lib.scratch import MARKER_NAME, STALE_AFTER_SECONDS, Scratch, restore_needs_at_least, sweep_leftovers
from lib.storage.base import ObjectInfo
from tests.support import run_job
from tests.support.litestream import V3, Replicator
from tests.support.replicas import write_config

NOW = datetime.now(timezone.utc)


def frozen_v3_replica(workdir: Path, schema: str, collations: dict | None = None) -> Path:
    """A file replica of a database made by ``schema`` (run with ``collations`` registered), written
    by the real litestream: the database is complete before litestream starts, which snapshots it,
    and stops once the snapshot is there. Returns the litestream.yml."""
    db_path, replica_dir = workdir / "app.db", workdir / "replica"
    con = sqlite3.connect(db_path, isolation_level=None)
    for name, compare in (collations or {}).items():
        con.create_collation(name, compare)
    con.execute("PRAGMA journal_mode = WAL")
    con.executescript(schema)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    config = write_config(V3, workdir / "litestream.yml", db_path,
                          {"type": "file", "path": str(replica_dir), "sync-interval": "100ms"})
    deadline = time.monotonic() + 60
    with Replicator(V3, config, workdir / "litestream.log") as litestream:
        while not list(replica_dir.glob("generations/*/snapshots/*.snapshot.lz4")):
            litestream.check_alive()
            assert time.monotonic() < deadline, litestream.log()
            time.sleep(0.05)
        litestream.stop()
    return config


def verify(config: Path, tmp_path: Path, settings: str | None = None, *args: str,
           env: dict | None = None) -> tuple[int, dict, str]:
    extra = []
    if settings is not None:
        (tmp_path / "restorable.yml").write_text(settings)
        extra = ["--settings", str(tmp_path / "restorable.yml")]
    proc = run_job("jobs.verify", "--config", config, "--json", "--max-age", "3650d", *extra, *args, env=env)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def findings(report: dict) -> list[tuple[str, str]]:
    [db] = report["databases"]
    return [(f["severity"], f["kind"]) for f in db["findings"]]


# --------------------------------------------------------------------------- 2: healthy databases reported failed

VEC0_SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);
INSERT INTO items (name) VALUES ('a'), ('b'), ('c');
CREATE VIRTUAL TABLE vectors USING fts5(embedding);
INSERT INTO vectors (embedding) VALUES ('0.1 0.2'), ('0.3 0.4');
PRAGMA writable_schema = ON;
UPDATE sqlite_master SET sql = 'CREATE VIRTUAL TABLE vectors USING vec0(embedding float[2])' WHERE name = 'vectors';
PRAGMA writable_schema = OFF;
"""


@pytest.mark.slow
def test_virtual_table_of_a_module_we_lack_is_not_counted_and_not_a_failure(tmp_path):
    # sqlite-vec's vec0 is not loaded here (as in any process but the application's)
    config = frozen_v3_replica(tmp_path, VEC0_SCHEMA)

    code, report, stderr = verify(config, tmp_path, "defaults: {expect-tables: [items, vectors]}\n")

    assert code == 0, (report, stderr)
    [db] = report["databases"]
    assert db["tables"]["items"] == 3 and "vectors" not in db["tables"]
    assert db["virtual_tables"] == {"vectors": "vec0"}
    assert db["tables"]["vectors_content"] == 2  # its rows, in an ordinary shadow table, are counted
    assert findings(report) == []


@pytest.mark.slow
def test_min_rows_on_a_virtual_table_is_a_warning_not_a_missing_table(tmp_path):
    config = frozen_v3_replica(tmp_path, VEC0_SCHEMA)

    code, report, _ = verify(config, tmp_path, "defaults: {min-rows: {vectors: 1}}\n")

    assert code == 0
    [db] = report["databases"]
    [finding] = db["findings"]
    assert (finding["severity"], finding["kind"]) == ("warning", "row_count")
    assert "vectors" in finding["message"] and "virtual" in finding["message"]


def _reverse(a: str, b: str) -> int:
    return (a < b) - (a > b)


COLLATION_SCHEMA = """
CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);
CREATE INDEX people_by_name ON people (name COLLATE reverse_order);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
INSERT INTO people (name) SELECT printf('person-%04d', i) FROM n;
"""


@pytest.mark.slow
def test_index_with_an_application_collation_is_checked_and_a_warning(tmp_path):
    config = frozen_v3_replica(tmp_path, COLLATION_SCHEMA, {"reverse_order": _reverse})

    code, report, stderr = verify(config, tmp_path)

    assert code == 0, (report, stderr)
    [db] = report["databases"]
    assert db["tables"]["people"] == 300
    [finding] = db["findings"]
    assert (finding["severity"], finding["kind"]) == ("warning", "integrity")
    assert "people_by_name (reverse_order)" in finding["message"]


def test_damage_beside_an_application_collation_is_still_found(tmp_path):
    path = tmp_path / "damaged.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as con:
        con.create_collation("reverse_order", _reverse)
        con.executescript(COLLATION_SCHEMA + """
            CREATE TABLE other (id INTEGER PRIMARY KEY, v TEXT);
            INSERT INTO other (v) SELECT name FROM people;
            CREATE INDEX other_by_v ON other (v);
            CREATE TABLE empty (x TEXT);
            CREATE INDEX empty_by_x ON empty (x);
            PRAGMA writable_schema = ON;
            UPDATE sqlite_master SET rootpage = (SELECT rootpage FROM sqlite_master WHERE name = 'empty_by_x')
             WHERE name = 'other_by_v';
        """)  # other_by_v now reads an empty index: every row of other is missing from it

    with open_readonly(path) as conn:
        problems = integrity(conn)

    assert [(f.severity, f.kind) for f in problems] == [("error", "integrity"), ("warning", "integrity")]
    assert "missing from index other_by_v" in problems[0].message
    assert "people_by_name" not in problems[0].message and "people_by_name" in problems[1].message


def test_unreadable_restore_is_one_integrity_error_and_no_drift(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"not a database" * 512)
    previous = {"last_good": {"tables": {"items": 96}, "at": "2026-12-01T00:00:00Z"}}

    checked = check_restored(path, DbSettings(), previous, tmp_path)

    assert [(f.severity, f.kind) for f in checked.findings] == [("error", "integrity")]


# --------------------------------------------------------------------------- 9: probes have bounds

@pytest.mark.slow
def test_runaway_probe_is_a_probe_finding_and_the_rest_of_the_verdict_stands(v3_file_replica, tmp_path):
    settings = """
defaults:
  probes:
    - name: forever
      sql: "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
"""
    code, report, stderr = verify(v3_file_replica.config_path, tmp_path, settings, "--max-runtime", "20s")

    assert code == 2, (report, stderr)
    [db] = report["databases"]
    [finding] = db["findings"]
    assert (finding["kind"], finding.get("inconclusive")) == ("probe", True)
    assert "'forever'" in finding["message"] and "budget" in finding["message"]
    assert db["restored"]["sha256"] and db["tables"]["items"] == v3_file_replica.row_counts["items"]


@pytest.mark.slow
def test_probe_building_a_huge_value_is_stopped_by_the_length_limit(v3_file_replica, tmp_path):
    settings = """
defaults:
  probes:
    - name: big
      sql: "SELECT length(randomblob(200000000)) > 0"
"""
    code, report, stderr = verify(v3_file_replica.config_path, tmp_path, settings)

    assert code == 2, (report, stderr)
    [finding] = report["databases"][0]["findings"]
    assert (finding["kind"], finding.get("inconclusive")) == ("probe", True)
    assert "'big'" in finding["message"] and "64.0 MiB" in finding["message"]


def test_probe_temporary_files_go_to_scratch_not_tmpdir(tmp_path):
    path = tmp_path / "t.db"
    with closing(sqlite3.connect(path)) as con:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen: set[str] = set()

    def open_files(_row) -> int:  # called once the sort's runs are on disk: look at them once
        if seen:
            return 1
        for fd in os.listdir("/proc/self/fd"):
            try:
                seen.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        return 1

    with sqlite_temp_dir(scratch), open_readonly(path) as conn:
        conn.execute("PRAGMA cache_size = 10")  # a sort this size spills to temporary files
        conn.create_function("open_files", 1, open_files)
        sql = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 200000) "
               "SELECT count(*) > 0 FROM (SELECT i, randomblob(64) AS b FROM r ORDER BY b) WHERE open_files(i)")
        assert probes(conn, [Probe("sort", sql)]) == []

    temporary = [p for p in seen if "etilqs_" in p]
    assert temporary and all(p.startswith(f"{scratch}/") for p in temporary), seen


# --------------------------------------------------------------------------- 5 and 13: freshness values and future dates

FRESHNESS_SCHEMA = """
CREATE TABLE events (id INTEGER PRIMARY KEY, at_s INTEGER, at_ms INTEGER, at_us INTEGER, at_ns INTEGER,
                     absurd REAL, far TEXT);
INSERT INTO events (at_s, at_ms, at_us, at_ns, absurd, far) VALUES (
    CAST(strftime('%s', 'now') AS INTEGER), CAST(strftime('%s', 'now') AS INTEGER) * 1000,
    CAST(strftime('%s', 'now') AS INTEGER) * 1000000, CAST(strftime('%s', 'now') AS INTEGER) * 1000000000,
    1e20, '9999-12-31T00:00:00Z');
"""


@pytest.fixture(scope="module")
def freshness_replica(tmp_path_factory) -> Path:
    return frozen_v3_replica(tmp_path_factory.mktemp("freshness"), FRESHNESS_SCHEMA)


def freshness_settings(column: str) -> str:
    return f'defaults: {{freshness: {{sql: "SELECT max({column}) FROM events", max-age: 1h}}}}\n'


@pytest.mark.slow
@pytest.mark.parametrize("column", ["at_s", "at_ms", "at_us", "at_ns"])
def test_freshness_column_in_any_epoch_unit_is_read(freshness_replica, tmp_path, column):
    code, report, stderr = verify(freshness_replica, tmp_path, freshness_settings(column))

    assert code == 0, (report, stderr)
    assert findings(report) == []


@pytest.mark.slow
def test_freshness_value_that_is_no_time_names_the_query(freshness_replica, tmp_path):
    code, report, stderr = verify(freshness_replica, tmp_path, freshness_settings("absurd"))

    assert code == 1, (report, stderr)
    [finding] = report["databases"][0]["findings"]
    assert finding["kind"] == "probe" and "max(absurd)" in finding["message"]
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_freshness_value_in_the_year_9999_is_a_warning_not_fresh(freshness_replica, tmp_path):
    code, report, _ = verify(freshness_replica, tmp_path, freshness_settings("far"))

    assert code == 0
    [finding] = report["databases"][0]["findings"]
    assert (finding["severity"], finding["kind"]) == ("warning", "stale")
    assert "max(far)" in finding["message"] and "ahead of" in finding["message"]


@pytest.mark.slow
def test_object_dated_in_the_future_is_a_warning_and_the_age_comes_from_the_rest(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    segment = sorted(replica.replica_dir.glob("generations/*/wal/*.wal.lz4"))[-1]
    future = datetime(2099, 1, 1, tzinfo=timezone.utc).timestamp()
    os.utime(segment, (future, future))

    code, report, _ = verify(replica.config_path, tmp_path)
    assert code == 0
    [finding] = report["databases"][0]["findings"]
    assert (finding["severity"], finding["kind"]) == ("warning", "stale")
    assert finding["object"].endswith(segment.name) and "2099-01-01" in finding["message"]

    code, report, _ = verify(replica.config_path, tmp_path, None, "--max-age", "1s")  # the rest is old
    assert code == 1
    assert sorted(findings(report)) == [("error", "stale"), ("warning", "stale")]


# --------------------------------------------------------------------------- 3: the scratch pre-check

@pytest.fixture
def small_volume(tmp_path):
    """A 40 MiB tmpfs (needs root and mount rights; skipped where the machine refuses)."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.mark.slow
def test_big_snapshot_of_an_old_generation_does_not_make_scratch_too_small(v3_file_replica, clone, small_volume,
                                                                          tmp_path, restorable_env):
    replica = clone(v3_file_replica)
    old = replica.replica_dir / "generations" / "0000000000000001" / "snapshots" / "00000000.snapshot.lz4"
    old.parent.mkdir(parents=True)
    with open(old, "wb") as f:  # listed as 1 GiB, takes no disk: the restore never reads it
        f.truncate(1 << 30)
    past = datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()
    os.utime(old, (past, past))
    env = {**restorable_env, "RESTORABLE_SCRATCH_DIR": str(small_volume)}

    _, report, stderr = verify(replica.config_path, tmp_path, None, env=env)

    [db] = report["databases"]
    assert db["restored"] and db["tables"]["items"] == v3_file_replica.row_counts["items"], (report, stderr)
    assert not [f for f in db["findings"] if "scratch" in f["message"]], db["findings"]
    assert list(small_volume.iterdir()) == []


def _v5_listing(sizes: dict[tuple[int, int, int], int]) -> ReplicaState:
    infos = [ObjectInfo(f"ltx/{level}/{format_ltx_name(lo, hi)}", size, NOW) for (level, lo, hi), size in sizes.items()]
    return ReplicaState(format=FORMAT_V5, v5=parse_v5_listing(infos, "ltx/", "file"))


def test_v5_scratch_bound_is_the_largest_file_the_plan_reads():
    # the newest snapshot (1-30) and the L0 files after it are read; the old snapshot (1-10) is not
    state = _v5_listing({(9, 1, 10): 8 << 30, (9, 1, 30): 1 << 20, (0, 31, 31): 4096, (0, 32, 32): 8192})

    needed = restore_needs_at_least(state, RestoreTarget())

    assert (1 << 20) - (1 << 20) // 32 < needed < 1 << 20


def test_scratch_bound_is_zero_when_the_listing_cannot_tell():
    state = _v5_listing({(9, 1, 30): 1 << 20})

    assert restore_needs_at_least(state, RestoreTarget(timestamp=NOW)) == 0  # planned on header times
    assert restore_needs_at_least(ReplicaState(format=None), RestoreTarget()) == 0


# --------------------------------------------------------------------------- 11: sweeping leftovers

def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_sweep_leaves_a_folder_without_our_marker(tmp_path):
    stranger = tmp_path / f"restorable-{_dead_pid()}-abc"
    stranger.mkdir()
    (stranger / "data").write_text("not ours")

    sweep_leftovers(tmp_path)

    assert (stranger / "data").exists()


def test_sweep_leaves_a_young_folder_of_another_pid_namespace(tmp_path):
    other = tmp_path / f"restorable-{_dead_pid()}-abc"
    other.mkdir()
    (other / MARKER_NAME).write_text(json.dumps({"pid": 1, "pid_namespace": "pid:[1]", "boot_id": "elsewhere"}))

    sweep_leftovers(tmp_path)
    assert other.exists()

    old = datetime.now(timezone.utc).timestamp() - STALE_AFTER_SECONDS - 60
    os.utime(other / MARKER_NAME, (old, old))
    sweep_leftovers(tmp_path)
    assert not other.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a folder to another user")
def test_sweep_leaves_a_folder_owned_by_someone_else(tmp_path):
    scratch = Scratch(tmp_path)
    leftover = scratch.path
    Scratch.live.discard(leftover)
    marker = json.loads((leftover / MARKER_NAME).read_text())
    (leftover / MARKER_NAME).write_text(json.dumps({**marker, "pid": _dead_pid()}))
    os.chown(leftover, 65534, 65534)

    sweep_leftovers(tmp_path)

    assert leftover.exists()
    shutil.rmtree(leftover)


def test_sweep_removes_our_folder_once_its_process_is_gone(tmp_path):
    scratch = Scratch(tmp_path)
    leftover = scratch.path
    Scratch.live.discard(leftover)
    marker = json.loads((leftover / MARKER_NAME).read_text())
    (leftover / MARKER_NAME).write_text(json.dumps({**marker, "pid": _dead_pid()}))

    sweep_leftovers(tmp_path)

    assert not leftover.exists()


# --------------------------------------------------------------------------- 12: no history beside a non-directory

@pytest.mark.parametrize("kind", ["missing", "regular file"])
def test_replica_path_that_is_no_directory_gets_no_history_beside_it(tmp_path, kind, restorable_env):
    path = tmp_path / "replica"
    if kind == "regular file":
        path.write_text("not a replica")

    proc = run_job("jobs.verify", path.as_uri(), "--json", env={**restorable_env, "RESTORABLE_SCRATCH_DIR": str(tmp_path)})

    assert proc.returncode != 0
    assert not (tmp_path / "replica.restorable").exists(), sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["missing", "regular file", "device"])
def test_history_is_not_written_beside_a_replica_path_that_is_no_directory(tmp_path, kind):
    path = tmp_path / "replica"
    if kind == "regular file":
        path.write_text("not a replica")
    if kind == "device":
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
        except PermissionError:
            pytest.skip("needs the right to make a device node")
    replica = ReplicaConfig(name="file", type="file", path=str(path))
    result = DbResult(db="/data/app.db", replica="file", findings=[could_not_check("unreachable", "cannot list")])
    notifier = RunNotifier.from_environ({}, secrets=[])
    notifier.run_started()

    notifier.run_finished(Report(results=[result]), [(DbConfig("/data/app.db", (replica,)), replica, result)])

    assert not Path(f"{path}.restorable").exists()
