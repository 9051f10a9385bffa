"""The vault on a real S3 server (moto) and in a directory: streamed LZ4 uploads, manifests,
one entry a day, pruning, rotation checks that catch rot, and interrupted uploads."""
from __future__ import annotations

import hashlib
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lib.errors import ConfigError
from lib.report.model import DbResult, Restored
from lib.storage.local import LocalStore
from lib.storage.s3 import S3Settings, S3Store
from lib.vault.keep import check_one, keep_verified
from lib.vault.plan import KeepPolicy
from lib.vault.restore import fetch
from lib.vault.store import VaultLocation, entries, find
from lib.vault.upload import PART_SIZE
from tests.support.faultproxy import error as fault_error

NOW = datetime(2026, 12, 3, 4, 0, tzinfo=timezone.utc)

POLICY = KeepPolicy(daily=2, weekly=1, monthly=1)


def _database(path: Path, blob_mib: int = 0) -> Path:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, payload BLOB)")
        con.executemany("INSERT INTO items (payload) VALUES (?)", [(os.urandom(64 << 10),) for _ in range(blob_mib * 16)])
        con.execute("INSERT INTO items (payload) VALUES (x'00')")
    con.close()
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _result(path: Path) -> DbResult:
    result = DbResult(db="/data/app.db", replica="s3", format="v0.3", generation="a" * 16,
                      position="aaaaaaaaaaaaaaaa/00000003:4152", last_backup_at=NOW - timedelta(minutes=1))
    result.restored = Restored(path.stat().st_size, _sha(path), 4096, str(path))
    result.tables = {"items": 1}
    return result


def _s3_location(s3_server, endpoint: str | None = None) -> VaultLocation:
    bucket = s3_server.make_bucket("vault")
    store = S3Store(S3Settings(bucket=bucket, endpoint=endpoint or s3_server.endpoint, region=s3_server.region,
                               access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key,
                               force_path_style=True, max_attempts=2))
    return VaultLocation(store, "vault/data_app.db/")


@pytest.fixture(params=["s3", "file"])
def location(request, tmp_path) -> VaultLocation:
    if request.param == "file":
        return VaultLocation(LocalStore(tmp_path / "vault"), "data_app.db/")
    return _s3_location(request.getfixturevalue("s3_server"))


def test_kept_copy_restores_byte_identical_with_its_manifest(location, tmp_path):
    db = _database(tmp_path / "restored.db")
    summary, findings = keep_verified(location, POLICY, _result(db), db, NOW, "restorable test")
    assert findings == [] and summary["uploaded"] == "2026-12-03"
    entry = find(location, "latest")
    assert (entry.manifest.sha256, entry.manifest.bytes, entry.manifest.tables) == (_sha(db), db.stat().st_size,
                                                                                    {"items": 1})
    assert entry.manifest.restore_point["position"] == "aaaaaaaaaaaaaaaa/00000003:4152"
    raw = location.store.open(f"{location.prefix}2026-12-03/database.sqlite.lz4").read()
    assert raw[:4] == b"\x04\x22\x4d\x18"  # an LZ4 frame, like Litestream's own objects
    fetch(location, entry, tmp_path / "back.db")
    assert (tmp_path / "back.db").read_bytes() == db.read_bytes()


def test_at_most_one_upload_a_day(location, tmp_path):
    db = _database(tmp_path / "restored.db")
    keep_verified(location, POLICY, _result(db), db, NOW, "v")
    summary, findings = keep_verified(location, POLICY, _result(db), db, NOW + timedelta(hours=5), "v")
    assert findings == [] and summary["uploaded"] is None and "at most one a day" in summary["skipped"]
    assert [e.day for e in entries(location)[0]] == ["2026-12-03"]


def test_pruning_follows_the_plan_and_touches_nothing_else(location, tmp_path):
    db = _database(tmp_path / "restored.db")
    location.store.put(location.prefix + "unrelated.txt", b"mine")
    for day in range(10):
        keep_verified(location, POLICY, _result(db), db, NOW + timedelta(days=day), "v")
    days = [e.day for e in entries(location)[0]]
    assert days == ["2026-12-11", "2026-12-12"]  # 12-12 is the daily, weekly and monthly copy; 12-11 daily
    assert location.store.open(location.prefix + "unrelated.txt").read() == b"mine"


def test_from_vault_day_that_does_not_exist_names_the_entries(location, tmp_path):
    db = _database(tmp_path / "restored.db")
    keep_verified(location, POLICY, _result(db), db, NOW, "v")
    with pytest.raises(ConfigError, match=r"no vault entry .*entries: 2026-12-03"):
        find(location, "2026-11-01")


