"""Chat alerts through Apprise's json:// webhook, received by a loopback server: one digest per run,
a message when databases go bad and when they recover, nothing while nothing changes."""
from __future__ import annotations

import json
import shutil

from lib.report.chat import ChatItem, compose
from tests.support import run_job
from tests.test_outputs_ping import recorder  # noqa: F401  (fixture)


def run(urls, env):
    return run_job("jobs.verify", "--max-age", "7d", *urls, env=env)


def messages(recorder, path="/hook"):
    return [json.loads(r.body) for r in recorder.matching(path)]


def test_one_digest_for_many_databases_then_recovery(recorder, v3_file_replica, clone, restorable_env, tmp_path):
    a, b = clone(v3_file_replica), clone(v3_file_replica)
    urls = [f"file://{a.replica_dir}", f"file://{b.replica_dir}"]
    env = {**restorable_env, "RESTORABLE_NOTIFY_URLS": f"json://127.0.0.1:{recorder.server.server_address[1]}/hook",
           "RESTORABLE_PING_URL": f"{recorder.base}/ping/chk-4f9a2c", "SENTRY_ENVIRONMENT": "production"}

    assert run(urls, env).returncode == 0
    assert messages(recorder) == []  # good and was never told otherwise: nothing to say

    for built in (a, b):
        shutil.move(built.replica_dir / "generations", tmp_path / f"{built.replica_dir.name}-generations")
    proc = run(urls, env)
    assert proc.returncode == 1, proc.stderr
    [digest] = messages(recorder)
    assert digest["type"] == "failure"
    assert digest["title"] == "[restorable production] 2 databases need attention"
    for built in (a, b):
        assert f"FAILED: file://{built.replica_dir} (file://{built.replica_dir})" in digest["message"]
    assert digest["message"].count("finding kinds: no_backups; restore point: none restored") == 2
    assert "What to do: Litestream has uploaded nothing here" in digest["message"]

    assert run(urls, env).returncode == 1
    assert len(messages(recorder)) == 1  # still bad: already told

    shutil.move(tmp_path / f"{a.replica_dir.name}-generations", a.replica_dir / "generations")
    assert run(urls, env).returncode == 1
    recovery = messages(recorder)[1]
    assert recovery["type"] == "success" and recovery["title"] == "[restorable production] 1 recovered"
    assert recovery["message"].startswith(f"RECOVERED: file://{a.replica_dir} (file://{a.replica_dir}) is ok again")
    assert "1 other database is still bad, already reported" in recovery["message"]
    assert len(messages(recorder)) == 2
    assert [r.path.rsplit("/", 1)[1] for r in recorder.matching("/ping") if "/start" not in r.path] == \
        ["0", "1", "1", "1"]


def test_a_failed_send_is_retried_by_the_next_run(recorder, v3_file_replica, clone, restorable_env):
    replica = clone(v3_file_replica)
    shutil.rmtree(replica.replica_dir / "generations")
    env = {**restorable_env, "RESTORABLE_NOTIFY_URLS": f"json://127.0.0.1:{recorder.server.server_address[1]}/hook"}
    recorder.fail("/hook", 500)

    first = run_job("jobs.verify", "--config", replica.config_path, env=env)
    second = run_job("jobs.verify", "--config", replica.config_path, env=env)

    assert (first.returncode, second.returncode) == (1, 1)  # the verdict never depends on the chat
    assert "chat alert not delivered" in first.stderr
    assert len(recorder.matching("/hook")) == 2 and recorder.matching("/hook")[1].body
    assert "chat alert sent databases=1" in second.stderr


def test_a_url_apprise_does_not_know_is_named_by_position_not_text(v3_file_replica, clone, restorable_env):
    replica = clone(v3_file_replica)
    shutil.rmtree(replica.replica_dir / "generations")
    env = {**restorable_env, "RESTORABLE_NOTIFY_URLS": "nosuchservice://Secr3tTok3n/x"}

    proc = run_job("jobs.verify", "--config", replica.config_path, env=env)

    assert proc.returncode == 1
    assert "RESTORABLE_NOTIFY_URLS entry 1 (nosuchservice://...) is not a URL Apprise understands" in proc.stderr
    assert "Secr3tTok3n" not in proc.stderr


def test_the_digest_is_bounded_for_chat_services():
    items = [ChatItem("problem", f"/data/db{n}.db", "s3://b/p", "failed", ("wal_gap",), "x" * 300, "none")
             for n in range(50)]
    digest = compose(items)
    assert len(digest.body) <= 1_900 and digest.body.endswith("[... more in the report and logs]")
    assert digest.title == "[restorable] 50 databases need attention"
