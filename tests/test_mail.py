import logging
from datetime import datetime, timedelta, timezone

import pytest
import sentry_sdk

from lib.config.model import DbConfig, ReplicaConfig
from lib.errors import ConfigError
from lib.report.mail import SmtpSettings, parse_smtp_url
from lib.report.notify import RunNotifier
from lib.report.model import DbResult, Report, Restored, could_not_check, error, warning
from tests.support.sentry_server import SentryServer
from tests.support.smtp_server import SmtpServer, free_port

DB = "/data/app.db"
NOW = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def replica(tmp_path) -> ReplicaConfig:
    (tmp_path / "replica").mkdir()  # history lives beside an existing replica directory
    return ReplicaConfig(name="file", type="file", path=str(tmp_path / "replica"))


def result(findings) -> DbResult:
    return DbResult(db=DB, replica="file", format="v0.3", generation="0123456789abcdef", position="7/1f00",
                    restored=Restored(3 * 1024 * 1024, "ab" * 32, 4096), tables={"orders": 1200, "users": 7},
                    last_backup_at=NOW - timedelta(minutes=95), findings=list(findings),
                    extra={"replica_bytes": 5 * 1024 * 1024 * 1024, "monthly_cost_usd": 0.08})


FAILED = [error("wal_gap", "generation 0123456789abcdef has WAL index 7 but no segment at offset 0")]
INCONCLUSIVE = [could_not_check("unreachable", "s3://bucket unreachable (EndpointConnectionError)")]


def run_once(environ, replica, findings) -> Report:
    notifier = RunNotifier.from_environ(environ, secrets=[])
    notifier.run_started()
    res = result(findings)
    report = Report(results=[res], started_at=NOW)
    notifier.run_finished(report, [(DbConfig(DB, (replica,)), replica, res)])
    return report


def mail_env(smtp: SmtpServer, **extra) -> dict[str, str]:
    return {"SMTP_URL": smtp.url(), "ALERT_EMAIL_TO": "ops@example.com, dba@example.com",
            "ALERT_EMAIL_FROM": "restorable@example.com", **extra}


def subjects(smtp: SmtpServer) -> list[str]:
    return [m["Subject"].strip() for m in smtp.messages]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("url, expected", [
    ("smtp://relay.internal", ("smtp", "relay.internal", 25, None, None)),
    ("smtp+starttls://u:p@smtp.example.com", ("smtp+starttls", "smtp.example.com", 587, "u", "p")),
    ("smtps://apikey:s%40cr%2Ft%20x@smtp.example.com:2465",
     ("smtps", "smtp.example.com", 2465, "apikey", "s@cr/t x")),
    ("SMTP://me%40example.com:pw@host:2525", ("smtp", "host", 2525, "me@example.com", "pw")),
])
def test_smtp_url_forms(url, expected):
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize("url", ["http://host", "smtp://", "smtp://host:notaport", "relay.internal:25"])
def test_bad_smtp_url_is_config_error_without_echoing_it(url):
    with pytest.raises(ConfigError) as caught:
        parse_smtp_url(url.replace("host", "u:hunter2@host"))
    assert "hunter2" not in str(caught.value)


def test_email_is_off_without_recipients():
    assert SmtpSettings.from_environ({"SMTP_URL": "smtp://relay"}) is None
    assert SmtpSettings.from_environ({"ALERT_EMAIL_TO": "ops@example.com"}) is None


def test_sender_defaults_to_an_address_like_smtp_user():
    settings = SmtpSettings.from_environ({"SMTP_URL": "smtp://alerts%40example.com:pw@relay",
                                          "ALERT_EMAIL_TO": "a@example.com,b@example.com"})
    assert settings.sender == "alerts@example.com"
    assert settings.recipients == ("a@example.com", "b@example.com")
    assert "pw" not in repr(settings)


def test_bad_smtp_url_turns_email_off_with_a_warning(caplog, replica):
    report = run_once({"SMTP_URL": "ftp://x", "ALERT_EMAIL_TO": "ops@example.com"}, replica, FAILED)

    assert report.status == "failed"
    assert "SMTP_URL scheme 'ftp' is not supported" in caplog.text


# --------------------------------------------------------------------------- when


def test_first_failure_sends_one_email_naming_database_and_outcome(smtp, replica):
    run_once(mail_env(smtp), replica, FAILED)

    [received] = smtp.received
    assert received.rcpt_tos == ["ops@example.com", "dba@example.com"]
    assert received.mail_from == "restorable@example.com"
    assert subjects(smtp) == [f"[restorable] FAILED: {DB} ({replica.describe()})"]


