import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from lib.config.model import DbConfig, ReplicaConfig
from lib.errors import ConfigError
from lib.report.history import HistoryLocation, HistorySettings, last_good, locate, prune, read_latest, run_key
from lib.checks.drift import row_count_drift
from lib.report.notify import RunNotifier
from lib.report.model import DbResult, Report, error, warning
from lib.storage.local import LocalStore
from lib.storage.s3 import S3Settings, S3Store

DB = "/data/app.db"
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


def file_replica(tmp_path) -> ReplicaConfig:
    (tmp_path / "replica").mkdir(exist_ok=True)
    return ReplicaConfig(name="file", type="file", path=str(tmp_path / "replica"))


def s3_replica(path: str, bucket: str = "bkt", **kwargs) -> ReplicaConfig:
    return ReplicaConfig(name="s3", type="s3", path=path, bucket=bucket, **kwargs)


def result(findings=(), tables=None, generation="0123456789abcdef") -> DbResult:
    return DbResult(db=DB, replica="r", format="v0.3", generation=generation, position="3/00",
                    tables=dict(tables or {"orders": 100, "users": 10}), findings=list(findings))


def run_once(environ, replica, res: DbResult, started_at=T0) -> Report:
    notifier = RunNotifier.from_environ(environ, secrets=[])
    notifier.run_started()
    report = Report(results=[res], started_at=started_at)
    notifier.run_finished(report, [(DbConfig(DB, (replica,)), replica, res)])
    return report


# --------------------------------------------------------------------------- where


@pytest.mark.parametrize("path, prefix", [
    ("backups/app.db", "backups/app.db.restorable/history/data_app.db/s3/"),
    ("/backups/app.db/", "backups/app.db.restorable/history/data_app.db/s3/"),
    ("", ".restorable/history/data_app.db/s3/"),
    (".", ".restorable/history/data_app.db/s3/"),
])
def test_s3_history_sits_beside_the_replica_path(path, prefix):
    location = locate(DbConfig(DB, ()), s3_replica(path, endpoint="http://127.0.0.1:1"), HistorySettings())
    assert location.prefix == prefix
    assert isinstance(location.store, S3Store) and location.store.bucket == "bkt"


@pytest.mark.parametrize("path", ["backups/app.db", ""])
def test_s3_history_is_outside_everything_litestream_lists(path):
    prefix = locate(DbConfig(DB, ()), s3_replica(path, endpoint="http://127.0.0.1:1"), HistorySettings()).prefix
    base = path.strip("/")
    litestream_prefixes = [f"{base}/generations/", f"{base}/0000/", f"{base}/0009/", "generations/", "0000/"]
    if base:
        litestream_prefixes.append(f"{base}/")
    assert not any(prefix.startswith(p) for p in litestream_prefixes)


def test_file_history_is_a_sibling_directory(tmp_path):
    location = locate(DbConfig(DB, ()), file_replica(tmp_path), HistorySettings())
    assert location.store.root == tmp_path / "replica.restorable"
    assert location.prefix == "history/data_app.db/file/"


def test_configured_prefix_in_the_bucket():
    settings = HistorySettings(prefix="ops/restorable/")
    location = locate(DbConfig(DB, ()), s3_replica("backups/app.db", endpoint="http://127.0.0.1:1"), settings)
    assert location.prefix == "ops/restorable/data_app.db/s3/"


@pytest.mark.parametrize("path, prefix", [
    ("backups/app.db", "backups/app.db/history"),
    ("", "generations/history"),
    ("", "0000"),
    ("", "/"),
])
def test_configured_prefix_inside_the_replica_is_refused(path, prefix):
    with pytest.raises(ConfigError, match="RESTORABLE_HISTORY_PREFIX"):
        locate(DbConfig(DB, ()), s3_replica(path, endpoint="http://127.0.0.1:1"), HistorySettings(prefix=prefix))


