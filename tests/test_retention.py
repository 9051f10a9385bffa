"""Retention against real replicas written by litestream v0.3.13 (and one v0.5.17).

File replicas are aged by setting file mtimes; S3 replicas (moto server) by passing a
clock far in the future. Every deleting test verifies again afterwards and compares the
restored file's sha256 with the one before and with `litestream restore`'s reference.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lib.retention.enforce import enforce_after_verify
from lib.config.model import DbConfig, ReplicaConfig
from lib.config.sources import load
from lib.litestream.discover import discover
from lib.report.model import DbResult, could_not_check
from lib.retention.policy import RetentionPolicy
from lib.config.settings_model import DbSettings
from lib.scratch import Scratch
from lib.recovery.step import RecoveryOptions
from lib.verify import VerifyOptions, verify_replica
from tests.support import run_job
from tests.support.litestream import V3
from tests.support.replicas import (BuiltReplica, build_replica, litestream_restore, replica_listing, sha256_file,
                                    write_object)

pytestmark = pytest.mark.slow

DB_SETTINGS = DbSettings(max_age_seconds=30 * 86400.0)  # ages are rewritten below; staleness is not under test
DAY = RetentionPolicy(86400.0)
PREFIX = "replicas/app"


@pytest.fixture(scope="module")
def interval_replica(tmp_path_factory) -> BuiltReplica:
    """One generation with a snapshot every second (snapshot-interval: 1s): several snapshots."""
    built = build_replica(V3, "file", tmp_path_factory.mktemp("v3-interval"), batches=12,
                          extra_replica_config={"snapshot-interval": "1s"})
    assert len(snapshot_keys(built)) >= 4, replica_listing(built)
    return built


# --------------------------------------------------------------------------- helpers


def snapshot_keys(replica: BuiltReplica) -> list[str]:
    return [k for k in replica_listing(replica) if "/snapshots/" in k]


def index_of(key: str) -> int:
    return int(key.rsplit("/", 1)[1][:8], 16)


def pair(replica: BuiltReplica) -> tuple[DbConfig, ReplicaConfig]:
    config = load(str(replica.config_path), {})
    return config.dbs[0], config.dbs[0].replicas[0]


def verify(db: DbConfig, replica: ReplicaConfig, tmp_path: Path) -> DbResult:
    scratch = Scratch(tmp_path)
    try:
        # no drill: these tests plant junk generations that a drill of the oldest point would rightly fail
        return verify_replica(db, replica, DB_SETTINGS, VerifyOptions(recovery=RecoveryOptions(drill="none")), scratch)
    finally:
        scratch.cleanup()


def enforce(db, replica, policy=DAY, *, now=None, dry_run=False, enforce=True, result=None, tmp_path):
    """Verify (unless ``result`` is given), then run retention; return (result, findings)."""
    store = replica.open_store()
    state = discover(store, replica)
    result = result or verify(db, replica, tmp_path)
    findings = enforce_after_verify(
        store, replica, state, result, policy, enforce=enforce, dry_run=dry_run,
        now=now or datetime.now(timezone.utc), verified_good=None)
    return result, findings


def age_files(replica: BuiltReplica, keys, age: timedelta) -> None:
    moment = (datetime.now(timezone.utc) - age).timestamp()
    for key in keys:
        os.utime(replica.replica_dir / key, (moment, moment))


def generation_keys(replica: BuiltReplica, generation: str) -> set[str]:
    return {k for k in replica_listing(replica) if k.startswith(f"generations/{generation}/")}


def retime_by_index(replica: BuiltReplica, now: datetime) -> int:
    """Rewrite mtimes into a long history: WAL index i starts (N - i) * 10h + 1h before ``now``
    (segments a minute apart, its snapshot 30s after its first segment). Returns N."""
    keys = list(replica_listing(replica))
    top = max(index_of(k) for k in keys)
    for key in keys:
        base = now - timedelta(hours=(top - index_of(key)) * 10 + 1)
        name = key.rsplit("/", 1)[1]
        if "/snapshots/" in key:
            moment = base + timedelta(seconds=30)
        else:
            rank = sorted(k for k in keys if "/wal/" in k and index_of(k) == index_of(key)).index(key)
            moment = base + timedelta(minutes=rank)
        assert name  # keys are files
        os.utime(replica.replica_dir / key, (moment.timestamp(), moment.timestamp()))
    return top


def assert_restores_like_before(db, replica, before: DbResult, built: BuiltReplica, tmp_path: Path) -> None:
    after = verify(db, replica, tmp_path)
    assert after.status == "ok", after.findings
    assert after.restored.sha256 == before.restored.sha256 == built.reference_sha256


def assert_litestream_restores(built: BuiltReplica, tmp_path: Path) -> None:
    out = litestream_restore(built, tmp_path / "litestream-after.db")
    assert sha256_file(out) == built.reference_sha256


# --------------------------------------------------------------------------- v0.3 file replicas


def test_enforce_deletes_an_old_generation_and_keeps_the_current(v3_multigen_file_replica, clone, tmp_path):
    built = clone(v3_multigen_file_replica)
    old, current = built.generations
    old_keys, current_keys = generation_keys(built, old), generation_keys(built, current)
    age_files(built, old_keys, timedelta(days=3))
    db, replica = pair(built)

    before, findings = enforce(db, replica, tmp_path=tmp_path)

    assert findings == []
    assert set(replica_listing(built)) == current_keys
    summary = before.extra["retention"]
    assert summary["mode"] == "enforce"
    assert summary["deleted"]["objects"] == len(old_keys)
    assert summary["kept"]["objects"] == len(current_keys)
    assert_restores_like_before(db, replica, before, built, tmp_path)
    assert_litestream_restores(built, tmp_path)


@pytest.mark.parametrize("floor", ["one snapshot", "all but one snapshot"])
def test_enforce_prunes_snapshots_and_wal_below_the_oldest_kept_snapshot(interval_replica, clone, tmp_path, floor):
    built = clone(interval_replica)
    now = datetime.now(timezone.utc)
    top = retime_by_index(built, now)
    snapshots = sorted(index_of(k) for k in snapshot_keys(built))
    keep = 1 if floor == "one snapshot" else len(snapshots) - 1
    # A 35h window: indexes top-3 and up (31h old and younger) are inside, top-4 and below (41h+) outside.
    policy = RetentionPolicy(35 * 3600.0, keep_snapshots=keep)
    oldest_kept = min([s for s in snapshots if s >= top - 3] + snapshots[-keep:])
    assert oldest_kept > 0, snapshots  # something to prune
    listing = set(replica_listing(built))
    db, replica = pair(built)

    before, findings = enforce(db, replica, policy, now=now, tmp_path=tmp_path)

    assert findings == []
    assert set(replica_listing(built)) == {k for k in listing if index_of(k) >= oldest_kept}
    assert_restores_like_before(db, replica, before, built, tmp_path)
    assert_litestream_restores(built, tmp_path)


def test_objects_only_just_outside_the_window_are_kept_by_the_margin(v3_multigen_file_replica, clone, tmp_path):
    built = clone(v3_multigen_file_replica)
    old_keys = generation_keys(built, built.generations[0])
    age_files(built, old_keys, timedelta(hours=24, minutes=5))
    listing = set(replica_listing(built))
    db, replica = pair(built)

    result, findings = enforce(db, replica, tmp_path=tmp_path)

    assert set(replica_listing(built)) == listing
    assert result.extra["retention"]["reclaimable"]["objects"] == len(old_keys)
    assert result.extra["retention"]["deleted"]["objects"] == 0
    assert findings == []


def test_failed_verification_deletes_nothing(v3_multigen_file_replica, clone, tmp_path):
    built = clone(v3_multigen_file_replica)
    old, current = built.generations
    age_files(built, generation_keys(built, old), timedelta(days=3))
    snapshot = next(k for k in generation_keys(built, current) if "/snapshots/" in k)
    write_object(built, snapshot, b"not an lz4 frame")
    listing = set(replica_listing(built))
    db, replica = pair(built)

    result, findings = enforce(db, replica, tmp_path=tmp_path)

    assert result.status == "failed"
    assert findings == []
    assert result.extra["retention"]["mode"] == "skipped"
    assert set(replica_listing(built)) == listing


def test_inconclusive_verification_deletes_nothing(v3_multigen_file_replica, clone, tmp_path):
    built = clone(v3_multigen_file_replica)
    age_files(built, generation_keys(built, built.generations[0]), timedelta(days=3))
    listing = set(replica_listing(built))
    db, replica = pair(built)
    inconclusive = DbResult(db=db.path, replica=replica.name,
                            findings=[could_not_check("unreachable", "listing timed out")])

    _, findings = enforce(db, replica, result=inconclusive, tmp_path=tmp_path)

    assert findings == []
    assert inconclusive.extra["retention"]["mode"] == "skipped"
    assert set(replica_listing(built)) == listing


def test_without_enforcement_the_plan_is_reported_with_a_warning(v3_multigen_file_replica, clone, tmp_path):
    built = clone(v3_multigen_file_replica)
    old_keys = generation_keys(built, built.generations[0])
    age_files(built, old_keys, timedelta(days=3))
    listing = set(replica_listing(built))
    db, replica = pair(built)

    result, findings = enforce(db, replica, enforce=False, tmp_path=tmp_path)

    assert set(replica_listing(built)) == listing
    assert [(f.severity, f.kind) for f in findings] == [("warning", "retention")]
    assert f"{len(old_keys)} object(s)" in findings[0].message
    summary = result.extra["retention"]
    assert summary["mode"] == "report"
    assert summary["reclaimable"] == {"objects": len(old_keys),
                                      "bytes": sum(replica_listing(built)[k] for k in old_keys)}


def test_dry_run_records_exactly_the_keys_and_deletes_nothing(v3_multigen_file_replica, clone, tmp_path):
    built = clone(v3_multigen_file_replica)
    old_keys = generation_keys(built, built.generations[0])
    age_files(built, old_keys, timedelta(days=3))
    listing = replica_listing(built)
    db, replica = pair(built)

    result, _ = enforce(db, replica, dry_run=True, enforce=True, tmp_path=tmp_path)

    assert replica_listing(built) == listing
    would = result.extra["retention"]["would_delete"]
    assert {d["key"] for d in would} == old_keys
    assert all(d["size"] == listing[d["key"]] and "older than the 1d window" in d["reason"] for d in would)


# --------------------------------------------------------------------------- the job


def test_job_dry_run_prints_exactly_the_keys_and_wins_over_enforce(v3_multigen_file_replica, clone):
    built = clone(v3_multigen_file_replica)
    old_keys = generation_keys(built, built.generations[0])
    age_files(built, old_keys, timedelta(days=3))
    listing = replica_listing(built)

    proc = run_job("jobs.retention", "--config", built.config_path, "--dry-run", "--enforce")

    assert proc.returncode == 0, proc.stderr
    printed = [line.split("\t") for line in proc.stdout.splitlines() if line.count("\t") == 2]
    assert {key for key, _, _ in printed} == old_keys
    assert all(int(size) == listing[key] for key, size, _ in printed)
    assert replica_listing(built) == listing


def test_job_enforce_deletes_and_the_replica_still_restores(v3_multigen_file_replica, clone, tmp_path):
    built = clone(v3_multigen_file_replica)
    old, current = built.generations
    age_files(built, generation_keys(built, old), timedelta(days=3))

    proc = run_job("jobs.retention", "--config", built.config_path, "--enforce", "--json")

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["databases"][0]["retention"]["mode"] == "enforce"
    assert set(replica_listing(built)) == generation_keys(built, current)
    out = tmp_path / "restored.db"
    proc = run_job("jobs.restore", "--config", built.config_path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert sha256_file(out) == built.reference_sha256


def test_job_without_enforce_only_reports(v3_multigen_file_replica, clone):
    built = clone(v3_multigen_file_replica)
    age_files(built, generation_keys(built, built.generations[0]), timedelta(days=3))
    listing = replica_listing(built)

    proc = run_job("jobs.retention", "--config", built.config_path, "--retention", "2d")

    assert proc.returncode == 0, proc.stderr
    assert "warning: [retention]" in proc.stdout
    assert "window 2d (--retention)" in proc.stdout
    assert replica_listing(built) == listing


def test_job_enforces_when_the_environment_says_so(v3_multigen_file_replica, clone, restorable_env):
    built = clone(v3_multigen_file_replica)
    old, current = built.generations
    age_files(built, generation_keys(built, old), timedelta(days=3))

    proc = run_job("jobs.retention", "--config", built.config_path,
                   env={**restorable_env, "RESTORABLE_ENFORCE_RETENTION": "true"})

    assert proc.returncode == 0, proc.stderr
    assert set(replica_listing(built)) == generation_keys(built, current)


# --------------------------------------------------------------------------- S3 (moto server)


def upload_generations(built: BuiltReplica, s3_server) -> ReplicaConfig:
    """Copy a file replica to a new bucket, one generation per second, oldest first (so
    LastModified keeps the generations' order), and describe it as an s3 replica."""
    bucket = s3_server.make_bucket("retention")
    client = s3_server.client()
    for gen in built.generations:
        for key in sorted(generation_keys(built, gen)):
            client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=(built.replica_dir / key).read_bytes())
        time.sleep(1.1)
    return ReplicaConfig(name="s3", type="s3", path=PREFIX, bucket=bucket, endpoint=s3_server.endpoint,
                         region=s3_server.region, access_key_id=s3_server.access_key_id,
                         secret_access_key=s3_server.secret_access_key, force_path_style=True)


