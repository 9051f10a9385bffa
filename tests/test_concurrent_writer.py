"""No false alarms: a healthy replica that litestream keeps writing is never reported failed.

Real litestream v0.3.13 replicates a database that a writer thread changes constantly
(inserts that grow it, in-place updates, deletes), with short snapshot and retention
intervals so that snapshots appear and old WAL, snapshots and generations are deleted
while the verifier lists and reads. Each verification must end ok or warning, at worst
inconclusive; most must end ok. Real damage on such a live replica is still reported as
failed, naming the object.
"""
from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from lib.config.sources import load
from lib.config.settings_model import Settings
from lib.verify import VerifyOptions, run
from tests.support.litestream import V3, Replicator
from tests.support.replicas import write_config

pytestmark = pytest.mark.slow

VERIFY_SECONDS = 20.0
LIVE_CONFIG = {
    "sync-interval": "100ms",
    "snapshot-interval": "2s",
    "retention": "5s",
    "retention-check-interval": "1s",
}
DB_CONFIG = {"monitor-interval": "100ms", "checkpoint-interval": "1s", "min-checkpoint-page-count": 40}


class Writer(threading.Thread):
    """Commits small transactions back to back until stopped."""

    def __init__(self, db_path: Path):
        super().__init__(daemon=True)
        self.db_path = db_path
        self.halt = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        con = sqlite3.connect(self.db_path, isolation_level=None)
        try:
            while not self.halt.is_set():
                self._transaction(con, rng)
                self.commits += 1
                time.sleep(0.002)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            con.close()

    @staticmethod
    def _transaction(con: sqlite3.Connection, rng: random.Random) -> None:
        con.execute("BEGIN IMMEDIATE")
        kind = rng.random()
        if kind < 0.6:
            con.executemany("INSERT INTO t (v, at) VALUES (?, ?)",
                            [(rng.randbytes(rng.randint(10, 3000)), time.time()) for _ in range(rng.randint(1, 15))])
        elif kind < 0.9:
            con.execute("UPDATE t SET v = ?, at = ? WHERE id = (SELECT max(id) FROM t) - ?",
                        (rng.randbytes(200), time.time(), rng.randint(0, 50)))
        else:
            con.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 5)")
        con.execute("COMMIT")

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def create_database(path: Path) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, at REAL)")
    con.close()


@contextmanager
def live_replica(workdir: Path, replica_cfg: dict, env=None) -> Iterator[tuple[Path, Writer, Replicator]]:
    """litestream replicate plus a writer, both running until the block ends."""
    db_path = workdir / "app.db"
    create_database(db_path)
    config = write_config(V3, workdir / "litestream.yml", db_path, replica_cfg, extra_db_config=DB_CONFIG)
    writer = Writer(db_path)
    writer.start()
    with Replicator(V3, config, workdir / "litestream.log", env=env) as replicator:
        try:
            wait_for_log(replicator, 'msg="snapshot written"')  # the first snapshot is there
            yield config, writer, replicator
            replicator.check_alive()
        finally:
            writer.stop()
    assert writer.error is None, writer.error


def wait_for_log(replicator: Replicator, text: str, timeout: float = 60) -> None:
    """Until litestream's log holds ``text`` (a failure bound only: it takes a second or two)."""
    deadline = time.monotonic() + timeout
    while text not in replicator.log(limit=1 << 24):
        replicator.check_alive()
        assert time.monotonic() < deadline, f"litestream did not log {text} in {timeout}s:\n{replicator.log()}"
        time.sleep(0.1)


def verify_repeatedly(config_path: Path, seconds: float, scratch: Path, at_least: int = 10) -> list:
    """Run whole verifications back to back for ``seconds`` and at least ``at_least`` times (a
    loaded machine gets through fewer in the same time); return every database result."""
    config = load(str(config_path), {})
    options = dict(max_age_seconds=3600.0, scratch_root=scratch)
    results = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(results) < at_least:
        report = run(config, Settings(source=None), VerifyOptions(**options))
        results += report.results
    return results