def test_configured_directory_for_file_replicas(tmp_path):
    replica = file_replica(tmp_path)
    relative = locate(DbConfig(DB, ()), replica, HistorySettings(prefix="hist"))
    assert relative.store.root == tmp_path / "hist"
    with pytest.raises(ConfigError):
        locate(DbConfig(DB, ()), replica, HistorySettings(prefix=str(tmp_path / "replica" / "hist")))


def test_settings_from_environment():
    settings = HistorySettings.from_environ({"RESTORABLE_HISTORY_PREFIX": "h/", "RESTORABLE_HISTORY_KEEP": "20",
                                             "RESTORABLE_HISTORY_KEEP_DAYS": "7"})
    assert settings == HistorySettings(enabled=True, prefix="h/", keep_days=7, keep_count=20)
    assert not HistorySettings.from_environ({"RESTORABLE_HISTORY": "off"}).enabled
    with pytest.raises(ConfigError, match="RESTORABLE_HISTORY_KEEP"):
        HistorySettings.from_environ({"RESTORABLE_HISTORY_KEEP": "0"})


# --------------------------------------------------------------------------- write and read


def test_each_run_writes_a_report_and_the_latest_pointer(tmp_path):
    replica = file_replica(tmp_path)
    run_once({}, replica, result())

    location = locate(DbConfig(DB, ()), replica, HistorySettings())
    latest = read_latest(location)
    assert latest["status"] == "ok"
    assert latest["db"] == DB
    assert latest["alerted"] == "good"
    run_doc = json.loads((location.store.root / latest["report_key"]).read_text())
    assert run_doc["result"]["tables"] == {"orders": 100, "users": 10}
    assert run_doc["result"]["generation"] == "0123456789abcdef"
    assert "result" not in latest  # the pointer stays small


def test_previous_returns_the_last_run(tmp_path):
    replica = file_replica(tmp_path)
    run_once({}, replica, result([error("wal_gap", "gap")]))

    notifier = RunNotifier.from_environ({}, secrets=[])
    previous = notifier.previous(DbConfig(DB, (replica,)), replica)
    assert previous["status"] == "failed"
    assert previous["kinds"] == ["wal_gap"]


def test_previous_is_none_before_the_first_run(tmp_path):
    replica = file_replica(tmp_path)
    assert RunNotifier.from_environ({}, secrets=[]).previous(DbConfig(DB, (replica,)), replica) is None


def test_last_good_survives_bad_runs(tmp_path):
    replica = file_replica(tmp_path)
    run_once({}, replica, result(generation="00000000000000aa"), T0)
    run_once({}, replica, result([error("wal_gap", "gap")], generation="00000000000000bb"), T0 + timedelta(hours=1))

    location = locate(DbConfig(DB, ()), replica, HistorySettings())
    good = last_good(location.store, location.prefix)
    assert good.at == T0
    assert good.generation == "00000000000000aa"
    assert good.tables == {"orders": 100, "users": 10}
    assert read_latest(location)["status"] == "failed"


def test_last_good_is_none_without_history(tmp_path):
    assert last_good(LocalStore(tmp_path / "nothing"), "history/x/") is None


def test_status_since_marks_when_a_problem_began(tmp_path):
    replica = file_replica(tmp_path)
    bad = [error("wal_gap", "gap")]
    for hour in range(3):
        run_once({}, replica, result(bad), T0 + timedelta(hours=hour))

    latest = read_latest(locate(DbConfig(DB, ()), replica, HistorySettings()))
    assert latest["status_since"] == "2024-05-01T10:00:00.000Z"
    assert latest["checked_at"] == "2024-05-01T12:00:00.000Z"


def test_history_off_writes_nothing(tmp_path):
    replica = file_replica(tmp_path)
    run_once({"RESTORABLE_HISTORY": "off"}, replica, result())
    assert not (tmp_path / "replica.restorable").exists()


# --------------------------------------------------------------------------- read-only


