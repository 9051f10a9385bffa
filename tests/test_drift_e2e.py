"""Row-count drift end to end: two ``python -m jobs.verify`` runs and the history between them.

Deleting the newest WAL index of a v0.3 replica leaves a replica every structural invariant
accepts (docs/detection.md, "What cannot be detected"): it restores, a little older. The
history the first run leaves beside the replica remembers the row counts of the last good
run, and the second run's drift check (``lib/checks/drift.py``) is what catches the loss.
"""
from __future__ import annotations

import json

from tests.support import restorable_env, run_job
from tests.support.replicas import delete_object
from tests.test_detection import layout

EXIT_OK, EXIT_FAILED = 0, 1
SETTINGS = "defaults:\n  row-drop-warning: 0.05\n  row-drop-error: 0.1\n"


def verify(replica, settings, **env: str) -> tuple[int, dict]:
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", "--max-age", "7d",
                   "--settings", settings, env=restorable_env(env))
    assert proc.stdout, proc.stderr[-3000:]
    [db] = json.loads(proc.stdout)["databases"]
    return proc.returncode, db


def drop_newest_index(replica) -> None:
    lay = layout(replica)
    for _, key in lay.segments[lay.indexes[-1]]:
        delete_object(replica, key)


def test_rows_lost_since_the_last_good_run_fail_the_next_run(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    settings = tmp_path / "restorable.yml"
    settings.write_text(SETTINGS)
    code, first = verify(replica, settings)
    assert code == EXIT_OK and first["tables"] == replica.row_counts, first["findings"]
    assert (replica.replica_dir.parent / "replica.restorable" / "history").is_dir()

    drop_newest_index(replica)
    code, second = verify(replica, settings)

    assert code == EXIT_FAILED, second["findings"]
    assert second["tables"]["items"] < replica.row_counts["items"]
    drift = {f["object"]: f["message"] for f in second["findings"] if f["kind"] == "row_count"
             and f["severity"] == "error"}
    assert sorted(drift) == ["events", "items"], second["findings"]  # both lost the newest batch
    for table in drift:
        assert f"fewer than the {replica.row_counts[table]} at the last good run" in drift[table]
    assert {f["kind"] for f in second["findings"]} <= {"row_count"}  # nothing else notices the loss


def test_without_a_history_the_same_loss_goes_unnoticed(v3_file_replica, clone, tmp_path):
    """The control: no baseline, no drift finding; the shorter replica verifies ok."""
    replica = clone(v3_file_replica)
    settings = tmp_path / "restorable.yml"
    settings.write_text(SETTINGS)
    drop_newest_index(replica)
    code, db = verify(replica, settings, RESTORABLE_HISTORY="off")
    assert code == EXIT_OK and db["status"] == "ok", db["findings"]
    assert db["tables"]["items"] < replica.row_counts["items"]
