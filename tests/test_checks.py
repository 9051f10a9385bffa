"""Checks on the restored copy of a real replica: tables, row counts, probes, freshness, staleness."""
from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from lib.checks.freshness import staleness, to_datetime
from lib.checks.integrity import integrity, integrity_problems, open_readonly
from lib.checks.probes import probes
from lib.checks.suite import check_freshness
from lib.config.settings_model import Freshness, Probe
from tests.support import run_job


def verify_job(replica, settings_text: str | None, tmp_path, *args: str) -> tuple[int, dict]:
    extra = []
    if settings_text is not None:
        path = tmp_path / "restorable.yml"
        path.write_text(settings_text)
        extra = ["--settings", str(path)]
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", *extra, *args)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def findings(report) -> list[tuple[str, str]]:
    [db] = report["databases"]
    return [(f["severity"], f["kind"]) for f in db["findings"]]


# --------------------------------------------------------------------------- on a real replica


def test_expectations_met_pass(v3_file_replica, tmp_path):
    items = v3_file_replica.row_counts["items"]
    code, report = verify_job(v3_file_replica, f"""
defaults:
  max-age: 7d
  expect-tables: [items, events]
  min-rows: {{items: {items}}}
  probes:
    - name: items have names
      sql: "SELECT count(*) = (SELECT count(*) FROM items WHERE name LIKE 'item-%') FROM items"
""", tmp_path)
    assert code == 0, report
    assert findings(report) == []


def test_missing_expected_table_fails(v3_file_replica, tmp_path):
    code, report = verify_job(v3_file_replica, "defaults: {max-age: 7d, expect-tables: [items, invoices]}\n",
                              tmp_path)
    assert code == 1
    assert findings(report) == [("error", "row_count")]
    assert "invoices" in report["databases"][0]["findings"][0]["message"]


def test_minimum_rows_above_the_count_fails(v3_s3_replica, tmp_path):
    too_many = v3_s3_replica.row_counts["items"] + 1
    code, report = verify_job(v3_s3_replica, f"defaults: {{max-age: 7d, min-rows: {{items: {too_many}}}}}\n",
                              tmp_path)
    assert code == 1
    assert findings(report) == [("error", "row_count")]
    message = report["databases"][0]["findings"][0]["message"]
    assert f"{v3_s3_replica.row_counts['items']} rows" in message and str(too_many) in message


@pytest.mark.parametrize("sql,expected", [
    ("SELECT count(*) > 1000000 FROM items", "returned 0"),
    ("SELECT nothing FROM nowhere", "failed to run"),
])
def test_failing_probe_fails(sql, expected, v3_file_replica, tmp_path):
    code, report = verify_job(v3_file_replica, f"""
defaults:
  max-age: 7d
  probes:
    - name: big enough
      sql: "{sql}"
""", tmp_path)
    assert code == 1
    assert findings(report) == [("error", "probe")]
    assert expected in report["databases"][0]["findings"][0]["message"]


def test_freshness_query_too_old_is_stale(v3_file_replica, tmp_path):
    code, report = verify_job(v3_file_replica, """
defaults:
  max-age: 7d
  freshness: {sql: "SELECT '2020-01-01T00:00:00Z' FROM items LIMIT 1", max-age: 1h}
""", tmp_path)
    assert code == 1
    assert findings(report) == [("error", "stale")]
    assert "freshness" in report["databases"][0]["findings"][0]["message"]


def test_fresh_freshness_query_passes(v3_file_replica, tmp_path):
    code, report = verify_job(v3_file_replica, """
defaults:
  max-age: 7d
  freshness: {sql: "SELECT strftime('%s', 'now') + 0", max-age: 1h}
""", tmp_path)
    assert code == 0 and findings(report) == []


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_s3_replica"])
def test_max_age_flag_on_an_old_replica_is_stale(fixture, request, tmp_path):
    replica = request.getfixturevalue(fixture)
    wait_until_older_than(replica, seconds=2.2, tmp_path=tmp_path)
    code, report = verify_job(replica, None, tmp_path, "--max-age", "1s")
    assert code == 1
    assert findings(report) == [("error", "stale")]
    assert "limit 1s" in report["databases"][0]["findings"][0]["message"]


def wait_until_older_than(replica, seconds: float, tmp_path) -> None:
    """Sleep until the replica's newest object is ``seconds`` old (fixtures may be fresh)."""
    code, report = verify_job(replica, None, tmp_path, "--max-age", "7d")
    assert code == 0, report
    newest = datetime.fromisoformat(report["databases"][0]["last_backup_at"].replace("Z", "+00:00"))
    time.sleep(max(0.0, (newest + timedelta(seconds=seconds) - datetime.now(timezone.utc)).total_seconds()))


# --------------------------------------------------------------------------- units


def make_db(tmp_path, rows: list[tuple]) -> str:
    path = tmp_path / "t.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, at)")
    con.executemany("INSERT INTO t (at) VALUES (?)", rows)
    con.commit()
    con.close()
    return path


def test_integrity_ok_on_a_sound_database(tmp_path):
    with open_readonly(make_db(tmp_path, [(1,)])) as db:
        assert integrity(db) == []


def test_integrity_rows_are_split_one_per_problem():
    rows = ["*** in database main ***\nOn tree page 2 cell 2: Rowid 9 out of order\nPage 7 is never used",
            "wrong # of entries in index i"]
    assert integrity_problems(rows) == ["On tree page 2 cell 2: Rowid 9 out of order",
                                        "Page 7 is never used", "wrong # of entries in index i"]


@pytest.mark.parametrize("value,expected", [
    ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("2026-01-02 03:04:05", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    (1767322800, datetime(2026, 1, 2, 3, 0, tzinfo=timezone.utc)),
    (1767322800000, datetime(2026, 1, 2, 3, 0, tzinfo=timezone.utc)),
    ("yesterday", None),
    (None, None),
])
def test_to_datetime(value, expected):
    assert to_datetime(value) == expected


def test_freshness_and_probes_units(tmp_path):
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    path = make_db(tmp_path, [("2026-01-01T23:30:00Z",), ("2025-01-01T00:00:00Z",)])
    assert check_freshness(path, Freshness("SELECT max(at) FROM t", 3600), now, tmp_path) == []
    [old] = check_freshness(path, Freshness("SELECT min(at) FROM t", 3600), now, tmp_path)
    assert old.kind == "stale"
    [empty] = check_freshness(path, Freshness("SELECT NULL", 3600), now, tmp_path)
    assert empty.kind == "stale" and "not a timestamp" in empty.message
    with open_readonly(path) as db:
        assert probes(db, [Probe("two rows", "SELECT count(*) = 2 FROM t")]) == []
        [bad] = probes(db, [Probe("no rows", "SELECT * FROM t WHERE 0")])
        assert bad.kind == "probe" and "None" in bad.message


def test_staleness_threshold():
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert staleness(now - timedelta(seconds=59), now, 60) == []
    [stale] = staleness(now - timedelta(seconds=61), now, 60)
    assert stale.kind == "stale" and stale.severity == "error"
    assert staleness(None, now, 60) == []


def test_readonly_open_leaves_no_wal_files(tmp_path):
    path = make_db(tmp_path, [(1,)])
    with open_readonly(path) as db:
        integrity(db)
        with pytest.raises(sqlite3.OperationalError):
            db.execute("INSERT INTO t (at) VALUES (2)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db"]