def test_repeat_failure_sends_nothing(smtp, replica):
    run_once(mail_env(smtp), replica, FAILED)
    run_once(mail_env(smtp), replica, FAILED)
    run_once(mail_env(smtp), replica, INCONCLUSIVE)  # still broken, just differently

    assert len(smtp.received) == 1


def test_recovery_sends_one_email(smtp, replica):
    run_once(mail_env(smtp), replica, FAILED)
    run_once(mail_env(smtp), replica, [])
    run_once(mail_env(smtp), replica, [warning("stale", "latest WAL is 50 minutes old")])

    assert subjects(smtp) == [f"[restorable] FAILED: {DB} ({replica.describe()})",
                              f"[restorable] RECOVERED: {DB} ({replica.describe()})"]


def test_inconclusive_alerts_as_could_not_verify(smtp, replica):
    run_once(mail_env(smtp, RAILWAY_ENVIRONMENT_NAME="production"), replica, INCONCLUSIVE)

    assert subjects(smtp) == [f"[restorable production] COULD NOT VERIFY: {DB} ({replica.describe()})"]


def test_good_runs_send_nothing(smtp, replica):
    run_once(mail_env(smtp), replica, [])
    run_once(mail_env(smtp), replica, [warning("stale", "latest WAL is 50 minutes old")])

    assert smtp.received == []


def test_no_stale_recovery_email_after_email_is_switched_on(smtp, replica):
    run_once({}, replica, FAILED)  # email off: nobody was told
    run_once(mail_env(smtp), replica, [])

    assert smtp.received == []


# --------------------------------------------------------------------------- what


def test_bodies_list_findings_and_numbers(smtp, replica):
    run_once(mail_env(smtp), replica, FAILED)

    message = smtp.messages[0]
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert "no segment at offset 0" in body
        assert "wal_gap" in body
        assert "1,200" in body  # rows in orders
        assert "3.0 MiB" in body  # restored size
        assert "95 min" in body  # age of the latest backup
        assert "0123456789abcdef" in body
        assert "5.0 GiB" in body and "$0.08/month" in body  # held in the bucket, and its cost
    assert text.startswith(f"{DB} on {replica.describe()}: backup verification failed:")
    assert "What to do:" in text
    assert html.startswith("<!doctype html>")


def test_html_body_escapes_finding_text(smtp, replica):
    run_once(mail_env(smtp), replica, [error("probe", "probe <script>alert(1)</script> returned 0")])

    html = smtp.messages[0].get_body(("html",)).get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_auth_with_url_decoded_credentials(replica):
    with SmtpServer(credentials=("alerts@example.com", "p@ss w/rd")) as smtp:
        run_once(mail_env(smtp), replica, FAILED)

        [received] = smtp.received
        assert received.login == "alerts@example.com"


# --------------------------------------------------------------------------- failures


def test_smtp_down_leaves_outcome_unchanged_logs_and_reports_to_sentry(replica, caplog):
    caplog.set_level(logging.INFO)
    environ = {"SMTP_URL": f"smtp://127.0.0.1:{free_port()}", "ALERT_EMAIL_TO": "ops@example.com"}
    with SentryServer() as sentry:
        environ["SENTRY_DSN"] = sentry.dsn
        report = run_once(environ, replica, FAILED)

        assert report.status == "failed"
        assert report.exit_code() == 1
        assert [f.kind for f in report.results[0].findings] == ["wal_gap"]
        assert "alert email not sent" in caplog.text
        smtp_events = [e for e in sentry.events() if e["fingerprint"][:2] == ["restorable", "smtp"]]
        assert len(smtp_events) == 1
        assert "SMTP_URL" in smtp_events[0]["message"]
        assert sentry.check_ins()[-1]["status"] == "error"  # the run's own status, not the mail's
    sentry_sdk.get_client().close(timeout=1)
    sentry_sdk.get_global_scope().set_client(None)


def test_failed_send_is_retried_next_run(smtp, replica):
    down = {"SMTP_URL": f"smtp://127.0.0.1:{free_port()}", "ALERT_EMAIL_TO": "ops@example.com"}
    run_once(down, replica, FAILED)
    run_once(mail_env(smtp), replica, FAILED)

    assert len(smtp.received) == 1


def test_starttls_required_but_not_offered_is_a_logged_failure(smtp, replica, caplog):
    report = run_once(mail_env(smtp, SMTP_URL=smtp.url("smtp+starttls")), replica, FAILED)

    assert smtp.received == []
    assert report.status == "failed"
    assert "STARTTLS" in caplog.text
