"""--cross-check: the same frozen objects restored by restorable and by the real litestream
0.3.13 / 0.5.17 binaries, on healthy and damaged replicas of both formats."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lz4.frame
import pytest

from tests.support import restorable_env, run_job
from tests.support.litestream import V3, V5, litestream_bin
from tests.support.replicas import read_object, replica_listing, write_object

pytestmark = pytest.mark.slow

BOTH_BINS = os.pathsep.join([str(litestream_bin(V5)), str(litestream_bin(V3))])  # order must not matter


def verify(replica, *args: str, bins: str | None = BOTH_BINS, path: str | None = None) -> tuple[int, dict, str]:
    """jobs.verify --cross-check on ``replica``; returns (exit code, its one result, stderr)."""
    extra = {}
    if replica.s3 is not None:
        extra.update(replica.s3.credentials_env())
    env = restorable_env(extra)
    env.pop("RESTORABLE_LITESTREAM_BIN", None)
    if bins is not None:
        env["RESTORABLE_LITESTREAM_BIN"] = bins
    if path is not None:
        env["PATH"] = path
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", "--max-age", "7d", "--cross-check",
                   *args, env=env)
    assert proc.stdout, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    return proc.returncode, report["databases"][0], proc.stderr


def cross_check_findings(result: dict) -> list[dict]:
    return [f for f in result["findings"] if f["kind"] == "cross_check"]


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_s3_replica", "v5_file_replica", "v5_s3_replica"])
def test_healthy_replica_agrees_with_litestream_restore(fixture, request):
    replica = request.getfixturevalue(fixture)
    code, result, _ = verify(replica)
    assert code == 0, result
    section = result["cross_check"]
    assert section["status"] == "agree", section
    assert section["litestream"]["version"] == replica.litestream_version  # chosen by layout, not by order
    assert section["restorable"]["sha256"] == section["litestream_restore"]["sha256"] == replica.reference_sha256
    assert section["litestream_restore"]["integrity"] == ["ok"]
    assert section["litestream_restore"]["tables"] == replica.row_counts
    assert section["objects"] >= 2
    assert not cross_check_findings(result)


def test_text_report_says_they_agree(v3_file_replica):
    env = restorable_env({"RESTORABLE_LITESTREAM_BIN": BOTH_BINS})
    proc = run_job("jobs.verify", "--config", v3_file_replica.config_path, "--max-age", "7d", "--cross-check", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cross-check (litestream 0.3.13): agree: litestream restore of the same" in proc.stdout


@pytest.mark.parametrize("fixture,wrong", [("v3_file_replica", V5), ("v5_file_replica", V3)])
def test_wrong_binary_version_is_reported_not_used(fixture, wrong, request):
    replica = request.getfixturevalue(fixture)
    code, result, _ = verify(replica, bins=str(litestream_bin(wrong)))
    assert code == 0, result  # the backup itself is fine: a warning
    assert result["cross_check"]["status"] == "skipped"
    [finding] = cross_check_findings(result)
    assert finding["severity"] == "warning"
    series = "0.3" if replica.is_v3 else "0.5"
    assert f"needs litestream {series}.x" in finding["message"]
    assert f"is v{wrong}" in finding["message"] and "RESTORABLE_LITESTREAM_BIN" in finding["message"]


def test_no_binary_is_reported(v3_file_replica, tmp_path):
    code, result, _ = verify(v3_file_replica, bins=None, path=str(tmp_path))
    assert code == 0
    [finding] = cross_check_findings(result)
    assert "no litestream binary found" in finding["message"]


def test_litestream_on_path_is_used(v5_file_replica, tmp_path):
    (tmp_path / "litestream").symlink_to(litestream_bin(V5))
    code, result, _ = verify(v5_file_replica, bins=None, path=f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    assert code == 0, result
    assert result["cross_check"]["status"] == "agree"


# --------------------------------------------------------------------------- damaged


def v3_segments(replica) -> dict[int, list[str]]:
    """WAL index -> its segment keys in offset order (newest generation)."""
    gen = replica.generations[-1]
    by_index: dict[int, list[str]] = {}
    for key in replica_listing(replica):
        parts = key.split("/")
        if len(parts) == 4 and parts[1] == gen and parts[2] == "wal":
            by_index.setdefault(int(parts[3][:8], 16), []).append(key)
    return {i: sorted(keys) for i, keys in sorted(by_index.items())}


def flip_page_byte(replica, key: str) -> None:
    """Alter one page byte of the segment's first frame before compression: valid LZ4, bad WAL checksum."""
    wal = bytearray(lz4.frame.decompress(read_object(replica, key)))
    first = 32 if key.endswith("_00000000.wal.lz4") else 0
    wal[first + 24 + replica.page_size // 2] ^= 0x01
    write_object(replica, key, lz4.frame.compress(bytes(wal), content_checksum=True))


def test_v3_damage_in_an_older_index_litestream_restore_is_malformed(v3_file_replica, clone):
    """litestream 0.3.13 applies the later indexes over a cut one (docs/formats, section 9, B):
    its restore is malformed, restorable's stops at the last sound commit and is sound."""
    replica = clone(v3_file_replica)
    segments = v3_segments(replica)
    older = [i for i in segments if i < max(segments)]
    victim = segments[older[len(older) // 2]][0]
    flip_page_byte(replica, victim)
    code, result, _ = verify(replica)
    assert code == 1
    assert any(f["kind"] == "corrupt_object" and f["object"].endswith(victim) for f in result["findings"])
    section = result["cross_check"]
    assert section["status"] == "litestream_damaged", section
    assert section["restorable"]["integrity"] == ["ok"]
    assert section["litestream_restore"]["integrity"] != ["ok"]
    [finding] = cross_check_findings(result)
    assert finding["severity"] == "warning"
    assert "gives a damaged database" in finding["message"] and "python -m jobs.restore" in finding["message"]


def test_v3_damage_in_the_newest_index_both_stop_at_the_same_commit(v3_file_replica, clone):
    """Case C: litestream silently drops the damaged segment and the rest of the index; so does
    restorable's restore, but restorable says so (corrupt_object)."""
    replica = clone(v3_file_replica)
    segments = v3_segments(replica)
    newest = segments[max(segments)]
    flip_page_byte(replica, newest[-1])
    code, result, _ = verify(replica)
    assert code == 1
    assert any(f["kind"] == "corrupt_object" for f in result["findings"])
    section = result["cross_check"]
    assert section["status"] == "agree", section
    assert section["litestream_restore"]["tables"] == section["restorable"]["tables"]
    assert sum(section["restorable"]["tables"].values()) < sum(replica.row_counts.values())


def test_v5_damaged_ltx_file_both_refuse(v5_file_replica, clone):
    replica = clone(v5_file_replica)
    key = max((k for k in replica_listing(replica) if k.endswith(".ltx")), key=lambda k: len(read_object(replica, k)))
    data = bytearray(read_object(replica, key))
    data[len(data) // 2] ^= 0x20
    write_object(replica, key, bytes(data))
    code, result, _ = verify(replica)
    assert code == 1
    assert any(f["kind"] == "corrupt_object" for f in result["findings"])
    section = result["cross_check"]
    assert section["status"] == "both_damaged", section
    assert "failed" in section["restorable"]
    assert "failed" in section["litestream_restore"] or section["litestream_restore"]["integrity"] != ["ok"]
    assert not cross_check_findings(result)


def test_restorable_differing_from_a_sound_litestream_restore_is_an_error_with_evidence(v3_file_replica, tmp_path):
    """Stands in for a restorable bug: a wrapper runs the real litestream 0.3.13 restore, then
    adds a row to what it wrote (still sound). restorable's restore, which reported no damage,
    then differs from litestream's sound one: an error of its own kind, evidence kept."""
    alter = tmp_path / "alter.py"
    alter.write_text("import sqlite3, sys\n"
                     "con = sqlite3.connect(sys.argv[1])\n"
                     "con.execute('INSERT INTO events (batch, note) VALUES (0, 1)')\n"
                     "con.commit()\n"
                     "con.execute('PRAGMA wal_checkpoint(TRUNCATE)')\n"
                     "con.close()\n")
    wrapper = tmp_path / "litestream"
    wrapper.write_text(f"""#!/bin/sh
set -e
"{litestream_bin(V3)}" "$@"
if [ "$1" = restore ]; then "{sys.executable}" "{alter}" "$3"; fi
""")
    wrapper.chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    env = restorable_env({"RESTORABLE_LITESTREAM_BIN": str(wrapper), "RESTORABLE_SCRATCH_DIR": str(scratch)})
    proc = run_job("jobs.verify", "--config", v3_file_replica.config_path, "--json", "--max-age", "7d",
                   "--cross-check", "--keep-evidence", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["databases"][0]
    section = result["cross_check"]
    assert section["status"] == "restorable_differs", section
    [finding] = [f for f in result["findings"] if f["severity"] == "error"]
    assert finding["kind"] == "cross_check" and "restorable bug" in finding["message"]
    evidence = Path(section["evidence"])
    assert evidence.parent == scratch and str(evidence) in finding["message"]
    assert (evidence / "litestream.db").exists() and (evidence / "restorable.db").exists()
    assert any((evidence / "frozen" / "generations").rglob("*.wal.lz4"))
    saved = json.loads((evidence / "cross_check.json").read_text())
    assert saved["reproduce"].startswith(f"{wrapper} restore -o OUT file://")
    # the scratch directory of the run itself is gone; only the evidence stays
    assert [p.name for p in scratch.iterdir()] == [evidence.name]


def test_the_setting_asks_for_it_without_the_flag(v5_file_replica, tmp_path):
    settings = tmp_path / "restorable.yml"
    settings.write_text(f"dbs:\n  {v5_file_replica.db_path}:\n    cross-check: true\n")
    env = restorable_env({"RESTORABLE_LITESTREAM_BIN": BOTH_BINS})
    proc = run_job("jobs.verify", "--config", v5_file_replica.config_path, "--settings", settings, "--json",
                   "--max-age", "7d", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["databases"][0]
    assert result["cross_check"]["status"] == "agree"
    assert result["cross_check"]["litestream"]["version"] == V5


def test_no_cross_check_unless_asked(v5_file_replica):
    env = restorable_env({"RESTORABLE_LITESTREAM_BIN": BOTH_BINS})
    proc = run_job("jobs.verify", "--config", v5_file_replica.config_path, "--json", "--max-age", "7d", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cross_check" not in json.loads(proc.stdout)["databases"][0]
