"""Build the benchmark's replicas with the real litestream binaries, and cache them.

A replica is a bucket directory below ``<cache>/s3/`` (what ``rclone serve s3`` serves),
written through rclone's S3 API by ``litestream replicate``; ``<cache>/meta/<bucket>.json``
is written last and marks it complete. A bucket without its meta file is rebuilt.

Kinds:

* ``big``: a database of ``size_mb`` written first, then replicated (Litestream snapshots
  it), then about 15 % of its size more in transactions that insert and update rows all
  over the file, a few per sync, so the replica holds real WAL: several v0.3 WAL indexes
  through Litestream's checkpoints, or a chain of v0.5 L0 files after the L9 snapshot.
* ``segments``: a 1 MB v0.3 database and then ``segments`` one-row transactions, one per
  sync (10 ms intervals), so the replica holds that many tiny WAL segments.
* ``small``: a 1 MB database with a few transactions after the snapshot; copied 50 times
  into one bucket for the many-databases case.

Each build ends with ``litestream restore`` of the replica, whose row counts must match
the source; its sha256 is recorded as the reference restorable's output is compared with.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from bench import harness

V3 = "0.3.13"
V5 = "0.5.17"
BUILD_REVISION = 3  # bump when the way replicas are built changes: cached ones are rebuilt
REPLICA_PATH = "db"  # the replica's key prefix inside its bucket

ROW_RANDOM_BYTES = 80  # per row, plus ~300 bytes of JSON-ish text: ~2.7x LZ4 ratio, like the 213/79 MB
FILL_ROWS_PER_TXN = 5000
ROW_BYTES_ON_DISK = 420  # a row plus its index entry, roughly
STOP_TIMEOUT = 120.0
SETTLE_SECONDS = 2.0  # a listing unchanged this long (20 sync intervals) means litestream caught up


@dataclass(frozen=True)
class Spec:
    """What to build. ``size_mb`` is the database size before the post-snapshot writes."""

    kind: str  # "big" | "segments" | "small"
    version: str  # V3 | V5
    size_mb: float
    segments: int = 0

    @property
    def bucket(self) -> str:
        tag = "v3" if self.version == V3 else "v5"
        size = f"{self.size_mb:g}".replace(".", "p")
        extra = f"-{self.segments}seg" if self.kind == "segments" else ""
        return f"{self.kind}-{tag}-{size}mb{extra}-r{BUILD_REVISION}"


@dataclass
class Built:
    """A complete replica and its facts (the meta file's contents)."""

    spec: Spec
    bucket: str
    db_bytes: int
    rows: int
    objects: int
    object_bytes: int
    wal_objects: int  # v0.3 WAL segments, or v0.5 LTX files below level 9
    reference_sha256: str
    build_seconds: float


class Cache:
    def __init__(self, root: Path):
        self.root = root
        self.s3_root = root / "s3"
        self.meta_dir = root / "meta"
        self.work = root / "work"
        self.logs = root / "logs"
        for d in (self.s3_root, self.meta_dir, self.work, self.logs):
            d.mkdir(parents=True, exist_ok=True)

    def db_path(self, bucket: str) -> Path:
        """The source database path named in the configs (it need not exist to restore)."""
        return self.work / "src" / bucket / "app.db"

    def load(self, spec: Spec) -> Built | None:
        meta = self.meta_dir / f"{spec.bucket}.json"
        if not meta.exists() or not (self.s3_root / spec.bucket).is_dir():
            return None
        data = json.loads(meta.read_text())
        data["spec"] = Spec(**data["spec"])
        return Built(**data)

    def save(self, built: Built) -> None:
        meta = self.meta_dir / f"{built.bucket}.json"
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(built), indent=2))
        os.replace(tmp, meta)


# --------------------------------------------------------------------------- configs


def replica_config(version: str, endpoint: str, bucket: str, path: str = REPLICA_PATH, **extra) -> dict:
    replica = {
        "type": "s3", "bucket": bucket, "path": path, "endpoint": endpoint, "region": harness.REGION,
        "access-key-id": harness.ACCESS_KEY, "secret-access-key": harness.SECRET_KEY, "force-path-style": True,
        **extra,
    }
    return replica