def test_unwritable_history_directory_is_one_warning_and_no_failure(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    # The history root is taken by a file, so every write fails (root ignores chmod).
    (tmp_path / "replica.restorable").write_text("not a directory")
    replicas = [file_replica(tmp_path), ReplicaConfig(name="other", type="file", path=str(tmp_path / "replica"))]
    notifier = RunNotifier.from_environ({}, secrets=[])
    notifier.run_started()
    results = [result(), result([warning("stale", "old")])]
    report = Report(results=results, started_at=T0)
    notifier.run_finished(report, [(DbConfig(DB, (r,)), r, res) for r, res in zip(replicas, results)])

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "history" in r.getMessage()]
    assert len(warnings) == 1
    assert "verification is unaffected" in warnings[0].getMessage()
    assert report.status == "warning"
    assert report.exit_code() == 0
    assert report.run_findings == []


def test_unreadable_history_means_no_previous(tmp_path, caplog):
    notifier = RunNotifier.from_environ({}, secrets=[])
    replica = file_replica(tmp_path)
    location = locate(DbConfig(DB, ()), replica, HistorySettings())
    location.store.put(location.latest_key, b"{not json")

    assert notifier.previous(DbConfig(DB, (replica,)), replica) is None
    assert "cannot read" not in caplog.text  # reported once, with the run's other history problems
    notifier.run_finished(Report(), [])
    assert "history unavailable (cannot read" in caplog.text


# --------------------------------------------------------------------------- pruning


def _put_runs(location: HistoryLocation, moments: list[datetime]) -> None:
    for moment in moments:
        location.store.put(run_key(location, moment, "ok"), b"{}")


def test_prune_keeps_the_newest_reports(tmp_path):
    location = HistoryLocation(LocalStore(tmp_path), "history/db/r/")
    moments = [T0 + timedelta(minutes=m) for m in range(10)]
    _put_runs(location, moments)
    location.store.put(location.latest_key, b"{}")
    location.store.put(location.runs_prefix + "README.txt", b"someone else's")

    assert prune(location, T0 + timedelta(hours=1), keep_days=30, keep_count=4) == 6

    kept = [o.key for o in location.store.list(location.runs_prefix)]
    assert kept == sorted([run_key(location, m, "ok") for m in moments[-4:]] +
                          [location.runs_prefix + "README.txt"])
    assert location.store.list(location.latest_key)


def test_prune_drops_reports_older_than_the_age_limit(tmp_path):
    location = HistoryLocation(LocalStore(tmp_path), "history/db/r/")
    _put_runs(location, [T0 - timedelta(days=40), T0 - timedelta(days=31), T0 - timedelta(days=2), T0])

    assert prune(location, T0, keep_days=30, keep_count=500) == 2
    assert len(location.store.list(location.runs_prefix)) == 2


def test_runs_prune_themselves(tmp_path):
    replica = file_replica(tmp_path)
    for minute in range(5):
        run_once({"RESTORABLE_HISTORY_KEEP": "3"}, replica, result(), datetime.now(timezone.utc)
                 + timedelta(minutes=minute))

    location = locate(DbConfig(DB, ()), replica, HistorySettings())
    assert len(location.store.list(location.runs_prefix)) == 3


# --------------------------------------------------------------------------- drift


def test_no_drift_without_a_previous_run():
    assert row_count_drift(None, {"orders": 1}, 0.1, 0.5) == []


@pytest.mark.parametrize("now, severity", [
    (100, None), (91, None), (89, "warning"), (50, "warning"), (49, "error"), (0, "error"), (150, None),
])
def test_row_count_drift_thresholds(now, severity):
    previous = {"status": "ok", "last_good": {"at": "2024-05-01T10:00:00.000Z", "tables": {"orders": 100}}}
    findings = row_count_drift(previous, {"orders": now}, 0.1, 0.5)
    assert [f.severity for f in findings] == ([severity] if severity else [])
    assert all(f.kind == "row_count" and f.object == "orders" for f in findings)


