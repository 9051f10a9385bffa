"""One digest per fleet run: a real SMTP server gets one email listing every database that
changed, and the loopback Sentry endpoint one event per failing database."""
from __future__ import annotations

import shutil

import pytest

from tests.support import restorable_env, run_job
from tests.support.smtp_server import SmtpServer
from tests.test_fleet_dir import _config, fleet  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def _damage(root, rel):
    for ltx in (root / rel / "ltx").rglob("*.ltx"):
        raw = bytearray(ltx.read_bytes())
        for offset in range(120, len(raw) - 20, 7):
            raw[offset] ^= 0xFF
        ltx.write_bytes(bytes(raw))


def test_two_failing_tenants_one_email_and_one_sentry_event_each(fleet, tmp_path, sentry):  # noqa: F811
    root = tmp_path / "replica"
    shutil.copytree(fleet["file_root"], root)
    config = _config(tmp_path, fleet["data"], {"type": "file", "path": str(root)})
    with SmtpServer() as smtp:
        env = restorable_env({"SMTP_URL": smtp.url(), "ALERT_EMAIL_TO": "ops@example.com",
                              "ALERT_EMAIL_FROM": "restorable@example.com", "SENTRY_DSN": sentry.dsn})
        clean = run_job("jobs.verify", "--config", config, "--max-age", "3650d", env=env)
        assert clean.returncode == 0, clean.stderr
        assert smtp.messages == []
        _damage(root, "team-a/beta.db")
        _damage(root, "team-b/deep/gamma.db")
        result = run_job("jobs.verify", "--config", config, "--max-age", "3650d", env=env)
        assert result.returncode == 1, result.stderr
        [message] = smtp.messages
        assert "2 databases changed: 2 problems" in message["Subject"]
        body = message.get_body(("plain",)).get_content()
        assert "FAILED: team-a/beta.db" in body and "FAILED: team-b/deep/gamma.db" in body
        assert "alpha.db" not in body
        assert sentry.wait_for(lambda s: len(s.events()) >= 2)
        assert sorted(e["tags"]["database"] for e in sentry.events()) == ["team-a/beta.db", "team-b/deep/gamma.db"]
        again = run_job("jobs.verify", "--config", config, "--max-age", "3650d", env=env)
        assert again.returncode == 1
        assert len(smtp.messages) == 1  # still failing: nothing new to tell
