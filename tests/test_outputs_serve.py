"""jobs.schedule on $PORT: /healthz and /metrics answer without auth, the status page only with
RESTORABLE_STATUS_AUTH's basic auth; the password never reaches the logs."""
from __future__ import annotations

import base64
import json
import signal
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support.s3server import free_port
from tests.test_signals import Job, job_env

PASSWORD = "S3cretPagePw-771"


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_worker_serves_health_metrics_and_the_page(v3_file_replica, clone, scratch, tmp_path):
    replica = clone(v3_file_replica)
    port = free_port()
    env = job_env(scratch, PORT=str(port), RESTORABLE_STATUS_AUTH=f"admin:{PASSWORD}", RESTORABLE_HISTORY="on",
                  RESTORABLE_SCHEDULE_SECONDS="3600")
    worker = Job("jobs.schedule", "--run-now", "--", "--config", str(replica.config_path), "--max-age", "7d",
                 env=env, logs=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        worker.wait_for_stderr(lambda text: "verification finished run=1" in text, timeout=60)
        assert "serving /healthz and /metrics and the status page on port" in worker.stderr()

        status, body, _ = get(base + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok" and json.loads(body)["runs"] == 1

        status, body, headers = get(base + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for family in text_string_to_metric_families(body) for s in family.samples}
        assert values[("restorable_worker_runs_total", (("outcome", "verified"),))] == 1
        assert values[("restorable_last_run_success", (("db", str(replica.db_path)), ("replica", "file")))] == 1

        status, _, headers = get(base + "/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert get(base + "/", ("admin", "wrong"))[0] == 401
        status, page, _ = get(base + "/", ("admin", PASSWORD))
        assert status == 200 and f'data-db="{replica.db_path}"' in page and 'data-status="ok"' in page
        assert json.loads(get(base + "/status.json", ("admin", PASSWORD))[1])["status"] == "ok"
        assert get(base + "/../../etc/passwd", ("admin", PASSWORD))[0] == 404
    finally:
        worker.signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    assert code == 0, worker.stderr()
    assert PASSWORD not in worker.stderr()


def test_without_auth_the_page_is_not_served(scratch, tmp_path):
    port = free_port()
    worker = Job("jobs.schedule", "--", (tmp_path / "none").as_uri(),
                 env=job_env(scratch, PORT=str(port), RESTORABLE_SCHEDULE_SECONDS="3600"), logs=tmp_path)
    try:
        worker.wait_for_stderr(lambda text: "serving /healthz and /metrics on port" in text, timeout=30)
        status, body, _ = get(f"http://127.0.0.1:{port}/")
        assert status == 404 and "RESTORABLE_STATUS_AUTH" in body
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


def test_a_bad_port_is_a_config_error(scratch, tmp_path):
    worker = Job("jobs.schedule", env=job_env(scratch, PORT="eighty"), logs=tmp_path)
    assert worker.wait(timeout=30) == 3
    assert "PORT='eighty' is not a TCP port; use e.g. 8080" in worker.stderr()