def s3_keys(s3_server, replica: ReplicaConfig) -> set[str]:
    return set(s3_server.list_keys(replica.bucket, PREFIX + "/"))


def deny_deletes(s3_server, bucket: str) -> None:
    s3_server.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
                       "Resource": f"arn:aws:s3:::{bucket}/*"}],
    }))


def test_s3_enforce_with_a_future_clock_deletes_the_old_generation(v3_multigen_file_replica, s3_server, tmp_path):
    built = v3_multigen_file_replica
    replica = upload_generations(built, s3_server)
    db = DbConfig(path=str(built.db_path), replicas=(replica,))
    later = datetime.now(timezone.utc) + timedelta(days=30)

    before, findings = enforce(db, replica, now=later, tmp_path=tmp_path)

    assert findings == []
    current = built.generations[1]
    assert s3_keys(s3_server, replica) == {f"{PREFIX}/{k}" for k in generation_keys(built, current)}
    assert_restores_like_before(db, replica, before, built, tmp_path)


def test_s3_refused_delete_is_a_loud_retention_error(v3_multigen_file_replica, s3_server, tmp_path):
    built = v3_multigen_file_replica
    replica = upload_generations(built, s3_server)
    deny_deletes(s3_server, replica.bucket)
    db = DbConfig(path=str(built.db_path), replicas=(replica,))
    keys = s3_keys(s3_server, replica)
    old_keys = generation_keys(built, built.generations[0])

    result, findings = enforce(db, replica, now=datetime.now(timezone.utc) + timedelta(days=30),
                               tmp_path=tmp_path)

    assert s3_keys(s3_server, replica) == keys
    assert [(f.severity, f.kind) for f in findings] == [("error", "retention")]
    message = findings[0].message
    assert "AccessDenied" in message and f"of {len(old_keys)} object(s)" in message
    assert "offset-0 WAL segment(s) were kept" in message and "The backup itself verified" in message
    failed = result.extra["retention"]["failed"]
    assert failed["objects"] + failed["held_back"] == len(old_keys) and failed["held_back"] > 0
    assert result.extra["retention"]["deleted"]["objects"] == 0
    result.findings += findings
    assert result.status == "failed"
    assert_restores_like_before(db, replica, result, built, tmp_path)