def test_row_count_drift_message_gives_the_numbers():
    previous = {"last_good": {"at": "2024-05-01T10:00:00.000Z", "tables": {"orders": 200}}}
    [finding] = row_count_drift(previous, {"orders": 40}, 0.1, 0.5)
    assert "orders has 40 rows, 80% fewer than the 200 at the last good run (2024-05-01T10:00:00.000Z)" \
        in finding.message


def test_missing_table_is_a_warning_and_empty_tables_are_skipped():
    previous = {"last_good": {"tables": {"orders": 100, "old": 5, "empty": 0}}}
    findings = row_count_drift(previous, {"orders": 100}, 0.1, 0.5)
    assert [(f.severity, f.object) for f in findings] == [("warning", "old")]


def test_disabled_levels_report_nothing():
    previous = {"last_good": {"tables": {"orders": 100}}}
    assert row_count_drift(previous, {"orders": 0}, None, None) == []
    assert [f.severity for f in row_count_drift(previous, {"orders": 0}, 0.1, None)] == ["warning"]


def test_drift_compares_with_the_last_good_run_not_the_last_run(tmp_path):
    replica = file_replica(tmp_path)
    run_once({}, replica, result(tables={"orders": 1000}), T0)
    run_once({}, replica, result([error("wal_gap", "gap")], tables={"orders": 700}), T0 + timedelta(hours=1))

    previous = RunNotifier.from_environ({}, secrets=[]).previous(DbConfig(DB, (replica,)), replica)
    [finding] = row_count_drift(previous, {"orders": 400}, 0.1, 0.5)
    assert finding.severity == "error"
    assert "fewer than the 1000" in finding.message


def test_a_bare_good_result_document_works_as_baseline():
    assert row_count_drift({"status": "ok", "tables": {"t": 10}}, {"t": 1}, 0.1, 0.5)[0].severity == "error"
    assert row_count_drift({"status": "failed", "tables": {"t": 10}}, {"t": 1}, 0.1, 0.5) == []


# --------------------------------------------------------------------------- S3 (moto server)


def test_history_in_a_real_s3_bucket(s3_server):
    bucket = s3_server.make_bucket("hist")
    creds = dict(endpoint=s3_server.endpoint, region="us-east-1", access_key_id=s3_server.access_key_id,
                 secret_access_key=s3_server.secret_access_key, force_path_style=True)
    replica = s3_replica("backups/app.db", bucket=bucket, **creds)

    run_once({}, replica, result(tables={"orders": 10}), T0)
    run_once({}, replica, result([error("wal_gap", "gap")]), T0 + timedelta(hours=1))

    keys = s3_server.list_keys(bucket)
    assert keys and all(k.startswith("backups/app.db.restorable/history/data_app.db/s3/") for k in keys)
    assert "backups/app.db.restorable/history/data_app.db/s3/latest.json" in keys
    assert len([k for k in keys if "/runs/" in k]) == 2
    notifier = RunNotifier.from_environ({}, secrets=[])
    previous = notifier.previous(DbConfig(DB, (replica,)), replica)
    assert previous["status"] == "failed"
    assert previous["last_good"]["tables"] == {"orders": 10}
    store = S3Store(S3Settings(bucket=bucket, **creds))
    assert last_good(store, "backups/app.db.restorable/history/data_app.db/s3/").at == T0


def test_read_only_bucket_is_one_warning_and_no_failure(s3_server, caplog):
    bucket = s3_server.make_bucket("readonly")
    s3_server.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": ["s3:PutObject", "s3:DeleteObject"],
                       "Resource": f"arn:aws:s3:::{bucket}/*"}],
    }))
    replica = s3_replica("backups/app.db", bucket=bucket, endpoint=s3_server.endpoint, region="us-east-1",
                         access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key,
                         force_path_style=True)

    report = run_once({}, replica, result([warning("stale", "latest WAL is 50 minutes old")]))

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "history unavailable" in warnings[0] and "credentials refused" in warnings[0]
    assert (report.status, report.exit_code(), report.run_findings) == ("warning", 0, [])
    assert s3_server.list_keys(bucket) == []
