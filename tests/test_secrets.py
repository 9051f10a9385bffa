import io
import json
import logging
import subprocess
import sys
import textwrap
from urllib.parse import quote

import pytest
import sentry_sdk

from lib.config.model import Config, DbConfig, ReplicaConfig
from lib.report.logs import setup_logging
from lib.report.notify import RunNotifier
from lib.report.model import DbResult, Report, error, warning
from lib.report.scrub import REDACTED, Scrubber, secrets_from_environ
from tests.support import REPO_ROOT, restorable_env
from tests.support.sentry_server import SentryServer
from tests.support.smtp_server import SmtpServer

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY1"
AWS_KEY_ID = "AKIARESTORABLETEST01"
CFG_KEY_ID = "cfg-key-id-4455"
CFG_SECRET = "cfg-secret-998877/+x"
DSN_PUBLIC = "f00dfacefeed1234"
DSN_SECRET = "5ecret0dsn0key77"
SMTP_USER = "alerts@example.com"
SMTP_PASSWORD = "sm7p p@ss/word"
URL_PASSWORD = "url-pass-9876"
URL_WITH_CREDENTIALS = f"https://backup-user:{URL_PASSWORD}@minio.internal:9000/bucket"

SECRETS = [AWS_SECRET, AWS_KEY_ID, CFG_KEY_ID, CFG_SECRET, DSN_SECRET, SMTP_PASSWORD, URL_PASSWORD]
DB = "/data/app.db"


def leaked(text: str, secrets=SECRETS) -> list[str]:
    """Every secret found in ``text``, raw or URL-encoded."""
    forms = {s: {s, quote(s, safe=""), quote(s, safe="/")} for s in secrets}
    return [s for s, variants in forms.items() if any(v in text for v in variants)]


# --------------------------------------------------------------------------- the scrubber


def test_known_values_are_redacted_raw_and_url_encoded():
    scrub = Scrubber([AWS_SECRET])
    assert scrub.text(f"key={AWS_SECRET} or {quote(AWS_SECRET, safe='')}") == f"key={REDACTED} or {REDACTED}"


def test_url_credentials_are_redacted_whatever_their_value():
    scrub = Scrubber()
    assert scrub.text(f"GET {URL_WITH_CREDENTIALS}/x failed") == \
        f"GET https://{REDACTED}@minio.internal:9000/bucket/x failed"
    assert scrub.text("smtp+starttls://u:p@ss@smtp.example.com:587") == f"smtp+starttls://{REDACTED}@smtp.example.com:587"
    assert scrub.text("http://key@127.0.0.1:9/1 and s3://bucket/path") == \
        f"http://{REDACTED}@127.0.0.1:9/1 and s3://bucket/path"


def test_signed_query_parameters_are_redacted():
    scrub = Scrubber()
    text = "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc123&x=1"
    assert scrub.text(text) == f"https://b.s3.amazonaws.com/k?X-Amz-Credential={REDACTED}&X-Amz-Signature={REDACTED}&x=1"


def test_nested_data_is_scrubbed_and_other_values_kept():
    scrub = Scrubber([AWS_SECRET])
    data = {"findings": [{"message": f"denied for {AWS_SECRET}", "n": 3}], AWS_SECRET: (AWS_SECRET, None, 1.5)}
    assert scrub.obj(data) == {"findings": [{"message": f"denied for {REDACTED}", "n": 3}],
                               REDACTED: (REDACTED, None, 1.5)}


def test_very_short_values_are_not_treated_as_secrets():
    assert Scrubber(["", None, "ab"]).text("a cab") == "a cab"


def test_secrets_from_environment():
    environ = {"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
               "SMTP_URL": f"smtps://{quote(SMTP_USER)}:{quote(SMTP_PASSWORD, safe='')}@smtp.example.com",
               "SENTRY_DSN": f"https://{DSN_PUBLIC}:{DSN_SECRET}@o1.ingest.sentry.io/2", "HOME": "/root"}
    assert sorted(secrets_from_environ(environ)) == sorted(
        [AWS_SECRET, AWS_KEY_ID, SMTP_USER, SMTP_PASSWORD, DSN_PUBLIC, DSN_SECRET])


# --------------------------------------------------------------------------- everything a run writes


@pytest.fixture
def servers():
    with SentryServer() as sentry, SmtpServer(credentials=(SMTP_USER, SMTP_PASSWORD)) as smtp:
        yield sentry, smtp
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=2)
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def secret_environ(sentry: SentryServer, smtp: SmtpServer) -> dict[str, str]:
    dsn = f"http://{DSN_PUBLIC}:{DSN_SECRET}@127.0.0.1:{sentry.port}/1"
    return {
        "SENTRY_DSN": dsn, "SMTP_URL": smtp.url(), "ALERT_EMAIL_TO": "ops@example.com",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG",
    }


