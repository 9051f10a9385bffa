"""Metrics: the textfile parses with prometheus-client's own parser and carries the run counter;
a Pushgateway-compatible loopback endpoint receives the push; label values carry no secret."""
from __future__ import annotations

import shutil

from prometheus_client.parser import text_string_to_metric_families

from tests.support import run_job
from tests.test_outputs_ping import Recorder, recorder  # noqa: F401  (fixture)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_textfile_after_good_and_bad_runs(v3_file_replica, clone, restorable_env, tmp_path):
    replica = clone(v3_file_replica)
    prom = tmp_path / "textfile" / "restorable.prom"
    env = {**restorable_env, "RESTORABLE_METRICS_FILE": str(prom)}
    db = str(replica.db_path)
    key = (("db", db), ("replica", "file"))

    assert run_job("jobs.verify", "--config", replica.config_path, "--max-age", "7d", env=env).returncode == 0
    good = samples(prom.read_text())
    assert good[("restorable_runs_total", (("outcome", "ok"),))] == 1
    assert good[("restorable_last_run_success", key)] == 1
    assert good[("restorable_last_run_status", tuple(sorted(key + (("status", "ok"),))))] == 1
    assert good[("restorable_restored_bytes", key)] > 0
    assert good[("restorable_bucket_bytes", key)] > 0
    assert good[("restorable_backup_age_seconds", key)] >= 0
    assert ("restorable_restore_seconds", key) in good and ("restorable_monthly_cost_usd", key) in good
    assert good[("restorable_findings", tuple(sorted(key + (("kind", "wal_gap"),))))] == 0
    success_at = good[("restorable_last_success_timestamp_seconds", key)]

    shutil.rmtree(replica.replica_dir / "generations")
    assert run_job("jobs.verify", "--config", replica.config_path, env=env).returncode == 1
    bad = samples(prom.read_text())
    assert bad[("restorable_runs_total", (("outcome", "ok"),))] == 1  # carried from the previous file
    assert bad[("restorable_runs_total", (("outcome", "failed"),))] == 1
    assert bad[("restorable_last_run_success", key)] == 0
    assert bad[("restorable_findings", tuple(sorted(key + (("kind", "no_backups"),))))] == 1
    assert bad[("restorable_last_success_timestamp_seconds", key)] == success_at
    assert bad[("restorable_last_run_exit_code", ())] == 1
    assert [p.name for p in prom.parent.iterdir()] == ["restorable.prom"]  # no temporary file left


def test_pushgateway_receives_the_run(recorder, v3_file_replica, clone, restorable_env):
    replica = clone(v3_file_replica)
    gateway = f"http://pusher:Pa55w0rdXyz@127.0.0.1:{recorder.server.server_address[1]}"
    env = {**restorable_env, "RESTORABLE_PUSHGATEWAY_URL": gateway}

    proc = run_job("jobs.verify", "--config", replica.config_path, "--max-age", "7d", env=env)

    assert proc.returncode == 0, proc.stderr
    [push] = [r for r in recorder.requests if r.method == "PUT"]
    assert push.path == "/metrics/job/restorable/group/verify"
    assert push.headers["authorization"].startswith("Basic ")
    pushed = samples(push.body.decode())
    assert pushed[("restorable_last_run_success", (("db", str(replica.db_path)), ("replica", "file")))] == 1
    assert "Pa55w0rdXyz" not in proc.stderr and "metrics pushed" in proc.stderr


def test_an_unreachable_pushgateway_changes_nothing(v3_file_replica, clone, restorable_env):
    with Recorder() as closed:
        gateway = closed.base
    replica = clone(v3_file_replica)

    proc = run_job("jobs.verify", "--config", replica.config_path, "--max-age", "7d",
                   env={**restorable_env, "RESTORABLE_PUSHGATEWAY_URL": gateway})

    assert proc.returncode == 0
    assert "metrics not delivered (RESTORABLE_PUSHGATEWAY_URL" in proc.stderr


def test_a_run_without_outputs_imports_none_of_their_libraries(v3_file_replica, clone, restorable_env):
    from tests.test_imports import imported_modules, top_level

    replica = clone(v3_file_replica)
    result, modules = imported_modules("-m", "jobs.verify", "--config", str(replica.config_path), "--max-age", "7d",
                                       env=restorable_env)

    assert result.returncode == 0, result.stderr[-2000:]
    assert top_level(modules) & {"apprise", "prometheus_client", "jinja2", "rich"} == set()


def test_an_aborted_run_is_counted_and_keeps_the_previous_gauges(tmp_path):
    from lib.report.notify import RunNotifier

    prom = tmp_path / "restorable.prom"
    prom.write_text('# HELP restorable_runs_total Runs\n# TYPE restorable_runs_total counter\n'
                    'restorable_runs_total{outcome="ok"} 4.0\n'
                    '# HELP restorable_last_run_success Passed\n# TYPE restorable_last_run_success gauge\n'
                    'restorable_last_run_success{db="/data/app.db",replica="s3"} 1.0\n')

    RunNotifier.from_environ({"RESTORABLE_METRICS_FILE": str(prom)}, secrets=[]).run_aborted("SIGTERM")

    after = samples(prom.read_text())
    assert after[("restorable_runs_total", (("outcome", "ok"),))] == 4
    assert after[("restorable_runs_total", (("outcome", "aborted"),))] == 1
    assert after[("restorable_last_run_success", (("db", "/data/app.db"), ("replica", "s3")))] == 1
