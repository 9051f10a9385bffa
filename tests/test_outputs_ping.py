"""Heartbeat pings (RESTORABLE_PING_URL) received by a real loopback HTTP server.

``Recorder`` (also used by the other tests/test_outputs_* files) records every request
and answers with the status codes a test queues; tests wait for requests, not for time.
"""
from __future__ import annotations

import shutil
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from lib.report.ping import Pinger, PingSettings
from lib.report.scrub import Scrubber
from tests.support import run_job

CHECK = str(uuid.uuid4())


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class Recorder:
    """A loopback HTTP server that records requests; ``fail(path_prefix, *codes)`` queues answers."""

    def __init__(self):
        self.requests: list[Request] = []
        self.stored: dict[str, bytes] = {}  # PUT bodies by path (a Pushgateway keeps the latest per group)
        self._answers: dict[str, list[int]] = {}
        self._changed = threading.Condition()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                                  {k.lower(): v for k, v in self.headers.items()}, body)
                code, payload = recorder._answer(request)
                self.send_response(code)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                with recorder._changed:
                    recorder.requests.append(request)
                    recorder._changed.notify_all()

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, prefix: str, *codes: int) -> None:
        self._answers.setdefault(prefix, []).extend(codes)

    def _answer(self, request: Request) -> tuple[int, bytes]:
        for prefix, codes in self._answers.items():
            if request.path.startswith(prefix) and codes:
                return codes.pop(0), b"no"
        if request.method == "PUT":
            self.stored[request.path] = request.body
        if request.method == "GET" and request.path == "/metrics":
            return 200, b"".join(self.stored.values())
        return 200, b"OK"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Request]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.requests) >= count, timeout), self.requests
            return list(self.requests)

    def matching(self, prefix: str) -> list[Request]:
        return [r for r in self.requests if r.path.startswith(prefix)]

    def __enter__(self) -> "Recorder":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    with Recorder() as server:
        yield server


def verify(replica, env, *extra):
    return run_job("jobs.verify", "--config", replica.config_path, "--max-age", "7d", *extra, env=env)


def test_a_good_run_pings_start_then_exit_code_0(recorder, v3_file_replica, clone, restorable_env):
    replica = clone(v3_file_replica)
    env = {**restorable_env, "RESTORABLE_PING_URL": f"{recorder.base}/ping/{CHECK}"}

    proc = verify(replica, env, "--json")

    assert proc.returncode == 0, proc.stderr
    start, end = recorder.wait_for(2)
    assert (start.method, start.path) == ("POST", f"/ping/{CHECK}/start")
    assert (end.method, end.path) == ("POST", f"/ping/{CHECK}/0")
    assert start.query["rid"] == end.query["rid"]
    text = end.body.decode()
    assert text.startswith("restorable verify: ok (exit 0); 1 ok")
    assert str(replica.db_path) in text
    assert CHECK not in proc.stderr  # the check UUID is a credential: logs name the host only
    assert "healthchecks ping http://127.0.0.1" in proc.stderr


def test_a_failed_run_pings_its_exit_code_with_the_finding(recorder, v3_file_replica, clone, restorable_env):
    replica = clone(v3_file_replica)
    shutil.rmtree(replica.replica_dir / "generations")
    env = {**restorable_env, "RESTORABLE_PING_URL": f"{recorder.base}/ping/{CHECK}"}

    proc = verify(replica, env)

    assert proc.returncode == 1, proc.stderr
    end = recorder.wait_for(2)[1]
    assert end.path == f"/ping/{CHECK}/1"
    assert "FAILED:" in end.body.decode() and "no Litestream backups found" in end.body.decode()


def test_an_unreachable_ping_endpoint_changes_nothing(v3_file_replica, clone, restorable_env):
    with Recorder() as closed:
        url = f"{closed.base}/ping/{CHECK}"
    replica = clone(v3_file_replica)

    proc = verify(replica, {**restorable_env, "RESTORABLE_PING_URL": url}, "--json")

    assert proc.returncode == 0
    assert '"status": "ok"' in proc.stdout
    assert "giving up (the verdict is unchanged)" in proc.stderr
    assert CHECK not in proc.stderr


def test_a_ping_that_fails_is_retried(recorder):
    recorder.fail("/ping", 500, 503)
    pinger = Pinger(PingSettings(f"{recorder.base}/ping/{CHECK}", "healthchecks"), Scrubber(), sleep=lambda s: None)

    pinger.finish(0, "restorable verify: ok")

    assert [r.path for r in recorder.wait_for(3)] == [f"/ping/{CHECK}/0"] * 3


