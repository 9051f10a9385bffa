"""The false alarm of issue 19, rebuilt from real litestream 0.3.13 objects.

Litestream 0.3.13 can upload a snapshot whose database file already holds transactions that
are not in the replica yet (its last checkpoint backfilled frames written after its last copy
of the WAL); they arrive as the next segments of the snapshot's index a sync or two later.
A verification that lists the replica in between restores the snapshot, replays the WAL
listed with it over it, and gets a malformed database ("database disk image is malformed",
or "Page N is never used"); so does ``litestream restore`` at that moment. The fresh listing
that used to judge the finding came a few milliseconds later, before the upload, so a healthy
replica was reported failed. Now a finding that can come from this waits until the snapshot
is ``SNAPSHOT_SETTLE_SECONDS`` old before the fresh listing.

The state is rebuilt from a real replica: the snapshot of the newest index is replaced by the
database at the end of that index (what Litestream's snapshot holds), and the index's last
segments are moved aside (not uploaded yet).
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import lz4.frame
import pytest

import lib.litestream.v3.restore  # noqa: F401  warm: the first verification must be as quick as a later one

from bench.stress_evidence import RecordingReplica, keep_failure
from lib.config.settings_model import Settings
from lib.config.sources import load
from lib.crosscheck.binary import Binary
from lib.crosscheck.run import restore_theirs
from lib.litestream.v3.layout import parse_v3_listing
from lib.litestream.v3.layout import SNAPSHOT_SETTLE_SECONDS
from lib.litestream.v3.race import settle_delay
from lib.report.model import error
from lib.scratch import Scratch
from lib.storage.base import ObjectInfo
from lib.verify import VerifyOptions, verify_replica
from tests.support.litestream import V3, litestream_bin
from tests.support.replicas import replica_listing

MALFORMED = "database disk image is malformed"


def snapshot_ahead_of_its_wal(replica, aside: Path) -> list[Path]:
    """Make the replica look as it does between Litestream's snapshot upload and the upload of
    the rest of that index; return where the held-back segments wait."""
    keys = [k for k in replica_listing(replica) if "/wal/" in k]
    generation = keys[0].split("/")[1]
    newest = max(int(k.rsplit("/", 1)[1][:8], 16) for k in keys)
    segments = sorted(k for k in keys if int(k.rsplit("/", 1)[1][:8], 16) == newest)
    assert len(segments) >= 3, segments
    snapshot = replica.replica_dir / f"generations/{generation}/snapshots/{newest:08x}.snapshot.lz4"
    snapshot.write_bytes(lz4.frame.compress(replica.reference_path.read_bytes(), content_checksum=True))
    aside.mkdir()
    held = []
    for key in segments[-2:]:
        (replica.replica_dir / key).rename(aside / Path(key).name)
        held.append((aside / Path(key).name, replica.replica_dir / key))
    return held


def verify(replica, tmp_path: Path, wrap=lambda r: r):
    config = load(str(replica.config_path), {})
    db = config.dbs[0]
    scratch = Scratch(tmp_path)
    try:
        return verify_replica(db, wrap(db.replicas[0]), Settings(source=None).for_db(db.path),
                              VerifyOptions(max_age_seconds=7 * 86400.0), scratch)
    finally:
        scratch.cleanup()


@pytest.mark.slow
def test_snapshot_ahead_of_the_listed_wal_is_verified_again_once_litestream_uploads_the_rest(v3_file_replica,
                                                                                              clone, tmp_path):
    replica = clone(v3_file_replica)
    held = snapshot_ahead_of_its_wal(replica, tmp_path / "aside")
    upload = threading.Timer(1.5, lambda: [src.rename(dst) for src, dst in held])  # Litestream's next sync
    started = time.monotonic()
    upload.start()
    try:
        result = verify(replica, tmp_path)
    finally:
        upload.cancel()
    assert result.status == "ok", [f.to_json() for f in result.findings]
    assert result.restored.sha256 == replica.reference_sha256
    assert time.monotonic() - started >= 1.5


@pytest.mark.slow
def test_the_same_state_that_never_catches_up_is_still_failed(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    snapshot_ahead_of_its_wal(replica, tmp_path / "aside")
    started = time.monotonic()
    result = verify(replica, tmp_path)
    assert result.status == "failed"
    assert [f.kind for f in result.findings if f.severity == "error"] == ["integrity"]
    assert MALFORMED in result.findings[0].message
    assert time.monotonic() - started >= SNAPSHOT_SETTLE_SECONDS - 0.5  # judged on a listing taken later


@pytest.mark.slow
def test_litestream_restore_of_that_moment_fails_too(v3_file_replica, clone, tmp_path):
    """The inconsistency is in the objects Litestream had uploaded, not in restorable's restore."""
    replica = clone(v3_file_replica)
    snapshot_ahead_of_its_wal(replica, tmp_path / "aside")
    theirs = restore_theirs(Binary(str(litestream_bin(V3)), V3), replica.replica_dir, tmp_path / "ls.db", {})
    said = theirs.failed or (theirs.integrity or ["sound"])[0]
    assert MALFORMED in said, said  # 0.3.13: "cannot apply wal: database disk image is malformed", exit 1


