import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sentry_sdk

from lib.config.model import DbConfig, ReplicaConfig
from lib.report.notify import RunNotifier
from lib.report.model import DbResult, Report, Restored, could_not_check, error, warning
from lib.report.sentry import SentrySettings, is_valid_crontab
from tests.support import REPO_ROOT, restorable_env
from tests.support.sentry_server import SentryServer

DB = "/data/app.db"


@pytest.fixture
def sentry():
    with SentryServer() as server:
        yield server
    forget_sentry_client()


def forget_sentry_client() -> None:
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=2)
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def replica(tmp_path) -> ReplicaConfig:
    (tmp_path / "replica").mkdir()  # history lives beside an existing replica directory
    return ReplicaConfig(name="file", type="file", path=str(tmp_path / "replica"))


def result(findings, db: str = DB) -> DbResult:
    return DbResult(db=db, replica="file", format="v0.3", generation="0123456789abcdef", position="7/1f00",
                    restored=Restored(8192, "ab" * 32, 4096), tables={"orders": 120, "users": 7},
                    findings=list(findings))


def run_once(environ, replica, *results: DbResult) -> Report:
    notifier = RunNotifier.from_environ(environ, secrets=[])
    notifier.run_started()
    report = Report(results=list(results))
    targets = [(DbConfig(r.db, (replica,)), replica, r) for r in results]
    notifier.run_finished(report, targets)
    return report


FAILED = [error("wal_gap", "generation 0123456789abcdef has WAL index 7 but no segment at offset 0"),
          warning("stale", "latest WAL is 50 minutes old")]
INCONCLUSIVE = [could_not_check("unreachable", "s3://bucket (endpoint https://x) unreachable (EndpointConnectionError)")]
WARNING = [warning("stale", "latest WAL is 50 minutes old")]


def test_failed_database_sends_one_error_event_with_fingerprint_tags_and_context(sentry, replica):
    environ = {"SENTRY_DSN": sentry.dsn, "RAILWAY_ENVIRONMENT_NAME": "production",
               "RAILWAY_GIT_COMMIT_SHA": "c0ffee", "RAILWAY_SERVICE_ID": "svc-1",
               "RAILWAY_SERVICE_NAME": "verifier", "RAILWAY_DEPLOYMENT_ID": "dep-9"}
    run_once(environ, replica, result(FAILED))

    [event] = sentry.events()
    assert event["level"] == "error"
    assert event["fingerprint"] == ["restorable", DB, replica.describe(), "wal_gap"]
    assert event["environment"] == "production"
    assert event["release"] == "c0ffee"
    tags = event["tags"]
    assert tags["database"] == DB
    assert tags["format"] == "v0.3"
    assert tags["generation"] == "0123456789abcdef"
    assert tags["kind"] == "wal_gap"
    assert tags["status"] == "failed"
    assert tags["railway.service_id"] == "svc-1"
    assert tags["railway.service"] == "verifier"
    assert tags["railway.deployment_id"] == "dep-9"
    context = event["contexts"]["restorable"]
    assert context["status"] == "failed"
    assert context["tables"] == {"orders": 120, "users": 7}
    assert [f["kind"] for f in context["findings"]] == ["wal_gap", "stale"]
    assert event["message"].startswith(f"{DB} on {replica.describe()}: backup verification failed: generation")
    assert "What to do:" in event["message"]


@pytest.mark.parametrize("findings, level, kind", [
    (FAILED, "error", "wal_gap"),
    (INCONCLUSIVE, "warning", "unreachable"),
    (WARNING, "warning", "stale"),
])
def test_event_level_follows_database_status(sentry, replica, findings, level, kind):
    run_once({"SENTRY_DSN": sentry.dsn}, replica, result(findings))

    [event] = sentry.events()
    assert event["level"] == level
    assert event["tags"]["kind"] == kind


def test_ok_database_sends_no_event(sentry, replica):
    run_once({"SENTRY_DSN": sentry.dsn}, replica, result([]))

    assert sentry.events() == []


def test_one_event_per_database_needing_attention(sentry, replica):
    run_once({"SENTRY_DSN": sentry.dsn}, replica,
             result(FAILED, "/data/a.db"), result([], "/data/b.db"), result(WARNING, "/data/c.db"))

    assert sorted(e["tags"]["database"] for e in sentry.events()) == ["/data/a.db", "/data/c.db"]


def test_recurring_problem_keeps_its_fingerprint(sentry, replica):
    run_once({"SENTRY_DSN": sentry.dsn}, replica, result(FAILED))
    run_once({"SENTRY_DSN": sentry.dsn}, replica, result(list(reversed(FAILED))))

    first, second = sentry.events()
    assert first["fingerprint"] == second["fingerprint"]