def db_entry(version: str, db_path: Path, replica: dict, **extra) -> dict:
    key = "replicas" if version == V3 else "replica"  # 0.5 prefers the single form
    return {"path": str(db_path), **extra, key: [replica] if version == V3 else replica}


def write_config(path: Path, dbs: list[dict], **top) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**top, "dbs": dbs}, sort_keys=False))
    return path


# --------------------------------------------------------------------------- data


class Writer:
    """Writes random-ish rows (about 2.7x compressible) into one database."""

    def __init__(self, path: Path, seed: int):
        self.rng = random.Random(seed)
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, "
                         "name TEXT NOT NULL, payload BLOB NOT NULL)")
        self.con.execute("CREATE INDEX IF NOT EXISTS items_name ON items (name)")
        self.batch = 0
        self.words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()

    def _row(self) -> tuple:
        rng, words = self.rng, self.words
        a, b, c = rng.choice(words), rng.choice(words), rng.choice(words)
        doc = (f'{{"status": "active", "plan": "{a}", "region": "eu-west-{rng.randint(1, 3)}", "tags": ["{b}", '
               f'"{c}"], "owner": "{a}.{b}@example.com", "note": "written by the restorable benchmark; random-ish '
               f'so the database compresses about like an application database", "n": {rng.randint(0, 10**6)}}}')
        return self.batch, f"item-{rng.getrandbits(40):012x}", rng.randbytes(ROW_RANDOM_BYTES) + doc.encode()

    def insert(self, rows: int) -> None:
        self.batch += 1
        self.con.execute("BEGIN")
        self.con.executemany("INSERT INTO items (batch, name, payload) VALUES (?, ?, ?)",
                             [self._row() for _ in range(rows)])
        self.con.execute("COMMIT")

    def churn(self, inserts: int, updates: int) -> None:
        """One transaction: new rows plus updates of rows spread over the whole file."""
        self.batch += 1
        top = self.con.execute("SELECT max(id) FROM items").fetchone()[0] or 1
        self.con.execute("BEGIN")
        self.con.executemany("INSERT INTO items (batch, name, payload) VALUES (?, ?, ?)",
                             [self._row() for _ in range(inserts)])
        self.con.executemany("UPDATE items SET batch = ?, payload = ? WHERE id = ?",
                             [(self.batch, self._row()[2], self.rng.randint(1, top)) for _ in range(updates)])
        self.con.execute("COMMIT")

    def fill_to(self, size_bytes: int) -> None:
        self.con.execute("PRAGMA synchronous=OFF")
        rows = max(50, min(FILL_ROWS_PER_TXN, size_bytes // ROW_BYTES_ON_DISK // 20))
        while self.size() < size_bytes:
            self.insert(rows)
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size(self) -> int:
        pages = self.con.execute("PRAGMA page_count").fetchone()[0]
        return pages * self.con.execute("PRAGMA page_size").fetchone()[0]

    def summary(self) -> tuple[int, int, int]:
        return self.con.execute("SELECT count(*), coalesce(sum(batch), 0), coalesce(max(id), 0) FROM items").fetchone()

    def close(self) -> None:
        self.con.close()


def summary_of(path: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*), coalesce(sum(batch), 0), coalesce(max(id), 0) FROM items").fetchone()
    finally:
        con.close()


# --------------------------------------------------------------------------- building


def listing(bucket_dir: Path) -> dict[str, int]:
    """Key -> size of the objects in a bucket directory (rclone's in-flight temp files excluded)."""
    out = {}
    for dirpath, _, files in os.walk(bucket_dir):
        for name in files:
            if name.startswith(".rclone"):  # an upload in progress (renamed into place when done)
                continue
            p = Path(dirpath, name)
            try:
                out[p.relative_to(bucket_dir).as_posix()] = p.stat().st_size
            except FileNotFoundError:
                continue
    return out


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"litestream exited {proc.returncode} while waiting for {what}; log:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}; log:\n{log.read_text(errors='replace')[-3000:]}")


def wait_settled(bucket_dir: Path, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Until the bucket's listing has not changed for SETTLE_SECONDS."""
    state = {"last": None, "since": time.monotonic()}

    def settled() -> bool:
        now = listing(bucket_dir)
        if now != state["last"]:
            state["last"], state["since"] = now, time.monotonic()
        return time.monotonic() - state["since"] >= SETTLE_SECONDS

    wait_until(settled, timeout, "litestream to finish uploading", proc, log)


def has_snapshot(bucket_dir: Path, version: str) -> bool:
    pattern = f"{REPLICA_PATH}/generations/*/snapshots/*.snapshot.lz4" if version == V3 else f"{REPLICA_PATH}/0009/*.ltx"
    return any(bucket_dir.glob(pattern))


def build(cache: Cache, spec: Spec, server: harness.S3Server) -> Built:
    """Build ``spec``'s replica from scratch (removing any partial one) and record it."""
    started = time.monotonic()
    bucket_dir = cache.s3_root / spec.bucket
    if bucket_dir.exists():
        shutil.rmtree(bucket_dir)
    bucket_dir.mkdir(parents=True)
    db_path = cache.db_path(spec.bucket)
    if db_path.parent.exists():
        shutil.rmtree(db_path.parent)
    db_path.parent.mkdir(parents=True)
    fast = spec.kind != "big"
    interval = "10ms" if fast else "100ms"
    replica = replica_config(spec.version, server.endpoint, spec.bucket, **{"sync-interval": interval})
    entry = db_entry(spec.version, db_path, replica, **{"monitor-interval": interval})
    config = write_config(cache.work / "configs" / f"build-{spec.bucket}.yml", [entry])
    log = cache.logs / f"build-{spec.bucket}.log"
    log.unlink(missing_ok=True)

    writer = Writer(db_path, seed=zlib.crc32(spec.bucket.encode()))
    writer.fill_to(int(spec.size_mb * 1e6))
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(harness.litestream_bin(spec.version)), "replicate", "-config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=harness.litestream_env())
    try:
        wait_until(lambda: has_snapshot(bucket_dir, spec.version), 600, "the snapshot", proc, log)
        _write_after_snapshot(spec, writer, bucket_dir, proc, log)
        wait_settled(bucket_dir, proc, log)
        expected = writer.summary()
        writer.close()
        _wait_caught_up(cache, spec, server, db_path, expected, proc, log)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=STOP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    sha, db_bytes = _check_with_litestream(cache, spec, server, db_path, expected)
    objects = listing(bucket_dir)
    built = Built(
        spec=spec, bucket=spec.bucket, db_bytes=db_bytes, rows=expected[0], objects=len(objects),
        object_bytes=sum(objects.values()), wal_objects=sum(1 for k in objects if _is_wal_object(k)),
        reference_sha256=sha, build_seconds=round(time.monotonic() - started, 1),
    )
    shutil.rmtree(db_path.parent)  # the source (and litestream's shadow WAL) is no longer needed
    cache.save(built)
    return built


def _is_wal_object(key: str) -> bool:
    return key.endswith(".wal.lz4") or (key.endswith(".ltx") and "/0009/" not in key)


def _write_after_snapshot(spec: Spec, writer: Writer, bucket_dir: Path, proc, log: Path) -> None:
    if spec.kind == "segments":
        deadline = time.monotonic() + 60 + spec.segments * 0.05
        count = 0
        while count < spec.segments and time.monotonic() < deadline:
            for _ in range(20):
                writer.insert(1)
                time.sleep(0.012)  # just over one sync interval: about one segment per transaction
            count = sum(1 for k in listing(bucket_dir) if k.endswith(".wal.lz4"))
        if count < spec.segments:
            raise RuntimeError(f"only {count} of {spec.segments} WAL segments after the time limit; log {log}")
        return
    if spec.kind == "small":
        for _ in range(5):
            writer.churn(inserts=20, updates=10)
            time.sleep(0.05)
        return
    # big: ~15 % of the size again, in transactions of ~100 new rows and ~50 scattered updates
    txns = max(10, int(spec.size_mb // 4))
    for _ in range(txns):
        writer.churn(inserts=100, updates=50)
        time.sleep(0.12)  # a little over one sync interval, so most transactions are their own upload
        if proc.poll() is not None:
            raise RuntimeError(f"litestream exited {proc.returncode}; log:\n{log.read_text(errors='replace')[-3000:]}")


def _wait_caught_up(cache: Cache, spec: Spec, server, db_path: Path, expected, proc, log: Path,
                    timeout: float = 180) -> None:
    """Until ``litestream restore`` gives the source's rows (a loaded machine can make
    litestream lag behind a quiet listing), while litestream still runs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _check_with_litestream(cache, spec, server, db_path, expected)
            return
        except RuntimeError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(1.0)


def _check_with_litestream(cache: Cache, spec: Spec, server, db_path: Path, expected) -> tuple[str, int]:
    """Restore once with litestream; the rows must be the source's. Returns (sha256, bytes)."""
    replica = replica_config(spec.version, server.endpoint, spec.bucket)
    config = write_config(cache.work / "configs" / f"check-{spec.bucket}.yml", [db_entry(spec.version, db_path, replica)])
    out = cache.work / f"check-{spec.bucket}.db"
    out.unlink(missing_ok=True)
    proc = subprocess.run([str(harness.litestream_bin(spec.version)), "restore", "-config", str(config), "-o", str(out),
                           str(db_path)], env=harness.litestream_env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"litestream restore of the new replica {spec.bucket} failed:\n{proc.stderr[-3000:]}")
    try:
        got = summary_of(out)
        if tuple(got) != tuple(expected):
            raise RuntimeError(f"replica {spec.bucket} restores to rows {got}, the source has {expected}")
        return sha256_file(out), out.stat().st_size
    finally:
        out.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def prune_old_revisions(cache: Cache) -> None:
    """Remove replicas built by an older BUILD_REVISION (they are never used again)."""
    for bucket_dir in cache.s3_root.iterdir():
        m = re.search(r"-r(\d+)(-[0-9a-f]{8})?$", bucket_dir.name)
        if m and int(m.group(1)) != BUILD_REVISION:
            shutil.rmtree(bucket_dir)
            for suffix in (".json", ".done"):
                (cache.meta_dir / f"{bucket_dir.name}{suffix}").unlink(missing_ok=True)


def ensure(cache: Cache, specs: list[Spec], say=print) -> dict[Spec, Built]:
    """Every spec's replica, building (with its own rclone server) those not cached."""
    prune_old_revisions(cache)
    found = {spec: cache.load(spec) for spec in specs}
    missing = [spec for spec, built in found.items() if built is None]
    if missing:
        for spec in missing:
            (cache.s3_root / spec.bucket).mkdir(parents=True, exist_ok=True)
        with harness.S3Server(cache.s3_root, cache.logs / "rclone-build.log") as server:
            for spec in missing:
                say(f"building {spec.bucket} with litestream {spec.version} ...")
                found[spec] = build(cache, spec, server)
                say(f"  built in {found[spec].build_seconds:.1f}s: {found[spec].objects} objects, "
                    f"{found[spec].object_bytes / 1e6:.1f} MB stored, database {found[spec].db_bytes / 1e6:.1f} MB")
    return found


def clone_many(cache: Cache, sources: list[Built], count: int) -> str:
    """A bucket holding ``count`` copies of the given replicas (round robin), prefixes ``db00``...

    Copies keep mtimes (LastModified). Returns the bucket name; rebuilt when any source is newer.
    """
    names = "+".join(b.bucket for b in sources)
    bucket = f"many-{count}-r{BUILD_REVISION}-{hashlib.sha256(names.encode()).hexdigest()[:8]}"
    bucket_dir = cache.s3_root / bucket
    marker = cache.meta_dir / f"{bucket}.done"
    if marker.exists() and bucket_dir.is_dir():
        return bucket
    if bucket_dir.exists():
        shutil.rmtree(bucket_dir)
    for i in range(count):
        src = sources[i % len(sources)]
        shutil.copytree(cache.s3_root / src.bucket / REPLICA_PATH, bucket_dir / f"db{i:02d}")
    marker.write_text(names)
    return bucket


def many_config(cache: Cache, endpoint: str, bucket: str, sources: list[Built], count: int, name: str) -> Path:
    """A litestream.yml naming the first ``count`` databases of a :func:`clone_many` bucket."""
    dbs = []
    for i in range(count):
        source = sources[i % len(sources)]
        replica = replica_config(source.spec.version, endpoint, bucket, path=f"db{i:02d}")
        dbs.append(db_entry(source.spec.version, cache.work / "src" / bucket / f"db{i:02d}.db", replica))
    return write_config(cache.work / "configs" / name, dbs)