def summary(results) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts


def assert_no_false_alarms(results, log: str) -> None:
    failed = [(r.position, [f.to_json() for f in r.findings]) for r in results if r.status == "failed"]
    assert not failed, "false alarms:\n" + json.dumps(failed, indent=1)
    counts = summary(results)
    assert counts.get("ok", 0) >= max(5, len(results) // 2), counts
    # litestream's own uploads in progress (*.tmp, renamed when complete) are no finding's business
    about_tmp = [f.to_json() for r in results for f in r.findings if (f.object or "").endswith(".tmp")]
    assert not about_tmp, about_tmp[:3]
    # litestream really snapshotted and deleted while we verified
    assert log.count('msg="snapshot written"') >= 3, log[-3000:]
    assert 'msg="wal segmented deleted before"' in log or 'msg="snapshot deleted"' in log, log[-3000:]


def test_live_file_replica_is_never_reported_failed(tmp_path):
    replica_cfg = {"type": "file", "path": str(tmp_path / "replica"), **LIVE_CONFIG}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with live_replica(tmp_path, replica_cfg) as (config, writer, replicator):
        results = verify_repeatedly(config, VERIFY_SECONDS, scratch)
        log = replicator.log(limit=1 << 24)
    assert writer.commits > 500
    assert_no_false_alarms(results, log)


def test_live_s3_replica_is_never_reported_failed(tmp_path, s3_server):
    bucket = s3_server.make_bucket("live")
    replica_cfg = {"type": "s3", "bucket": bucket, "path": "db", "endpoint": s3_server.endpoint,
                   "region": s3_server.region, "force-path-style": True,
                   "access-key-id": s3_server.access_key_id, "secret-access-key": s3_server.secret_access_key,
                   **LIVE_CONFIG}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with live_replica(tmp_path, replica_cfg, env=s3_server.credentials_env()) as (config, writer, replicator):
        results = verify_repeatedly(config, VERIFY_SECONDS, scratch)
        log = replicator.log(limit=1 << 24)
    assert_no_false_alarms(results, log)


def wait_for_multi_segment_index(replica_dir: Path, timeout: float = 60.0) -> Path:
    """The last segment of the first WAL index that has at least two (a loaded machine may take a while)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        by_index: dict[str, list[Path]] = {}
        for seg in sorted(replica_dir.glob("generations/*/wal/*.wal.lz4")):
            by_index.setdefault(seg.name.split("_")[0], []).append(seg)
        multi = [segs for _, segs in sorted(by_index.items()) if len(segs) >= 2]
        if multi:
            return multi[0][-1]
        time.sleep(0.2)
    raise AssertionError(f"no WAL index with two segments after {timeout}s")


def test_damage_on_a_live_replica_is_still_reported_failed(tmp_path):
    """Litestream keeps appending; the damaged object is immutable and still needed."""
    replica_dir = tmp_path / "replica"
    replica_cfg = {"type": "file", "path": str(replica_dir), "sync-interval": "100ms"}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with live_replica(tmp_path, replica_cfg) as (config, writer, replicator):
        victim = wait_for_multi_segment_index(replica_dir)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x20
        victim.write_bytes(bytes(data))
        results = verify_repeatedly(config, 6.0, scratch)
    assert results
    counts = summary(results)
    # never missed; inconclusive only when a listing races litestream renaming its temporary files
    assert counts.get("ok", 0) == counts.get("warning", 0) == 0, counts
    assert counts.get("failed", 0) >= 0.7 * len(results), counts
    named = {f.object for r in results for f in r.findings if f.severity == "error"}
    assert named == {victim.relative_to(replica_dir).as_posix()}, named
    # litestream's own uploads in progress (*.tmp, renamed when complete) are no finding's business
    about_tmp = [f.to_json() for r in results for f in r.findings if (f.object or "").endswith(".tmp")]
    assert not about_tmp, about_tmp[:3]