def leaky_result() -> DbResult:
    """A result whose findings quote every secret, as a careless error message might."""
    return DbResult(db=DB, replica=URL_WITH_CREDENTIALS, format="v0.3", findings=[
        error("unreachable", f"GET {URL_WITH_CREDENTIALS}/generations/ refused for key {AWS_KEY_ID}"),
        error("corrupt_object", f"signature {AWS_SECRET} mismatch (config key {CFG_KEY_ID}/{CFG_SECRET})"),
        warning("stale", f"smtp {SMTP_PASSWORD} dsn {DSN_SECRET} {DSN_PUBLIC}"),
    ], extra={"note": {"url": URL_WITH_CREDENTIALS}})


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_no_secret_reaches_logs_report_history_email_or_sentry(tmp_path, servers, restore_root_logger):
    sentry, smtp = servers
    environ = secret_environ(sentry, smtp)
    replica = ReplicaConfig(name="file", type="file", path=str(tmp_path / "replica"),
                            access_key_id=CFG_KEY_ID, secret_access_key=CFG_SECRET)
    (tmp_path / "replica").mkdir()  # history lives beside an existing replica directory
    config = Config("test", (DbConfig(DB, (replica,)),))
    stream = io.StringIO()
    setup_logging(environ, secrets=config.secrets(), stream=stream)
    log = logging.getLogger("lib.verify")

    notifier = RunNotifier.from_environ(environ, secrets=config.secrets())
    notifier.run_started()
    log.info("config SMTP_URL=%s dsn=%s", environ["SMTP_URL"], environ["SENTRY_DSN"], extra={"db": DB})
    log.warning("denied key=%s secret=%s cfg=%s", AWS_KEY_ID, AWS_SECRET, CFG_SECRET,
                extra={"db": DB, "stage": "discover", "url": URL_WITH_CREDENTIALS})
    try:
        raise PermissionError(f"403 for {URL_WITH_CREDENTIALS} with {AWS_SECRET}")
    except PermissionError:
        log.exception("listing failed", extra={"db": DB, "stage": "discover"})
    result = leaky_result()
    report = Report(results=[result])
    notifier.run_finished(report, [(config.dbs[0], replica, result)])
    notifier.run_aborted(f"SIGTERM while talking to {URL_WITH_CREDENTIALS}")

    log_text = stream.getvalue()
    printed_report = Scrubber.from_environ(environ, config.secrets()).text(report.dumps())  # as jobs.verify prints
    history_text = "\n".join(p.read_text() for p in (tmp_path / "replica.restorable").rglob("*.json"))
    [email] = smtp.received
    envelopes = sentry.raw_bodies()

    assert log_text.count("\n") >= 5 and history_text and envelopes  # the channels did carry the findings
    assert "unreachable" in email.raw.decode() and "unreachable" in printed_report
    for name, text in [("logs", log_text), ("report", printed_report), ("history", history_text),
                       ("email", email.raw.decode()), *[("envelope", b.decode()) for b in envelopes]]:
        assert leaked(text) == [], name
    # The DSN public key is Sentry's own identifier: only the SDK's envelope header carries it.
    for name, text in [("logs", log_text), ("report", printed_report), ("history", history_text),
                       ("email", email.raw.decode())]:
        assert DSN_PUBLIC not in text, name
    items = [i.raw.decode() for i in sentry.items()]
    assert items and [raw for raw in items if DSN_PUBLIC in raw] == []
    # The report object itself is untouched; only what leaves the process is scrubbed.
    assert AWS_SECRET in result.findings[1].message
    assert report.status == "failed"


SUBPROCESS_JOB = textwrap.dedent("""
    import logging, os
    from lib.report.logs import setup_logging
    setup_logging(os.environ, secrets=[os.environ["CFG_SECRET"]])
    log = logging.getLogger("lib.verify")
    log.error("secret %s key %s cfg %s url %s", os.environ["AWS_SECRET_ACCESS_KEY"],
              os.environ["AWS_ACCESS_KEY_ID"], os.environ["CFG_SECRET"], os.environ["SMTP_URL"])
    try:
        raise RuntimeError(os.environ["SENTRY_DSN"])
    except RuntimeError:
        log.exception("boom", extra={"db": os.environ["SMTP_URL"]})
""")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_stderr_of_a_real_process_holds_no_secret(log_format):
    env = restorable_env({
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "CFG_SECRET": CFG_SECRET,
        "SMTP_URL": f"smtp://{quote(SMTP_USER)}:{quote(SMTP_PASSWORD, safe='')}@smtp.example.com",
        "SENTRY_DSN": f"https://{DSN_PUBLIC}:{DSN_SECRET}@o1.ingest.sentry.io/2", "LOG_FORMAT": log_format,
    })
    done = subprocess.run([sys.executable, "-c", SUBPROCESS_JOB], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert "RuntimeError" in done.stderr
    assert leaked(done.stderr, SECRETS + [DSN_PUBLIC]) == []
    if log_format == "json":
        assert all(json.loads(line) for line in done.stderr.splitlines() if line.startswith("{"))
