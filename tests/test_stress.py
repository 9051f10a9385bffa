"""The short version of the stress harness (bench/stress.py): healthy live replicas of both
formats, file and S3, written by the real litestream 0.3.13 and 0.5.17 under constant writes,
snapshots, retention and checkpoints, verified back to back, all four at once next to a busy
process. Not one verification may fail; most must be ok. A failure keeps its evidence (the
listings, every object read, both restores of them, the findings) under the test's tmp_path.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_live_replicas_are_never_reported_failed(tmp_path):
    out = tmp_path / "stress"
    proc = subprocess.run([sys.executable, "bench/stress.py", "--seconds", "12", "--max-verifications", "40",
                           "--load", "1", "--out", str(out), "--json"],
                          cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=220)
    assert proc.stdout, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    failures = [f for s in summary["scenarios"] for f in s["failures"]]
    assert proc.returncode == 0 and not failures, json.dumps(failures, indent=1)[:6000]
    assert summary["verifications"] >= 20, summary["totals"]
    assert summary["totals"].get("ok", 0) >= summary["verifications"] // 2, summary["totals"]
    by_name = {s["scenario"]: s for s in summary["scenarios"]}
    assert set(by_name) == {"v3-file", "v3-s3", "v5-file", "v5-s3"}
    for scenario in by_name.values():
        assert scenario["verifications"] >= 2, scenario["counts"]
        assert scenario["commits"] > 100, scenario
    # litestream really snapshotted meanwhile
    assert by_name["v3-file"]["litestream"]["snapshots"] >= 2, by_name["v3-file"]["litestream"]
