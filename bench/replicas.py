"""Build the benchmark's replicas with the real litestream binaries, and cache them.

A replica is a bucket directory below ``<cache>/s3/`` (what ``rclone serve s3`` serves),
written through rclone's S3 API by ``litestream replicate``; ``<cache>/meta/<bucket>.json``
is written last and marks it complete. A bucket without its meta file is rebuilt.

Kinds:

* ``big``: a database of ``size_mb`` written first, then replicated (Litestream snapshots
  it), then about 15 % of its size more in transactions that insert and update rows all
  over the file, a few per sync, so the replica holds real WAL: several v0.3 WAL indexes
  through Litestream's checkpoints, or a chain of v0.5 L0 files after the L9 snapshot.
* ``walheavy``: a database of a fifth of ``size_mb``, snapshotted, then grown to ``size_mb``
  by transactions of ~1 MB (inserts plus scattered updates), one per sync: most restored
  bytes come from WAL, over dozens of v0.3 WAL indexes (a checkpoint every ~4 MB), or from
  v0.5 L0 files and the L1+ files Litestream compacts them into.
* ``segments``: a 1 MB database and then ``segments`` one-row transactions, one per sync,
  so the replica holds that many tiny WAL segments (v0.3) or LTX transactions (v0.5). A day
  of a 1 s sync interval, time-compressed: the sync interval is 10 ms. A restore does not
  read the segments' times (only their index/offset or TXID order), so the replica has the
  shape of a day of 1 s syncs, written by the real binary in minutes.
* ``small``: a 1 MB database with a few transactions after the snapshot; copied 50 times
  into one bucket for the many-databases case.

Each build ends with ``litestream restore`` of the replica, whose row counts must match
the source; its sha256 is recorded as the reference restorable's output is compared with.
"""
from __future__ import annotations

import hashlib
import json
import os
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
from bench.writer import Writer, summary_of

V3 = "0.3.13"
V5 = "0.5.17"
BUILD_REVISION = 3  # bump when the way replicas are built changes: cached ones are rebuilt
REPLICA_PATH = "db"  # the replica's key prefix inside its bucket

STOP_TIMEOUT = 120.0
WALHEAVY_START = 0.2  # the walheavy database's size at its snapshot, a fraction of size_mb
WALHEAVY_ROWS_PER_TXN = 2000  # ~1 MB of new rows a transaction
SETTLE_SECONDS = 2.0  # a listing unchanged this long (20 sync intervals) means litestream caught up


@dataclass(frozen=True)
class Spec:
    """What to build. ``size_mb`` is the database size before the post-snapshot writes."""

    kind: str  # "big" | "walheavy" | "segments" | "small"
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
    wal_bytes: int = 0  # stored bytes of those objects
    transactions: int = 0  # segments after the snapshot (v0.3 WAL objects, v0.5 TXIDs)


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
        if "wal_bytes" not in data:  # recorded before these facts were: count them now
            objects = listing(self.s3_root / spec.bucket)
            data["wal_bytes"] = sum(n for k, n in objects.items() if _is_wal_object(k))
            data["transactions"] = segments_after_snapshot(objects, spec.version)
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
    fast = spec.kind in ("segments", "small")
    interval = "10ms" if fast else "100ms"
    replica = replica_config(spec.version, server.endpoint, spec.bucket, **{"sync-interval": interval})
    entry = db_entry(spec.version, db_path, replica, **{"monitor-interval": interval})
    config = write_config(cache.work / "configs" / f"build-{spec.bucket}.yml", [entry])
    log = cache.logs / f"build-{spec.bucket}.log"
    log.unlink(missing_ok=True)

    writer = Writer(db_path, seed=zlib.crc32(spec.bucket.encode()))
    writer.fill_to(int(spec.size_mb * 1e6 * (WALHEAVY_START if spec.kind == "walheavy" else 1)))
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
        wal_bytes=sum(n for k, n in objects.items() if _is_wal_object(k)),
        transactions=segments_after_snapshot(objects, spec.version),
    )
    shutil.rmtree(db_path.parent)  # the source (and litestream's shadow WAL) is no longer needed
    cache.save(built)
    return built


def _is_wal_object(key: str) -> bool:
    return key.endswith(".wal.lz4") or (key.endswith(".ltx") and "/0009/" not in key)


def segments_after_snapshot(objects, version: str) -> int:
    """v0.3: the WAL segments stored; v0.5: the TXIDs after the newest snapshot's (compaction
    merges L0 files, so the files stored undercount what was synced)."""
    if version == V3:
        return sum(1 for k in objects if k.endswith(".wal.lz4"))
    txids = [(k, int(m.group(1), 16)) for k in objects if (m := re.search(r"-([0-9a-f]{16})\.ltx$", k))]
    snapshot = max((t for k, t in txids if "/0009/" in k), default=0)
    return max((t for _, t in txids), default=0) - snapshot


def _write_after_snapshot(spec: Spec, writer: Writer, bucket_dir: Path, proc, log: Path) -> None:
    if spec.kind == "segments":
        deadline = time.monotonic() + 60 + spec.segments * 0.05
        count = 0
        while count < spec.segments and time.monotonic() < deadline:
            for _ in range(20):
                writer.insert(1)
                time.sleep(0.012)  # just over one sync interval: about one segment per transaction
            count = segments_after_snapshot(listing(bucket_dir), spec.version)
        if count < spec.segments:
            raise RuntimeError(f"only {count} of {spec.segments} WAL segments after the time limit; log {log}")
        return
    if spec.kind == "small":
        for _ in range(5):
            writer.churn(inserts=20, updates=10)
            time.sleep(0.05)
        return
    if spec.kind == "walheavy":
        # Litestream's advice for heavy writes: only litestream checkpoints. With SQLite's
        # auto-checkpoint on, 1 MB transactions made 0.3.13 upload a WAL index that skips
        # frames (its own restore then gives a malformed database).
        writer.con.execute("PRAGMA wal_autocheckpoint=0")
        while writer.size() < spec.size_mb * 1e6:
            writer.churn(inserts=WALHEAVY_ROWS_PER_TXN, updates=WALHEAVY_ROWS_PER_TXN // 10)
            time.sleep(0.12)  # a little over one sync interval
            if proc.poll() is not None:
                raise RuntimeError(f"litestream exited {proc.returncode}; log:\n{log.read_text(errors='replace')[-3000:]}")
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
        try:
            got = summary_of(out)
        except sqlite3.DatabaseError as exc:
            raise RuntimeError(f"litestream restores replica {spec.bucket} to a database SQLite refuses: {exc}") from exc
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