@pytest.mark.slow
def test_the_stress_harness_keeps_what_a_failed_verification_read(v3_file_replica, clone, tmp_path):
    """bench/stress.py's evidence: objects copied as they were read, so Litestream deleting them
    later loses nothing; both restores of the frozen copy say the damage is in the objects."""
    replica = clone(v3_file_replica)
    snapshot_ahead_of_its_wal(replica, tmp_path / "aside")
    recorded = []
    result = verify(replica, tmp_path, wrap=lambda r: recorded.append(RecordingReplica(r)) or recorded[-1])
    assert result.status == "failed"
    shutil.rmtree(replica.replica_dir / "generations")  # Litestream's retention, after the fact
    evidence = tmp_path / "evidence"
    summary = keep_failure(evidence, recorded[0], result, "v0.3", Binary(str(litestream_bin(V3)), V3), "the log")
    assert summary["findings"][0]["kind"] == "integrity"
    assert MALFORMED in summary["frozen_restorable"]["integrity"][0]  # the same verdict from the kept objects
    assert MALFORMED in summary["frozen_litestream"]["failed"]  # and litestream restore of them fails alike
    assert summary["litestream_restore_also_unsound"] is True
    listed = {o[0] for attempt in json.loads((evidence / "listings.json").read_text()) for listing in attempt
              for o in listing["objects"]}
    read = {p.relative_to(evidence / "objects" / "attempt1").as_posix()
            for p in (evidence / "objects" / "attempt1").rglob("*") if p.is_file()}
    assert any(k.endswith(".snapshot.lz4") for k in read) and any(k.endswith(".wal.lz4") for k in read)
    assert read <= listed  # every object read, as listed
    assert any((evidence / "frozen" / "generations").rglob("*.snapshot.lz4"))
    assert (evidence / "restorable.db").exists() and (evidence / "litestream.log").read_text() == "the log"


# --------------------------------------------------------------------------- settle_delay (pure)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
GEN = "0123456789abcdef"


def state(snapshot_age: float, wal_indexes: list[int], snapshot_index: int = 4):
    objects = [ObjectInfo(f"generations/{GEN}/snapshots/{snapshot_index:08x}.snapshot.lz4", 100,
                          NOW - timedelta(seconds=snapshot_age))]
    objects += [ObjectInfo(f"generations/{GEN}/wal/{i:08x}_00000000.wal.lz4", 10, NOW - timedelta(seconds=1))
                for i in wal_indexes]
    return parse_v3_listing(objects, "generations/")


INTEGRITY = [error("integrity", "restored database cannot be checked: database disk image is malformed")]


def test_settle_delay_waits_for_a_young_snapshot_in_the_newest_index():
    assert settle_delay(state(0.5, [4]), INTEGRITY, NOW, 0.1) == pytest.approx(SNAPSHOT_SETTLE_SECONDS - 0.5)
    assert settle_delay(state(0.5, [4]), [error("wal_gap", "behind the snapshot")], NOW, 0.1) > 0
    assert settle_delay(state(0.5, [4]), INTEGRITY, NOW, 1.0) == pytest.approx(20 * 1.0 - 0.5)  # slow syncs


def test_settle_delay_is_zero_when_the_race_is_impossible_or_over():
    assert settle_delay(state(SNAPSHOT_SETTLE_SECONDS + 1, [4]), INTEGRITY, NOW, 0.1) == 0  # old snapshot
    assert settle_delay(state(0.5, [4, 5]), INTEGRITY, NOW, 0.1) == 0  # Litestream moved on to a new index
    assert settle_delay(state(0.5, [4]), [error("corrupt_object", "bad LZ4")], NOW, 0.1) == 0  # not this race
    assert settle_delay(state(0.5, [4]), [], NOW, 0.1) == 0
