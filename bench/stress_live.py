"""Live replicas for the stress harness: the real litestream replicating a database that a
writer changes constantly, with short snapshot, retention and checkpoint intervals, and
busy processes that load the machine as a full CI run does.

Used by ``bench/stress.py`` and ``tests/test_stress.py``.
"""
from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from tests.support.litestream import V3, V5, Replicator
from tests.support.s3server import S3Server

# Litestream's cadence: snapshots, retention and checkpoints happen many times a minute,
# so verifications keep meeting them.
SYNC_INTERVAL = "100ms"
V3_REPLICA = {"snapshot-interval": "2s", "retention": "5s", "retention-check-interval": "1s"}
V5_TOP = {"snapshot": {"interval": "2s", "retention": "5s"}, "l0-retention": "5s",
          "l0-retention-check-interval": "1s", "levels": [{"interval": "1s"}]}
DB_CONFIG = {"monitor-interval": "100ms", "checkpoint-interval": "1s", "min-checkpoint-page-count": 40}

MAX_ROWS = 600  # the writer deletes the oldest rows beyond this: about 1 MB, verified in ~0.1 s
FIRST_SYNC_SECONDS = 30.0


@dataclass(frozen=True)
class Scenario:
    version: str  # tests.support.litestream.V3 | V5
    kind: str  # "file" | "s3"

    @property
    def name(self) -> str:
        return f"v{self.version[2]}-{self.kind}"


SCENARIOS = tuple(Scenario(v, k) for v in (V3, V5) for k in ("file", "s3"))


def scenario(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise ValueError(f"unknown scenario {name!r}; one of {', '.join(s.name for s in SCENARIOS)}")


class Writer(threading.Thread):
    """Commits small transactions back to back (inserts, in-place updates, deletes) until stopped."""

    def __init__(self, db_path: Path, seed: int = 7, pause: float = 0.002):
        super().__init__(daemon=True, name="writer")
        self.db_path = db_path
        self.rng = random.Random(seed)
        self.pause = pause
        self.halt = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        con = sqlite3.connect(self.db_path, isolation_level=None, timeout=30)
        try:
            while not self.halt.is_set():
                self._transaction(con)
                self.commits += 1
                time.sleep(self.pause)
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            con.close()

    def _transaction(self, con: sqlite3.Connection) -> None:
        rng = self.rng
        con.execute("BEGIN IMMEDIATE")
        kind = rng.random()
        if kind < 0.55:
            con.executemany("INSERT INTO t (v, at) VALUES (?, ?)",
                            [(rng.randbytes(rng.randint(10, 3000)), time.time()) for _ in range(rng.randint(1, 12))])
        elif kind < 0.85:
            con.execute("UPDATE t SET v = ?, at = ? WHERE id = (SELECT max(id) FROM t) - ?",
                        (rng.randbytes(rng.randint(50, 2000)), time.time(), rng.randint(0, 50)))
        elif kind < 0.95:
            con.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 5)")
        else:
            con.execute("DELETE FROM t WHERE id < (SELECT max(id) FROM t) - ?", (MAX_ROWS,))
        con.execute("COMMIT")

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


def create_database(path: Path) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, at REAL)")
    con.close()


def write_live_config(sc: Scenario, path: Path, db_path: Path, replica: dict) -> Path:
    db = {"path": str(db_path), **DB_CONFIG}
    replica = {**replica, "sync-interval": SYNC_INTERVAL}
    if sc.version == V3:
        doc = {"dbs": [{**db, "replicas": [{**replica, **V3_REPLICA}]}]}
    else:
        doc = {**V5_TOP, "dbs": [{**db, "replica": replica}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Live:
    """A running scenario: what the harness needs to verify it and to keep evidence."""

    scenario: Scenario
    config_path: Path
    replica_dir: Path | None
    s3: S3Server | None
    bucket: str | None
    writer: Writer
    replicator: Replicator

    def check(self) -> None:
        self.replicator.check_alive()
        if self.writer.error is not None:
            raise RuntimeError(f"writer failed: {self.writer.error!r}")


@contextmanager
def live_replica(sc: Scenario, workdir: Path) -> Iterator[Live]:
    """litestream replicate plus a writer, both running until the block ends (a moto server for S3)."""
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "app.db"
    create_database(db_path)
    s3 = bucket = replica_dir = None
    env = None
    if sc.kind == "file":
        replica_dir = workdir / "replica"
        replica = {"type": "file", "path": str(replica_dir)}
    else:
        s3 = S3Server(log_path=workdir / "moto.log")
        bucket = s3.make_bucket("stress")
        env = s3.credentials_env()
        replica = {"type": "s3", "bucket": bucket, "path": "db", "endpoint": s3.endpoint, "region": s3.region,
                   "force-path-style": True, "access-key-id": s3.access_key_id,
                   "secret-access-key": s3.secret_access_key}
    config = write_live_config(sc, workdir / "litestream.yml", db_path, replica)
    writer = Writer(db_path, seed=os.getpid())
    try:
        writer.start()
        with Replicator(sc.version, config, workdir / "litestream.log", env=env) as replicator:
            live = Live(sc, config, replica_dir, s3, bucket, writer, replicator)
            try:
                _wait_first_sync(live)
                yield live
                live.check()
            finally:
                writer.stop()
                _stop(replicator)
    finally:
        writer.stop()
        if s3 is not None:
            s3.stop()


def _stop(replicator: Replicator) -> None:
    """SIGINT, then kill: a loaded machine may keep litestream's last S3 sync from ending in time,
    which says nothing about the verifications."""
    try:
        replicator.stop(timeout=20)
    except RuntimeError:
        pass  # killed by stop()


def _wait_first_sync(live: Live) -> None:
    """Until litestream has written its first snapshot (v0.3) or LTX file (v0.5)."""
    needle = 'msg="snapshot written"' if live.scenario.version == V3 else "ltx"
    deadline = time.monotonic() + FIRST_SYNC_SECONDS
    while time.monotonic() < deadline:
        live.check()
        if _has_objects(live, needle):
            return
        time.sleep(0.2)
    raise RuntimeError(f"litestream wrote nothing in {FIRST_SYNC_SECONDS:.0f}s; log:\n{live.replicator.log()}")


def _has_objects(live: Live, needle: str) -> bool:
    if live.scenario.version == V3:
        return needle in live.replicator.log(limit=1 << 20)
    if live.replica_dir is not None:
        return any(live.replica_dir.glob("ltx/*/*.ltx"))
    return bool(live.s3.list_keys(live.bucket, "db/"))


@contextmanager
def machine_load(processes: int) -> Iterator[None]:
    """``processes`` busy loops (CPU) at normal priority, one of them also writing and
    fsyncing a file (disk), like the other workers of a full CI run; stopped by pid."""
    code = ("import os, sys, tempfile\n"
            "disk = sys.argv[1] == '1'\n"
            "f = tempfile.TemporaryFile() if disk else None\n"
            "n = 0\n"
            "while True:\n"
            "    n += 1\n"
            "    if disk and n % 20000 == 0:\n"
            "        f.seek(0); f.write(os.urandom(1 << 20)); f.flush(); os.fsync(f.fileno())\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, "1" if i == 0 else "0"], stdin=subprocess.DEVNULL)
             for i in range(processes)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)
