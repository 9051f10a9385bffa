"""`python -m jobs.verify` verifies v0.5 (LTX) replicas exactly as it verifies v0.3 ones."""
from __future__ import annotations

import json

import pytest

from tests.support import run_job
from tests.support.replicas import sha256_file


@pytest.mark.parametrize("fixture", ["v5_file_replica", "v5_s3_replica"])
def test_verify_job_detects_v05_and_reports_ok(fixture, request, restorable_env):
    replica = request.getfixturevalue(fixture)
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", "--max-age", "7d", env=restorable_env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    [db] = report["databases"]
    assert db["format"] == "v0.5"
    assert db["status"] == "ok", db["findings"]
    assert db["restored"]["sha256"] == replica.reference_sha256
    assert db["tables"] == replica.row_counts
    assert len(db["position"]) == 16


def test_restore_job_on_v05_writes_identical_file(v5_s3_replica, tmp_path, restorable_env):
    out = tmp_path / "local.db"
    proc = run_job("jobs.restore", "--config", v5_s3_replica.config_path, "-o", out, "--sha256",
                   env=restorable_env)
    assert proc.returncode == 0, proc.stderr
    assert sha256_file(out) == v5_s3_replica.reference_sha256
    assert f"sha256 {v5_s3_replica.reference_sha256}" in proc.stderr


def test_stale_v05_replica_fails_with_exit_1(v5_file_replica, restorable_env):
    proc = run_job("jobs.verify", "--config", v5_file_replica.config_path, "--json", "--max-age", "1s",
                   env=restorable_env)
    assert proc.returncode == 1
    [db] = json.loads(proc.stdout)["databases"]
    assert [f["kind"] for f in db["findings"]] == ["stale"]
