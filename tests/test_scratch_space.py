"""A scratch volume too small for the backup ends inconclusive (exit 2) before filling the disk."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.support import run_job


@pytest.fixture
def tiny_volume(tmp_path):
    """A 512 KiB tmpfs (needs root and mount rights; skipped where the machine refuses)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_scratch_smaller_than_the_backup_is_inconclusive_and_leaves_nothing(v3_file_replica, tiny_volume,
                                                                           restorable_env):
    env = {**restorable_env, "RESTORABLE_SCRATCH_DIR": str(tiny_volume)}
    proc = run_job("jobs.verify", "--config", v3_file_replica.config_path, "--json", "--max-age", "7d", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [db] = json.loads(proc.stdout)["databases"]
    assert db["status"] == "inconclusive"
    [finding] = db["findings"]
    assert finding["kind"] == "unreachable" and finding["inconclusive"] is True
    assert "scratch space too small" in finding["message"] and "RESTORABLE_SCRATCH_DIR" in finding["message"]
    assert list(tiny_volume.iterdir()) == []