def test_a_refused_check_is_not_retried(recorder):
    recorder.fail("/ping", 404)
    pinger = Pinger(PingSettings(f"{recorder.base}/ping/{CHECK}", "healthchecks"), Scrubber(), sleep=lambda s: None)

    pinger.finish(1, "x")

    assert len(recorder.wait_for(1)) == 1


def test_the_body_is_bounded(recorder):
    pinger = Pinger(PingSettings(f"{recorder.base}/p", "healthchecks"), Scrubber(), sleep=lambda s: None)

    pinger.finish(1, "line\n" * 10_000)

    [end] = recorder.wait_for(1)
    assert len(end.body) <= 10_000 and end.body.endswith(b"[... truncated]")


def test_uptime_kuma_push_urls_get_one_push_at_the_end(recorder):
    settings = PingSettings.from_environ({"RESTORABLE_PING_URL": f"{recorder.base}/api/push/Tk3nAbC9x?status=up"})
    pinger = Pinger(settings, Scrubber(), sleep=lambda s: None)

    pinger.start()
    pinger.finish(1, "restorable verify: failed (exit 1)\nmore")

    [push] = recorder.wait_for(1)
    assert settings.kind == "uptime-kuma"
    assert push.method == "GET" and push.path == "/api/push/Tk3nAbC9x"
    assert push.query["status"] == "down" and push.query["msg"] == "restorable verify: failed (exit 1)"
    assert int(push.query["ping"]) >= 0


def test_cronitor_telemetry_pairs_run_and_complete(recorder):
    settings = PingSettings.from_environ({"RESTORABLE_PING_URL": f"{recorder.base}/p/KEY123abc/restorable",
                                          "RESTORABLE_PING_KIND": "cronitor"})
    pinger = Pinger(settings, Scrubber(), sleep=lambda s: None)

    pinger.start()
    pinger.finish(0, "restorable verify: ok (exit 0)")

    run, done = recorder.wait_for(2)
    assert run.query["state"] == "run" and done.query["state"] == "complete"
    assert run.query["series"] == done.query["series"] and done.query["status_code"] == "0"


def test_an_aborted_run_pings_fail_once(recorder):
    pinger = Pinger(PingSettings(f"{recorder.base}/p", "healthchecks"), Scrubber(), sleep=lambda s: None)

    pinger.finish(None, "aborted: SIGTERM")
    pinger.finish(None, "aborted again")

    assert [r.path for r in recorder.wait_for(1)] == ["/p/fail"]


@pytest.mark.parametrize("url, kind", [
    ("https://hc-ping.com/5f0c1a8e-1111-4222-8333-944455556666", "healthchecks"),
    ("https://kuma.example.com/api/push/abcDEF123?status=up&msg=OK&ping=", "uptime-kuma"),
    ("https://cronitor.link/p/0123abcd/nightly", "cronitor"),
])
def test_the_convention_is_recognised_from_the_url(url, kind):
    assert PingSettings.from_environ({"RESTORABLE_PING_URL": url}).kind == kind


def test_a_bad_ping_url_is_a_clear_error_that_does_not_repeat_it():
    from lib.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        PingSettings.from_environ({"RESTORABLE_PING_URL": "hc-ping.com/secret-uuid-123"})
    assert "secret-uuid-123" not in str(caught.value) and "RESTORABLE_PING_URL" in str(caught.value)


def test_litestreams_own_heartbeat_url_is_refused_as_the_ping_url(recorder, v3_file_replica, clone, restorable_env,
                                                                   tmp_path):
    """Pinging Litestream's heartbeat check would keep it green after Litestream stopped: exit 3, no ping,
    and the message quotes neither URL (they carry the check's token)."""
    replica = clone(v3_file_replica)
    url = f"{recorder.base}/ping/{CHECK}"
    config = tmp_path / "litestream.yml"
    config.write_text(f"heartbeat-url: {url}\n" + replica.config_path.read_text())
    env = {**restorable_env, "RESTORABLE_PING_URL": url + "/"}

    proc = run_job("jobs.verify", "--config", config, "--max-age", "7d", env=env)

    assert proc.returncode == 3, proc.stderr
    assert "RESTORABLE_PING_URL is Litestream's own heartbeat-url" in proc.stderr
    assert CHECK not in proc.stderr and CHECK not in proc.stdout
    assert recorder.requests == []

    other = {**restorable_env, "RESTORABLE_PING_URL": f"{recorder.base}/ping/another-check"}
    assert run_job("jobs.verify", "--config", config, "--max-age", "7d", env=other).returncode == 0
