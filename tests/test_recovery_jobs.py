"""Recovery objectives through the jobs: the recovery block, limits, drills in the history, the vault
kept by jobs.verify and restored by jobs.restore --from-vault, and jobs.status listing them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.support import restorable_env, run_job


def _verify(replica, tmp_path: Path, *args: str, settings: str | None = None, env: dict | None = None):
    extra = []
    if settings is not None:
        path = tmp_path / "restorable.yml"
        path.write_text(settings)
        extra = ["--settings", str(path)]
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", *extra, *args,
                   env=restorable_env(env or {}))
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)["databases"][0], proc


def _kinds(db) -> list[tuple[str, str]]:
    return [(f["severity"], f["kind"]) for f in db["findings"]]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


LAX = "defaults: {max-age: 30d}\n"


def test_every_report_states_window_rpo_and_restore_time(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    code, db, _ = _verify(replica, tmp_path, settings=LAX)
    assert code == 0, db["findings"]
    recovery = db["recovery"]
    assert recovery["earliest"] < recovery["latest"]
    assert recovery["rpo_seconds"] >= 0 and recovery["rpo_from"] == "newest restore point"
    assert recovery["restore_seconds"] > 0 and recovery["restore_bytes"] > 0
    assert [s["label"] for s in recovery["spans"]] == [f"generation {replica.generations[0]}"]
    proc = run_job("jobs.verify", "--config", replica.config_path, "--settings", tmp_path / "restorable.yml")
    assert "window " in proc.stdout and "RPO" in proc.stdout


def test_limits_restore_time_fails_and_a_short_window_warns(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    code, db, _ = _verify(replica, tmp_path, "--drill", "none",
                          settings="defaults: {max-age: 30d, max-restore-time: 1ms, min-window: 30d}\n")
    assert code == 1
    assert ("error", "restore_time") in _kinds(db) and ("warning", "window") in _kinds(db)


def test_drills_rotate_and_the_last_of_each_kind_is_in_history_and_status(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    seen = []
    for _ in range(2):
        code, db, _ = _verify(replica, tmp_path, settings=LAX)
        assert code == 0, db["findings"]
        seen.append((db["drill"]["kind"], db["drill"]["status"]))
    assert seen == [("oldest", "ok"), ("random", "ok")]
    latest = json.loads((replica.replica_dir.with_name("replica.restorable") / "history").glob(
        "*/*/latest.json").__next__().read_text())
    assert set(latest["drills"]) == {"oldest", "random"}
    proc = run_job("jobs.status", "--config", replica.config_path)
    assert "last oldest drill: ok" in proc.stdout and "last random drill: ok" in proc.stdout
    assert "recovery window:" in proc.stdout


def test_drill_none_drills_nothing(v3_file_replica, clone, tmp_path):
    code, db, _ = _verify(clone(v3_file_replica), tmp_path, "--drill", "none", settings=LAX)
    assert code == 0 and "drill" not in db


def test_damaged_older_generation_fails_only_the_drill(v3_multigen_file_replica, clone, tmp_path):
    from tests.support.replicas import read_object, replica_listing, write_object

    replica = clone(v3_multigen_file_replica)
    old = replica.generations[0]
    snapshot = next(k for k in replica_listing(replica) if f"/{old}/snapshots/" in k)
    data = bytearray(read_object(replica, snapshot))
    data[len(data) // 2] ^= 0xFF
    write_object(replica, snapshot, bytes(data))
    code, db, _ = _verify(replica, tmp_path, "--drill", "none", settings=LAX)
    assert code == 0, db["findings"]  # the newest point does not need the older generation
    code, db, _ = _verify(replica, tmp_path, "--drill", "oldest", settings=LAX)
    assert code == 1 and _kinds(db) == [("error", "drill")], (db["findings"], db.get("drill"))
    assert "cannot restore to" in db["findings"][0]["message"]


@pytest.mark.parametrize("where", ["beside", "file-url"])
def test_vault_kept_by_verify_restores_byte_identical(v3_s3_replica, clone, tmp_path, where):
    replica = clone(v3_s3_replica)
    env = {"RESTORABLE_VAULT_KEEP": "daily=7 weekly=4 monthly=12"}
    if where == "file-url":
        env["RESTORABLE_VAULT_URL"] = (tmp_path / "vault").as_uri()
    code, db, _ = _verify(replica, tmp_path, "--drill", "none", settings=LAX, env=env)
    assert code == 0, db["findings"]
    assert db["vault"]["keep"]["uploaded"] and db["vault"]["check"]["status"] == "ok"
    code, db, _ = _verify(replica, tmp_path, "--drill", "none", settings=LAX, env=env)
    assert db["vault"]["keep"]["uploaded"] is None  # at most one a day
    out = tmp_path / "from-vault.db"
    proc = run_job("jobs.restore", "--config", replica.config_path, "--from-vault", "latest", "-o", out,
                   env=restorable_env(env))
    assert proc.returncode == 0, proc.stderr
    assert _sha(out) == replica.reference_sha256 == db["restored"]["sha256"]
    status = run_job("jobs.status", "--config", replica.config_path, "--json", env=restorable_env(env))
    [rep] = json.loads(status.stdout)["replicas"]
    assert [e["sha256"] for e in rep["recovery"]["vault"]["entries"]] == [replica.reference_sha256]


def test_corrupted_vault_object_is_refused_by_restore_and_caught_by_rotation(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    vault = tmp_path / "vault"
    env = {"RESTORABLE_VAULT_KEEP": "daily=7", "RESTORABLE_VAULT_URL": vault.as_uri()}
    code, db, _ = _verify(replica, tmp_path, "--drill", "none", settings=LAX, env=env)
    assert code == 0, db["findings"]
    [obj] = vault.glob("*/*/database.sqlite.lz4")
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    out = tmp_path / "out.db"
    proc = run_job("jobs.restore", "--config", replica.config_path, "--from-vault", "latest", "-o", out,
                   env=restorable_env(env))
    assert proc.returncode == 1 and not out.exists()
    assert "vault" in proc.stderr and "database.sqlite.lz4" in proc.stderr
    [checks] = vault.glob("*/checks.json")  # the next day: the copy was last re-read yesterday
    checks.write_text(json.dumps({day: "2000-01-01T00:00:00.000Z ok" for day in json.loads(checks.read_text())}))
    code, db, _ = _verify(replica, tmp_path, "--drill", "none", settings=LAX, env=env)
    assert code == 1 and ("error", "vault") in _kinds(db), (db["findings"], db.get("vault"))


def test_from_vault_without_a_vault_is_a_config_error(v3_file_replica, tmp_path):
    proc = run_job("jobs.restore", "--config", v3_file_replica.config_path, "--from-vault", "latest",
                   "-o", tmp_path / "x.db")
    assert proc.returncode == 3 and "no vault entry" in proc.stderr and "RESTORABLE_VAULT_KEEP" in proc.stderr


def test_retention_never_touches_the_vault_and_pruning_never_touches_litestream(v3_multigen_file_replica, clone,
                                                                               tmp_path):
    import os
    from datetime import datetime, timedelta, timezone

    from lib.config.sources import load
    from lib.report.model import DbResult, Restored
    from lib.vault.keep import keep_verified
    from lib.vault.plan import KeepPolicy
    from lib.vault.store import VaultSettings, entries, locate
    from tests.support.replicas import replica_listing

    replica = clone(v3_multigen_file_replica)
    env = {"RESTORABLE_VAULT_KEEP": "daily=1"}
    code, db, _ = _verify(replica, tmp_path, "--drill", "none", settings=LAX, env=env)
    assert code == 0 and db["vault"]["keep"]["uploaded"], db["findings"]
    vault_dir = replica.replica_dir.with_name("replica.restorable") / "history" / "_vault"
    kept = sorted(p.relative_to(vault_dir) for p in vault_dir.rglob("*") if p.is_file())
    old = datetime.now(timezone.utc).timestamp() - 3 * 86400
    for key in (k for k in replica_listing(replica) if f"/{replica.generations[0]}/" in k):
        os.utime(replica.replica_dir / key, (old, old))
    proc = run_job("jobs.retention", "--config", replica.config_path, "--enforce", env=restorable_env(env))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not any(f"/{replica.generations[0]}/" in k for k in replica_listing(replica))  # retention did delete
    assert sorted(p.relative_to(vault_dir) for p in vault_dir.rglob("*") if p.is_file()) == kept

    config = load(str(replica.config_path), {})
    location = locate(config.dbs[0], VaultSettings.from_environ(env), env)
    listing = replica_listing(replica)
    restored = tmp_path / "copy.db"
    restored.write_bytes((replica.reference_path).read_bytes())
    result = DbResult(db=config.dbs[0].path, replica="file")
    result.restored = Restored(restored.stat().st_size, _sha(restored), 4096)
    for day in range(1, 4):  # daily=1: each later day prunes the one before
        keep_verified(location, KeepPolicy(daily=1), result, restored, datetime.now(timezone.utc)
                      + timedelta(days=day), "v")
    assert len(entries(location)[0]) == 1
    assert replica_listing(replica) == listing