def test_s3_deletes_more_than_one_delete_objects_batch(v3_s3_replica, clone, s3_server, tmp_path):
    built = clone(v3_s3_replica)
    client = s3_server.client()
    real = set(s3_server.list_keys(built.bucket, PREFIX + "/"))
    # An abandoned generation of 1,010 small WAL segments in two indexes (more than S3's 1,000
    # keys per DeleteObjects), then the real generation rewritten so that it is the newer one.
    old = f"{PREFIX}/generations/0000000000000001"
    keys = [f"{old}/snapshots/00000000.snapshot.lz4"]
    keys += [f"{old}/wal/{n % 2:08x}_{(n // 2) * 32:08x}.wal.lz4" for n in range(1010)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=built.bucket, Key=key, Body=b"x"), keys))
    time.sleep(1.1)
    for key in sorted(real):
        client.copy_object(Bucket=built.bucket, Key=key, CopySource={"Bucket": built.bucket, "Key": key},
                           MetadataDirective="REPLACE")
    db, replica = pair(built)

    before, findings = enforce(db, replica, now=datetime.now(timezone.utc) + timedelta(days=30), tmp_path=tmp_path)

    assert findings == []
    assert before.extra["retention"]["deleted"]["objects"] == len(keys)
    assert set(s3_server.list_keys(built.bucket, PREFIX + "/")) == real
    assert_restores_like_before(db, replica, before, built, tmp_path)


# --------------------------------------------------------------------------- v0.5


def test_v5_is_report_only_even_when_enforced(v5_file_replica, clone, tmp_path):
    built = clone(v5_file_replica)
    listing = replica_listing(built)
    db, replica = pair(built)
    l1_max = max(int(k[-20:-4], 16) for k in listing if k.startswith("ltx/1/"))
    level0 = sorted(k for k in listing if k.startswith("ltx/0/"))
    # A month later Litestream would have dropped every level-0 file compacted into level 1 but the last.
    compacted = [k for k in level0[:-1] if int(k[-20:-4], 16) <= l1_max]

    result, findings = enforce(db, replica, now=datetime.now(timezone.utc) + timedelta(days=30),
                               tmp_path=tmp_path)

    assert replica_listing(built) == listing
    summary = result.extra["retention"]
    assert (summary["mode"], summary["format"], summary["deleted"]["objects"]) == ("report", "v0.5", 0)
    assert summary["reclaimable"]["objects"] == len(compacted) > 0
    assert any("report-only" in note for note in summary["notes"])
    assert [(f.severity, f.kind) for f in findings] == [("warning", "retention")]
    assert "Litestream v0.5 should delete them itself" in findings[0].message
