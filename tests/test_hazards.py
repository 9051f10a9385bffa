"""States that lose data on the app's next restart are said in plain words, and the claims hold for the real binaries.

Replicas come from ../shared/peer-fixtures (Litestream's own test data): ``ltx-store-0d-L0`` (a
v0.5 replica with files but no snapshot), ``restore-ok-nested16`` (v0.3 objects under a
generation, none in a layout 0.3.13 reads), ``wal-downloader-ok`` (a v0.3 generation with
WAL but no snapshot).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from lib.litestream.v5.compaction import stalled_levels
from lib.litestream.v5.layout import LtxFile, V5State
from lib.storage.base import ObjectInfo
from tests.support import run_job
from tests.support.litestream import V3, V5, litestream_bin, litestream_env, run_litestream

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "peer-fixtures"
MANIFEST = {f["name"]: f for f in json.loads((FIXTURES / "MANIFEST.json").read_text())["fixtures"]}


def _fixture(name: str, tmp_path: Path) -> Path:
    """A writable copy of peer fixture ``name`` with its mtimes; returns its replica directory."""
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    for rel, stamp in MANIFEST[name]["mtimes"].items():
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        os.utime(dest / rel, (moment, moment))
    return dest / "replica"


def _findings(replica: Path, *extra: str) -> tuple[int, list[dict]]:
    proc = run_job("jobs.verify", "--json", *extra, f"file://{replica}")
    return proc.returncode, json.loads(proc.stdout)["databases"][0]["findings"]


def test_v5_files_without_a_snapshot_would_restart_empty(tmp_path):
    replica = _fixture("ltx-store-0d-L0", tmp_path)
    code, findings = _findings(replica)
    [finding] = [f for f in findings if f["kind"] == "missing_snapshot"]
    assert code == 1 and "EMPTY database" in finding["message"] and "-if-replica-exists" in finding["message"]
    # The claim, against litestream 0.5.17: `restore -if-replica-exists` exits 0 and writes nothing.
    out = tmp_path / "restored.db"
    proc = run_litestream(V5, "restore", "-if-replica-exists", "-o", out, f"file://{replica}", check=False)
    assert proc.returncode == 0 and not out.exists()


@pytest.mark.slow
def test_restore_if_db_not_exists_starts_fresh_on_such_a_replica(tmp_path):
    """`replicate` with `restore-if-db-not-exists: true` (0.5.17) logs 'starting fresh' over files it can't use."""
    replica = _fixture("ltx-store-0d-L0", tmp_path)
    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump({"dbs": [{"path": str(tmp_path / "app.db"), "restore-if-db-not-exists": True,
                                               "replica": {"type": "file", "path": str(replica)}}]}))
    proc = subprocess.Popen([str(litestream_bin(V5)), "replicate", "-config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=litestream_env(), text=True)
    try:
        seen = []
        for line in proc.stdout:  # waits for the log line, not for time
            seen.append(line)
            if "starting fresh" in line or "restore completed" in line or "Error" in line:
                break
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "no backup found, starting fresh" in "".join(seen), "".join(seen)


def test_v3_objects_in_no_readable_layout_would_restart_empty(tmp_path):
    replica = _fixture("restore-ok-nested16", tmp_path)
    code, findings = _findings(replica)
    [finding] = [f for f in findings if f["kind"] == "no_backups"]
    assert code == 1 and "EMPTY database" in finding["message"]
    out = tmp_path / "restored.db"
    proc = run_litestream(V3, "restore", "-if-replica-exists", "-o", out, f"file://{replica}", check=False)
    assert proc.returncode == 0 and not out.exists()


def test_nothing_at_all_is_a_first_deploy_not_a_hazard(tmp_path):
    (tmp_path / "empty").mkdir()
    code, findings = _findings(tmp_path / "empty")
    assert code == 1 and "EMPTY" not in json.dumps(findings)


def test_v3_wal_without_snapshot_makes_the_restart_fail(tmp_path):
    replica = _fixture("wal-downloader-ok", tmp_path)
    code, findings = _findings(replica)
    [finding] = [f for f in findings if f["kind"] == "missing_snapshot"]
    assert code == 1 and "will not start" in finding["message"]
    proc = run_litestream(V3, "restore", "-if-replica-exists", "-o", tmp_path / "out.db", f"file://{replica}",
                          check=False)
    assert proc.returncode != 0 and "no snapshots available" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_auto_recover_in_the_config_is_a_warning(v5_file_replica, tmp_path):
    document = yaml.safe_load(v5_file_replica.config_path.read_text())
    document["dbs"][0]["replica"]["auto-recover"] = True
    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump(document))
    proc = run_job("jobs.verify", "--json", "--config", config, "--max-age", "100000d", "--drill", "none")
    [db] = json.loads(proc.stdout)["databases"]
    assert proc.returncode == 0, proc.stdout
    assert [f for f in db["findings"] if f["kind"] == "auto_recover" and f["severity"] == "warning"]


# ------------------------------------------------------------------------ compaction (pure)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


def _file(level: int, lo: int, hi: int, seconds: float) -> LtxFile:
    key = f"ltx/{level}/{lo:016x}-{hi:016x}.ltx"
    return LtxFile(level, lo, hi, ObjectInfo(key, 100, T0 + timedelta(seconds=seconds)))


def _state(*files: LtxFile) -> V5State:
    state = V5State(prefix="ltx/")
    for f in files:
        state.levels[f.level].append(f)
    return state


def test_l0_growing_past_two_l1_intervals_is_a_stalled_compaction():
    l0 = [_file(0, n, n, 10 * n) for n in range(3, 30)]  # one file every 10 s for 4.5 minutes
    findings = stalled_levels(_state(_file(1, 1, 2, 5), *l0), (30.0, 300.0, 3600.0))
    [finding] = findings
    assert finding.kind == "compaction_stalled" and "level 1" in finding.message
    assert "since 2026-12-03T12:00:30Z" in finding.message and finding.object == l0[0].key


def test_a_stopped_litestream_or_a_level_within_its_interval_is_not_a_stall():
    stopped = [_file(0, n, n, n) for n in range(3, 20)]  # 17 s of writes, then nothing
    assert stalled_levels(_state(_file(1, 1, 2, 0), *stopped), (30.0,)) == []
    compacted = [_file(0, n, n, 10 * n) for n in range(3, 30)] + [_file(1, 1, 29, 290)]
    assert stalled_levels(_state(*compacted), (30.0,)) == []


def test_snapshots_that_stopped_while_the_top_level_grows_are_a_stall():
    top = [_file(3, n, n, 3600 * n) for n in range(2, 60)]  # an L3 file every hour for ~2.5 days
    [finding] = stalled_levels(_state(_file(9, 1, 1, 0), *top), (30.0, 300.0, 3600.0), 24 * 3600.0)
    assert "level 9" in finding.message and "level 3 gained" in finding.message
    assert stalled_levels(_state(_file(9, 1, 1, 0), *top[:30]), (30.0, 300.0, 3600.0), 24 * 3600.0) == []
