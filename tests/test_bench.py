"""bench/run.py --quick runs end to end and prints its table (a smoke test, not a timed test)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_bench_runs_and_prints_the_table(tmp_path):
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| case | command | median wall s |" in proc.stdout
    for row in ("litestream 0.3.13 restore", "litestream 0.5.17 restore", "restorable jobs.restore",
                "restorable jobs.verify", "restorable jobs.restore --check", "verify / jobs.restore --check",
                "per-database overhead"):
        assert row in proc.stdout, proc.stdout