def test_sentry_settings_override_railway_values():
    settings = SentrySettings.from_environ({
        "SENTRY_DSN": "http://k@127.0.0.1:9/1", "SENTRY_ENVIRONMENT": "staging", "RAILWAY_ENVIRONMENT_NAME": "prod",
        "SENTRY_RELEASE": "v1.2", "RAILWAY_GIT_COMMIT_SHA": "abc", "SENTRY_MONITOR_SLUG": "nightly-check",
    })

    assert (settings.environment, settings.release, settings.monitor_slug) == ("staging", "v1.2", "nightly-check")


def test_without_dsn_nothing_sentry_happens(replica):
    forget_sentry_client()
    notifier = RunNotifier.from_environ({}, secrets=[])
    notifier.run_started()
    notifier.run_finished(Report(results=[result(FAILED)]), [(DbConfig(DB, (replica,)), replica, result(FAILED))])
    notifier.run_aborted("SIGTERM")

    assert notifier.sentry is None
    assert not sentry_sdk.get_client().is_active()


@pytest.mark.parametrize("findings, closing", [
    ([], "ok"), (WARNING, "ok"), (FAILED, "error"), (INCONCLUSIVE, "error"),
])
def test_check_in_opens_in_progress_and_closes_with_run_status(sentry, replica, findings, closing):
    run_once({"SENTRY_DSN": sentry.dsn}, replica, result(findings))

    opened, closed = sentry.check_ins()
    assert (opened["status"], closed["status"]) == ("in_progress", closing)
    assert opened["check_in_id"] == closed["check_in_id"]
    assert opened["monitor_slug"] == closed["monitor_slug"] == "restorable-verify"
    assert closed["duration"] >= 0


def test_check_in_upserts_monitor_with_schedule_margin_and_max_runtime(sentry, replica):
    environ = {"SENTRY_DSN": sentry.dsn, "VERIFY_SCHEDULE": "*/15 * * * *", "SENTRY_MONITOR_SLUG": "db-backups",
               "SENTRY_CHECKIN_MARGIN": "5", "SENTRY_MAX_RUNTIME": "12"}
    run_once(environ, replica, result([]))

    opened, closed = sentry.check_ins()
    expected = {"schedule": {"type": "crontab", "value": "*/15 * * * *"}, "timezone": "UTC",
                "checkin_margin": 5, "max_runtime": 12}
    assert opened["monitor_config"] == closed["monitor_config"] == expected
    assert opened["monitor_slug"] == "db-backups"


def test_default_monitor_is_hourly_with_room_to_start_late(sentry, replica):
    run_once({"SENTRY_DSN": sentry.dsn}, replica, result([]))

    config = sentry.check_ins()[0]["monitor_config"]
    assert config == {"schedule": {"type": "crontab", "value": "0 * * * *"}, "timezone": "UTC",
                      "checkin_margin": 10, "max_runtime": 35}


@pytest.mark.parametrize("job_max_runtime, minutes", [("10m", 15), ("90s", 7), ("2h", 125), ("nonsense", 35)])
def test_monitor_max_runtime_follows_the_jobs_own_limit(job_max_runtime, minutes):
    settings = SentrySettings.from_environ({"SENTRY_DSN": "http://k@127.0.0.1:9/1",
                                            "RESTORABLE_MAX_RUNTIME": job_max_runtime})
    assert settings.max_runtime == minutes


def test_bad_schedule_checks_in_without_changing_the_monitor(sentry, replica, caplog):
    run_once({"SENTRY_DSN": sentry.dsn, "VERIFY_SCHEDULE": "hourly"}, replica, result([]))

    assert [c["status"] for c in sentry.check_ins()] == ["in_progress", "ok"]
    assert all("monitor_config" not in c for c in sentry.check_ins())
    assert "VERIFY_SCHEDULE" in caplog.text


@pytest.mark.parametrize("value, valid", [
    ("0 * * * *", True), ("*/10 1-5 * * MON-FRI", True), ("@hourly", False), ("0 * * *", False),
    ("0 * * * * *", False), ("0 * * * ;", False),
])
def test_crontab_validation(value, valid):
    assert is_valid_crontab(value) is valid


def test_aborted_run_reports_error_check_in_and_event_before_returning(sentry, replica):
    notifier = RunNotifier.from_environ({"SENTRY_DSN": sentry.dsn}, secrets=[])
    notifier.run_started()
    notifier.run_aborted("SIGTERM received")

    # run_aborted flushes: everything is there without waiting.
    assert [c["status"] for c in sentry.check_ins()] == ["in_progress", "error"]
    [event] = sentry.events()
    assert event["level"] == "error"
    assert "SIGTERM received" in event["message"]
    assert event["fingerprint"] == ["restorable", "aborted", "verify"]