def test_rotation_check_catches_a_corrupted_vault_object(location, tmp_path):
    db = _database(tmp_path / "restored.db")
    for day in range(2):
        keep_verified(location, POLICY, _result(db), db, NOW + timedelta(days=day), "v")
    key = f"{location.prefix}2026-12-03/database.sqlite.lz4"
    raw = bytearray(location.store.open(key).read())
    raw[len(raw) // 2] ^= 0xFF
    location.store.put(key, bytes(raw))
    seen = []
    for run in range(4):  # runs on days 2, 2 (later), 3 and 4
        summary, findings = check_one(location, tmp_path, NOW + timedelta(days=2 + max(run - 1, 0), hours=run))
        seen.append((summary.get("day"), summary["status"], [(f.severity, f.kind) for f in findings]))
    # Both entries get checked in turn, one re-read a day; the damaged one stays an error on every run.
    assert seen[0] == ("2026-12-03", "damaged", [("error", "vault")])
    assert seen[1] == (None, "skipped", [("error", "vault")])
    assert seen[2] == ("2026-12-04", "ok", [("error", "vault")])
    assert seen[3] == ("2026-12-03", "damaged", [("error", "vault")])


def test_multipart_upload_above_the_threshold(s3_server, tmp_path):
    location = _s3_location(s3_server)
    db = _database(tmp_path / "big.db", blob_mib=PART_SIZE // (1 << 20) + 2)
    summary, findings = keep_verified(location, POLICY, _result(db), db, NOW, "v")
    assert findings == [] and summary["uploaded"] == "2026-12-03"
    fetch(location, find(location, "2026-12-03"), tmp_path / "back.db")
    assert _sha(tmp_path / "back.db") == _sha(db)


def test_interrupted_multipart_upload_leaves_nothing_visible(s3_server, proxy, tmp_path):
    location = _s3_location(s3_server, endpoint=proxy.endpoint)
    proxy.set_rules([fault_error(500, "InternalError", method="PUT", query=r"partNumber=2")])
    db = _database(tmp_path / "big.db", blob_mib=PART_SIZE // (1 << 20) + 2)
    summary, findings = keep_verified(location, POLICY, _result(db), db, NOW, "v")
    assert [(f.severity, f.kind) for f in findings] == [("warning", "vault")]
    assert summary["uploaded"] is None
    bucket = location.store.bucket
    assert s3_server.list_keys(bucket) == []
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    proxy.clear()
    summary, findings = keep_verified(location, POLICY, _result(db), db, NOW, "v")
    assert findings == [] and summary["uploaded"] == "2026-12-03"


def test_parts_left_by_a_killed_upload_are_aborted_the_next_day(s3_server, tmp_path):
    location = _s3_location(s3_server)
    bucket = location.store.bucket
    client = s3_server.client()
    client.create_multipart_upload(Bucket=bucket, Key=f"{location.prefix}2026-12-03/database.sqlite.lz4")
    elsewhere = client.create_multipart_upload(Bucket=bucket, Key="litestream/app/0000/x.ltx")["UploadId"]
    db = _database(tmp_path / "restored.db")
    # moto reports every upload as initiated in 2010, so only "an earlier day" can be shown here.
    keep_verified(location, POLICY, _result(db), db, NOW, "v")
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [elsewhere]  # outside the vault: not ours to abort


def test_temp_file_of_a_killed_upload_is_no_entry_and_is_removed_later(tmp_path):
    location = VaultLocation(LocalStore(tmp_path / "vault"), "data_app.db/")
    leftover = tmp_path / "vault" / "data_app.db" / "2026-12-02" / "database.sqlite.lz4.restorable-tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    db = _database(tmp_path / "restored.db")
    summary, findings = keep_verified(location, POLICY, _result(db), db, NOW, "v")
    assert findings == [] and [e.day for e in entries(location)[0]] == ["2026-12-03"]
    assert not leftover.exists()


@pytest.mark.parametrize("inside", [True, False])
def test_vault_url_inside_a_replica_is_refused(tmp_path, inside):
    from lib.config.sources import config_from_urls
    from lib.vault.store import VaultSettings, locate

    replica_dir = tmp_path / "replica"
    replica_dir.mkdir()
    db = config_from_urls([replica_dir.as_uri()], {}).dbs[0]
    url = (replica_dir / "vault" if inside else tmp_path / "vault").as_uri()
    env = {"RESTORABLE_VAULT_KEEP": "daily=1", "RESTORABLE_VAULT_URL": url}
    if inside:
        with pytest.raises(ConfigError, match="inside the replica"):
            locate(db, VaultSettings.from_environ(env), env)
    else:
        assert locate(db, VaultSettings.from_environ(env), env).store.root == tmp_path / "vault"


def test_s3_vault_url_inside_the_replica_path_is_refused():
    from lib.config.sources import config_from_urls
    from lib.vault.store import VaultSettings, locate

    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1"}
    db = config_from_urls(["s3://bucket/app.db"], env).dbs[0]
    for url, refused in (("s3://bucket/app.db/vault", True), ("s3://bucket/app.db.vault", False),
                         ("s3://other/app.db/vault", False)):
        vault_env = {**env, "RESTORABLE_VAULT_KEEP": "daily=1", "RESTORABLE_VAULT_URL": url}
        if refused:
            with pytest.raises(ConfigError, match="inside the replica"):
                locate(db, VaultSettings.from_environ(vault_env), vault_env)
        else:
            locate(db, VaultSettings.from_environ(vault_env), vault_env)


def test_a_simulated_year_of_daily_runs_on_a_real_vault(tmp_path):
    location = VaultLocation(LocalStore(tmp_path / "vault"), "data_app.db/")
    db = _database(tmp_path / "restored.db")
    start = datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)
    policy = KeepPolicy(daily=7, weekly=4, monthly=12)
    for day in range(365):  # the clock is injected: one verified run a day
        summary, findings = keep_verified(location, policy, _result(db), db, start + timedelta(days=day), "v")
        assert findings == [] and summary["uploaded"]
    days = [e.day for e in entries(location)[0]]
    assert len(days) <= 7 + 4 + 12 and days[-7:] == [f"2026-12-{d}" for d in range(25, 32)]
    assert {d[:7] for d in days} >= {f"2026-{m:02d}" for m in range(2, 13)}  # a copy for each recent month
    assert sorted(p.name for p in (tmp_path / "vault" / "data_app.db").iterdir()) == sorted(days)
