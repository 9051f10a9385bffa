"""``--generation``, ``--txid`` and ``--check`` on the command line of jobs.restore and jobs.verify.

Each target is compared with what the real ``litestream restore`` of the same version gives
for the same target (sha256 of the file), so the options are known to reach the restore and
to mean what Litestream means by them.
"""
from __future__ import annotations

import json

from tests.support import run_job
from tests.support.replicas import database_row_counts, litestream_restore, replica_listing, sha256_file
from tests.test_detection import bad_cell_pointer, forge_frame, last_table_leaf, layout
from lib.litestream.v5.layout import parse_ltx_name

EXIT_OK, EXIT_FAILED = 0, 1


def verify_json(replica, *args: str) -> tuple[int, dict, str]:
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", "--max-age", "7d", *args)
    assert proc.stdout, proc.stderr[-3000:]
    [db] = json.loads(proc.stdout)["databases"]
    return proc.returncode, db, proc.stderr


def middle_txid(replica) -> int:
    """A TXID in the middle of a v0.5 replica's level-0 files (one per sync)."""
    txids = sorted(parsed[1] for key in replica_listing(replica)
                   if (parsed := parse_ltx_name(key.rsplit("/", 1)[-1])) and key.split("/")[-2] in ("0", "0000"))
    assert len(txids) >= 3, replica_listing(replica)
    return txids[len(txids) // 2]


def test_restore_job_generation_restores_the_older_generation_like_litestream(v3_multigen_file_replica, tmp_path):
    replica = v3_multigen_file_replica
    older = replica.generations[-2]
    theirs = litestream_restore(replica, tmp_path / "theirs.db", generation=older)
    assert sha256_file(theirs) != replica.reference_sha256  # the option must make a difference
    out = tmp_path / "ours.db"
    proc = run_job("jobs.restore", "--config", replica.config_path, "--generation", older, "-o", out)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    assert sha256_file(out) == sha256_file(theirs)
    assert older in proc.stderr


def test_verify_job_generation_verifies_the_older_generation(v3_multigen_file_replica, tmp_path):
    replica = v3_multigen_file_replica
    older = replica.generations[-2]
    theirs = litestream_restore(replica, tmp_path / "theirs.db", generation=older)
    code, db, stderr = verify_json(replica, "--generation", older)
    assert code == EXIT_OK, (db["findings"], stderr[-3000:])
    assert db["generation"] == older and db["position"].startswith(older)
    assert db["restored"]["sha256"] == sha256_file(theirs)
    assert db["tables"] == database_row_counts(theirs)


def test_restore_job_txid_restores_that_txid_like_litestream(v5_file_replica, tmp_path):
    replica = v5_file_replica
    txid = middle_txid(replica)
    theirs = litestream_restore(replica, tmp_path / "theirs.db", txid=txid)
    assert sha256_file(theirs) != replica.reference_sha256
    out = tmp_path / "ours.db"
    proc = run_job("jobs.restore", "--config", replica.config_path, "--txid", f"{txid:x}", "-o", out)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    assert sha256_file(out) == sha256_file(theirs)


def test_verify_job_txid_verifies_that_txid(v5_file_replica, tmp_path):
    replica = v5_file_replica
    txid = middle_txid(replica)
    theirs = litestream_restore(replica, tmp_path / "theirs.db", txid=txid)
    code, db, stderr = verify_json(replica, "--txid", f"{txid:016x}")
    assert code == EXIT_OK, (db["findings"], stderr[-3000:])
    assert db["position"] == f"{txid:016x}"
    assert db["restored"]["sha256"] == sha256_file(theirs)


def test_restore_job_check_refuses_a_structurally_sound_but_corrupt_database(v3_file_replica, clone, tmp_path):
    """A frame forged with valid checksums passes every object check; only --check's
    integrity_check sees the broken b-tree page, and then nothing is written at OUT."""
    replica = clone(v3_file_replica)
    lay = layout(replica)
    index = max(i for i in lay.indexes if len(lay.segments[i]) >= 2)
    forge_frame(replica, lay, index, last_table_leaf, bad_cell_pointer)
    unchecked = tmp_path / "unchecked.db"
    proc = run_job("jobs.restore", "--config", replica.config_path, "-o", unchecked)
    assert proc.returncode == EXIT_OK and unchecked.exists(), proc.stderr[-3000:]

    out = tmp_path / "checked" / "restored.db"
    out.parent.mkdir()
    proc = run_job("jobs.restore", "--config", replica.config_path, "-o", out, "--check")
    assert proc.returncode == EXIT_FAILED, proc.stderr[-3000:]
    assert "[integrity]" in proc.stderr and "Offset 5 out of range" in proc.stderr
    assert f"nothing written to {out}" in proc.stderr
    assert list(out.parent.iterdir()) == []


def test_restore_job_check_passes_a_healthy_replica(v3_file_replica, tmp_path):
    out = tmp_path / "restored.db"
    proc = run_job("jobs.restore", "--config", v3_file_replica.config_path, "-o", out, "--check")
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    assert sha256_file(out) == v3_file_replica.reference_sha256


def test_an_older_restore_point_is_not_judged_against_the_newest_row_counts(v5_file_replica, clone, tmp_path):
    """--txid / --timestamp verify an older point: it holds fewer rows than the last good (newest)
    run by design, so the row-drop check does not apply to it (a false 'failed' otherwise)."""
    replica = clone(v5_file_replica)
    txid = middle_txid(replica)
    older = database_row_counts(litestream_restore(replica, tmp_path / "older.db", txid=txid))
    newest = database_row_counts(litestream_restore(replica, tmp_path / "newest.db"))
    assert sum(older.values()) < sum(newest.values())  # the case needs a point with fewer rows
    settings = tmp_path / "restorable.yml"
    settings.write_text("defaults:\n  row-drop-warning: 0.01\n  row-drop-error: 0.01\n")
    code, _, stderr = verify_json(replica, "--settings", str(settings))  # newest: the history's last good run
    assert code == EXIT_OK, stderr[-3000:]

    code, db, stderr = verify_json(replica, "--settings", str(settings), "--txid", f"{txid:016x}")

    assert code == EXIT_OK, (db["findings"], stderr[-3000:])
    assert not [f for f in db["findings"] if f["kind"] == "row_count"]
