"""Alert email over TLS, end to end: ``python -m jobs.verify`` to a real TLS SMTP server on loopback.

The server (aiosmtpd, ``tests/support/smtp_server.py``) presents a self-signed certificate
for 127.0.0.1 made at test time. restorable builds its TLS context with
``ssl.create_default_context()``, which trusts what OpenSSL's default verify paths hold, so
the job is told to trust the test certificate the way an operator trusts a private CA:
``SSL_CERT_FILE`` in its environment. Without it the certificate is refused and the run's
verdict and exit code are unchanged (email is a side channel).
"""
from __future__ import annotations

import pytest

from tests.support.smtp_server import SmtpServer
from tests.test_permissions import self_signed_certificate
from tests.test_signals import Job, job_env

EXIT_FAILED = 1
CREDENTIALS = ("alerts", "tls p@ss")
SCHEMES = {"starttls": "smtp+starttls", "smtps": "smtps"}


@pytest.fixture
def certificate(tmp_path):
    directory = tmp_path / "tls"
    directory.mkdir()
    return self_signed_certificate(directory)


def failing_verify(tmp_path, scratch, smtp: SmtpServer, tls: str, **env: str) -> Job:
    """jobs.verify of an empty replica folder (no backups: failed, so an alert is due)."""
    empty = tmp_path / "replica"
    empty.mkdir()
    job = Job("jobs.verify", empty.as_uri(),
              env=job_env(scratch, SMTP_URL=smtp.url(SCHEMES[tls]), ALERT_EMAIL_TO="ops@example.com", **env),
              logs=tmp_path / "logs")
    return job


@pytest.mark.parametrize("tls", ["starttls", "smtps"])
def test_alert_is_delivered_over_tls_to_a_server_the_job_trusts(tls, certificate, tmp_path, scratch):
    cert, key = certificate
    with SmtpServer(credentials=CREDENTIALS, tls=tls, cert=cert, key=key) as smtp:
        job = failing_verify(tmp_path, scratch, smtp, tls, SSL_CERT_FILE=str(cert))
        assert job.wait() == EXIT_FAILED, job.stderr()[-3000:]
        [received] = smtp.received
    assert received.tls and received.login == CREDENTIALS[0]
    assert received.rcpt_tos == ["ops@example.com"]
    assert received.message["Subject"].startswith("[restorable]")
    assert CREDENTIALS[1] not in job.stderr() + job.stdout()


@pytest.mark.parametrize("tls", ["starttls", "smtps"])
def test_untrusted_certificate_sends_nothing_and_keeps_the_verdict(tls, certificate, tmp_path, scratch):
    cert, key = certificate
    with SmtpServer(credentials=CREDENTIALS, tls=tls, cert=cert, key=key) as smtp:
        job = failing_verify(tmp_path, scratch, smtp, tls)
        assert job.wait() == EXIT_FAILED, job.stderr()[-3000:]
        assert smtp.received == []
    assert "CERTIFICATE_VERIFY_FAILED" in job.stderr() or "certificate verify failed" in job.stderr(), \
        job.stderr()[-3000:]
    assert CREDENTIALS[1] not in job.stderr() + job.stdout()
