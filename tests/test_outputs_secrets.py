"""No secret reaches a ping, a chat message, a metric (textfile or push), the status page or the
logs about them, even when findings quote every secret (the approach of tests/test_secrets.py)."""
from __future__ import annotations

import io
import json
import logging

import pytest

from lib.config.model import Config, DbConfig, ReplicaConfig
from lib.report.logs import setup_logging
from lib.report.model import Report
from lib.report.notify import RunNotifier
from tests.test_outputs_ping import recorder  # noqa: F401  (fixture)
from tests.test_secrets import AWS_KEY_ID, AWS_SECRET, CFG_KEY_ID, CFG_SECRET, DB, SECRETS, leaked, leaky_result

PING_TOKEN = "9f1c2d3e-4b5a-6789-abcd-ef0123456789"
CHAT_TOKEN = "Xq7TokenForTheHook42"
GATEWAY_PASSWORD = "pushPa55-0987"
PAGE_PASSWORD = "pagePa55-1234"
OUTPUT_SECRETS = [PING_TOKEN, CHAT_TOKEN, GATEWAY_PASSWORD, PAGE_PASSWORD]


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_no_secret_reaches_any_output(recorder, tmp_path, restore_root_logger):
    port = recorder.server.server_address[1]
    environ = {
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG",
        "RESTORABLE_PING_URL": f"{recorder.base}/ping/{PING_TOKEN}",
        "RESTORABLE_NOTIFY_URLS": f"json://127.0.0.1:{port}/hook/{CHAT_TOKEN}",
        "RESTORABLE_METRICS_FILE": str(tmp_path / "metrics" / "restorable.prom"),
        "RESTORABLE_PUSHGATEWAY_URL": f"http://pusher:{GATEWAY_PASSWORD}@127.0.0.1:{port}",
        "RESTORABLE_STATUS_SITE": str(tmp_path / "site"),
        "RESTORABLE_STATUS_AUTH": f"admin:{PAGE_PASSWORD}",
    }
    replica = ReplicaConfig(name="file", type="file", path=str(tmp_path / "replica"),
                            access_key_id=CFG_KEY_ID, secret_access_key=CFG_SECRET)
    (tmp_path / "replica").mkdir()
    config = Config("test", (DbConfig(DB, (replica,)),))
    stream = io.StringIO()
    setup_logging(environ, secrets=config.secrets(), stream=stream)

    notifier = RunNotifier.from_environ(environ, secrets=config.secrets())
    notifier.run_started()
    logging.getLogger("lib.verify").warning("settings %s", environ)  # a careless line quoting them all
    result = leaky_result()
    notifier.run_finished(Report(results=[result]), [(config.dbs[0], replica, result)])

    pings = [r for r in recorder.requests if r.path.startswith("/ping")]
    chats = [r for r in recorder.requests if r.path.startswith("/hook")]
    pushes = [r for r in recorder.requests if r.method == "PUT"]
    assert [p.path.rsplit("/", 1)[1] for p in pings] == ["start", "1"] and len(chats) == 1 and len(pushes) == 1
    assert "corrupt_object" in json.loads(chats[0].body)["message"]
    outputs = {
        "ping body": pings[1].body.decode(),
        "chat": chats[0].body.decode(),
        "push": pushes[0].body.decode() + json.dumps(pushes[0].query),
        "textfile": (tmp_path / "metrics" / "restorable.prom").read_text(),
        "page": "".join(p.read_text() for p in (tmp_path / "site").rglob("*") if p.is_file()),
        "logs": stream.getvalue(),
    }
    assert "restorable_last_run_success" in outputs["textfile"] and "corrupt_object" in outputs["page"]
    for name, text in outputs.items():
        assert leaked(text, SECRETS + OUTPUT_SECRETS) == [], name
    assert 'replica="https://[redacted]@minio.internal:9000/bucket"' in outputs["textfile"]