def test_check_in_is_closed_only_once(sentry, replica):
    notifier = RunNotifier.from_environ({"SENTRY_DSN": sentry.dsn}, secrets=[])
    notifier.run_started()
    notifier.run_finished(Report(results=[result([])]), [(DbConfig(DB, (replica,)), replica, result([]))])
    notifier.run_aborted("SIGTERM during exit")

    assert [c["status"] for c in sentry.check_ins()] == ["in_progress", "ok"]


def test_run_findings_get_one_event(sentry, replica):
    notifier = RunNotifier.from_environ({"SENTRY_DSN": sentry.dsn}, secrets=[])
    notifier.run_started()
    report = Report(results=[], run_findings=[error("interrupted", "max runtime of 600 s passed")])
    notifier.run_finished(report, [])

    [event] = sentry.events()
    assert event["fingerprint"] == ["restorable", "run", "interrupted"]
    assert event["level"] == "error"
    assert sentry.check_ins()[-1]["status"] == "error"


def test_unreachable_sentry_never_raises_or_changes_the_report(replica):
    with SentryServer() as dead:
        dsn = dead.dsn
    report = run_once({"SENTRY_DSN": dsn}, replica, result(FAILED))

    assert report.status == "failed"
    assert report.exit_code() == 1
    forget_sentry_client()


SIGTERM_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from lib.report.notify import RunNotifier

    notifier = RunNotifier.from_environ(os.environ, secrets=[])

    def on_term(signum, frame):
        notifier.run_aborted("SIGTERM")
        sys.exit(130)

    signal.signal(signal.SIGTERM, on_term)
    notifier.run_started()
    print("started", flush=True)
    time.sleep(60)
""")


def test_sigterm_flushes_error_check_in_before_the_process_exits(sentry):
    env = restorable_env({"SENTRY_DSN": sentry.dsn, "LOG_FORMAT": "json"})
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    # The process is gone: whatever arrived was flushed before exit.
    assert [c["status"] for c in sentry.check_ins()] == ["in_progress", "error"]
    assert "SIGTERM" in sentry.events()[0]["message"]


# --------------------------------------------------------------------------- the real job


def test_verify_job_checks_in_ok_and_sends_no_event_for_a_good_replica(sentry, v3_file_replica, clone,
                                                                      restorable_env):
    from tests.support import run_job

    replica = clone(v3_file_replica)
    env = {**restorable_env, "SENTRY_DSN": sentry.dsn, "SENTRY_MONITOR_SLUG": "e2e-verify"}
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", "--max-age", "7d", env=env)

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok"
    check_ins = sentry.check_ins()
    assert [c["status"] for c in check_ins] == ["in_progress", "ok"]
    assert {c["monitor_slug"] for c in check_ins} == {"e2e-verify"}
    assert check_ins[0]["monitor_config"]["schedule"] == {"type": "crontab", "value": "0 * * * *"}
    assert sentry.events() == []
    latest = Path(f"{replica.replica_dir}.restorable").rglob("latest.json")
    assert [json.loads(p.read_text())["status"] for p in latest] == ["ok"]


def test_verify_job_reports_a_broken_replica_as_error_event_and_check_in(sentry, v3_file_replica, clone,
                                                                       restorable_env):
    import shutil

    from tests.support import run_job

    replica = clone(v3_file_replica)
    shutil.rmtree(replica.replica_dir / "generations")
    env = {**restorable_env, "SENTRY_DSN": sentry.dsn}
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", "--max-age", "7d", env=env)

    report = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert report["databases"][0]["status"] == "failed"
    assert [c["status"] for c in sentry.check_ins()] == ["in_progress", "error"]
    [event] = sentry.events()
    assert event["tags"]["database"] == str(replica.db_path)
    assert event["level"] == "error"
    assert event["fingerprint"] == ["restorable", str(replica.db_path), f"file://{replica.replica_dir}", "no_backups"]


def test_one_broken_target_does_not_silence_the_others(sentry, replica):
    notifier = RunNotifier.from_environ({"SENTRY_DSN": sentry.dsn}, secrets=[])
    notifier.run_started()
    broken = result(FAILED, "/data/a.db")
    broken.findings = None  # reporting on this one fails inside the notifier
    good = result(FAILED, "/data/b.db")
    notifier.run_finished(Report(results=[good]), [(DbConfig("/data/a.db", (replica,)), replica, broken),
                                                   (DbConfig("/data/b.db", (replica,)), replica, good)])

    assert [e["tags"]["database"] for e in sentry.events()] == ["/data/b.db"]
    assert sentry.check_ins()[-1]["status"] == "error"


def test_malformed_dsn_turns_sentry_off_with_one_warning(replica, caplog):
    forget_sentry_client()
    report = run_once({"SENTRY_DSN": "not-a-dsn"}, replica, result(FAILED))

    assert report.status == "failed"
    assert caplog.text.count("Sentry is off for this run") == 1
    assert "Traceback" not in caplog.text
