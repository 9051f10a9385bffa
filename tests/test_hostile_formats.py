"""Hostile Litestream objects (issue 20): replicas written by the real binaries, then damaged by hand.

What must hold whatever a replica's objects claim:

* a malformed backup is never "ok": a WAL commit that sizes the database past what its
  frames can justify is ``corrupt_object`` (SQLite's checkpoint refuses it too), and so is
  an LTX file whose commit or page numbers are beyond the restore size ceiling, or whose
  header time is no time at all;
* memory and disk are not the attacker's to set: a WAL segment is streamed, not read
  whole; a v0.5 commit claim grows nothing; a snapshot header that declares more than the
  ceiling or the free space is refused before anything is written;
* temporary files are created exclusively, never through a planted symlink;
* a file replica of any depth is listed (no recursion).
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import lz4.frame
import pytest

from lib.litestream.v3 import wal
from lib.litestream.v5.layout import format_ltx_name, parse_ltx_name
from lib.storage.local import LocalStore
from tests.support import REPO_ROOT, restorable_env, run_job
from tests.support.replicas import read_object, write_object
from tests.test_hostile_input import (
    MEMORY_LIMIT,
    _assert_bounded,
    _listing,
    _snapshot_key,
    decompression_bomb,
    error_kinds,
    only_finding,
    report_of,
    verify,
)
from tests.test_ltx import encode_ltx, page_bytes

FILE_SIZE_LIMIT = 256 << 20  # RLIMIT_FSIZE for jobs fed headers that claim more: any bigger write kills them
SPARSE_SEGMENT_BYTES = 4 << 30


def run_limited(module: str, *args, file_size_limit: int, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m module ARGS`` under RLIMIT_FSIZE: writing past the limit kills it (SIGXFSZ)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, env=restorable_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --------------------------------------------------------------------------- v0.3 WAL


def _last_segment(replica) -> str:
    """The key of the newest WAL segment of the newest generation (its index's last)."""
    gen = replica.generations[-1]
    return max(k for k in _listing(replica) if k.startswith(f"generations/{gen}/wal/"))


def _index_header(replica, key: str) -> wal.WalHeader:
    """The WAL header of ``key``'s index (in its offset-0 segment)."""
    first = key.rsplit("/", 1)[0] + "/" + key.rsplit("/", 1)[1][:9] + "00000000.wal.lz4"
    return wal.parse_wal_header(lz4.frame.decompress(read_object(replica, first))[: wal.WAL_HEADER_SIZE])


def append_commit_frame(replica, key: str, pgno: int, commit: int) -> None:
    """Append to segment ``key`` one commit frame for page ``pgno`` with database size ``commit``,
    carrying the index's salts and a valid checksum: only its sizes are wrong."""
    header = _index_header(replica, key)
    raw = lz4.frame.decompress(read_object(replica, key))
    frame_size = wal.FRAME_HEADER_SIZE + header.page_size
    assert (len(raw) - (wal.WAL_HEADER_SIZE if key.endswith("_00000000.wal.lz4") else 0)) % frame_size == 0
    seed = struct.unpack(">II", raw[-frame_size + 16 : -frame_size + 24])  # the last frame's stored checksum
    page = bytes(header.page_size)
    head = struct.pack(">II", pgno, commit)
    checksum = wal.checksum_bytes(head + page, *seed, header.big_endian_checksums)
    frame = head + struct.pack(">II", *header.salts) + struct.pack(">II", *checksum) + page
    write_object(replica, key, lz4.frame.compress(raw + frame))


def test_wal_commit_sizing_the_database_past_its_frames_is_corrupt_object(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    key = _last_segment(replica)
    append_commit_frame(replica, key, 1 << 20, 1 << 20)  # a 4 GiB database from one frame

    result = verify(replica.url(), "--json")

    assert error_kinds(result, 1) == [("corrupt_object", key)]
    (db,) = report_of(result, 1)["databases"]
    assert "malformed" in db["findings"][0]["message"]
    assert db["restored"]["sha256"] == v3_file_replica.reference_sha256  # up to the last sound commit


@pytest.mark.parametrize("fixture, pages", [
    pytest.param("v3_file_replica", 1 << 24, id="64 GiB of 4 KiB pages"),
    pytest.param("v3_file_replica_512", (1 << 31) - 1, id="1 TiB of 512-byte pages, under the ceiling"),
])
def test_restore_job_refuses_a_wal_commit_sizing_the_database_past_its_frames(request, clone, tmp_path, fixture,
                                                                             pages):
    replica = clone(request.getfixturevalue(fixture))
    key = _last_segment(replica)
    append_commit_frame(replica, key, pages, pages)  # the whole size from one frame
    out = tmp_path / "restored.db"

    result = run_job("jobs.restore", replica.url(), "-o", out)

    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "corrupt_object" in result.stderr and key in result.stderr
    assert os.listdir(tmp_path) == []  # nothing at OUT, no temporary file left


def test_wal_segment_is_streamed_not_read_whole(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    key = _last_segment(replica)
    path = replica.replica_dir / key
    with open(path, "r+b") as f:  # the genuine frame, then a 4 GiB hole: a sparse file costs no disk
        f.seek(0, os.SEEK_END)
        f.truncate(SPARSE_SEGMENT_BYTES)

    result = verify(replica.url(), "--json", memory_limit=MEMORY_LIMIT)

    _assert_bounded(result)
    assert ("corrupt_object", key) in error_kinds(result, 1)


# --------------------------------------------------------------------------- v0.3 snapshot


def claim_pages(replica, pages: int, bomb_bytes: int) -> str:
    """Make the snapshot's header declare ``pages`` pages (trusted: version-valid-for equals the
    change counter), and its object inflate to ``bomb_bytes`` of zeros after the genuine pages."""
    key = _snapshot_key(replica)
    raw = bytearray(lz4.frame.decompress(read_object(replica, key)))
    struct.pack_into(">I", raw, 28, pages)
    raw[92:96] = raw[24:28]
    write_object(replica, key, decompression_bomb(bytes(raw), bomb_bytes))
    return key


def test_snapshot_header_beyond_the_ceiling_is_refused_before_writing(v3_file_replica, clone, scratch):
    replica = clone(v3_file_replica)
    key = claim_pages(replica, 0xFFFFFFFF, 1 << 30)

    result = run_limited("jobs.verify", replica.url(), "--json", file_size_limit=FILE_SIZE_LIMIT)

    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])  # not killed by SIGXFSZ
    (db,) = report_of(result, 1)["databases"]
    [finding] = [f for f in db["findings"] if f.get("object") == key]
    assert finding["kind"] == "corrupt_object" and "beyond the restore size ceiling" in finding["message"]


def test_snapshot_header_beyond_the_free_space_is_inconclusive_before_writing(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    declared = (1 << 28) - 1  # just under the 1 TiB ceiling with 4 KiB pages
    fs = os.statvfs(replica.replica_dir)
    if fs.f_bavail * fs.f_frsize >= declared * 4096:
        pytest.skip("the scratch volume has room for a 1 TiB database")
    claim_pages(replica, declared, 1 << 30)

    result = run_limited("jobs.verify", replica.url(), "--json", file_size_limit=FILE_SIZE_LIMIT)

    finding = only_finding(result, 2)
    assert finding["inconclusive"] is True and "scratch disk is full" in finding["message"]
    assert "too large" not in finding["message"]  # refused, not stopped by RLIMIT_FSIZE (EFBIG) mid-write


# --------------------------------------------------------------------------- v0.5 LTX


def _ltx_files(replica) -> list[str]:
    return [k for k in _listing(replica) if k.startswith("ltx/") and k.endswith(".ltx")]


def _header_field(replica, key: str, offset: int) -> int:
    return struct.unpack_from(">I", read_object(replica, key), offset)[0]


def _last_ltx(replica) -> str:
    """The key of the LTX file that ends at the replica's highest TXID."""
    return max(_ltx_files(replica), key=lambda k: parse_ltx_name(k.rsplit("/", 1)[1])[1])


def add_l0_file(replica, pages: dict[int, bytes], commit: int, **header) -> str:
    """A new level-0 LTX file continuing the replica's last TXID, its mtime now."""
    last = _last_ltx(replica)
    txid = parse_ltx_name(last.rsplit("/", 1)[1])[1] + 1
    header.setdefault("timestamp", int(time.time() * 1000))
    header.setdefault("page_size", _header_field(replica, last, 8))
    key = f"ltx/0/{format_ltx_name(txid, txid)}"
    path = replica.replica_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_ltx(pages, commit=commit, min_txid=txid, max_txid=txid, **header))
    return key


def test_ltx_commit_of_four_billion_pages_is_corrupt_object_in_bounded_memory(v5_file_replica, clone):
    replica = clone(v5_file_replica)
    key = add_l0_file(replica, {2: page_bytes(2)}, 0xFFFFFFFF)
    assert (replica.replica_dir / key).stat().st_size < 400  # a few hundred bytes claim 16 TiB

    result = verify(replica.url(), "--json", memory_limit=MEMORY_LIMIT)

    _assert_bounded(result)
    assert error_kinds(result, 1) == [("corrupt_object", key)]


@pytest.mark.parametrize("timestamp", [-(1 << 63), (1 << 63) - 1], ids=["-2^63", "2^63-1"])
def test_ltx_header_time_out_of_any_calendar_is_corrupt_object(v5_file_replica, clone, timestamp):
    replica = clone(v5_file_replica)
    key = add_l0_file(replica, {2: page_bytes(2)}, _header_field(replica, _last_ltx(replica), 12),
                      timestamp=timestamp)

    result = verify(replica.url(), "--json", "--timestamp", "2100-01-01T00:00:00Z")

    assert error_kinds(result, 1) == [("corrupt_object", key)]


def test_pages_beyond_the_ceiling_are_a_corrupt_object_not_a_scratch_error(tmp_path):
    root = tmp_path / "replica"
    big = 65536
    snapshot = root / "ltx" / "9" / format_ltx_name(1, 1)
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(encode_ltx({1: page_bytes(1, big)}, commit=1, page_size=big))
    far = 1 << 31  # byte offset 2^47: a write there fails with EFBIG
    # a run long enough to be written as soon as the next page does not continue it
    run = {pgno: page_bytes(pgno, big) for pgno in [*range(far - 128, far - 64), far]}
    key = f"ltx/0/{format_ltx_name(2, 2)}"
    (root / "ltx" / "0").mkdir()
    (root / key).write_bytes(encode_ltx(run, commit=far, page_size=big, min_txid=2, max_txid=2))

    # ext4's largest file (16 TiB), whatever file system the test runs on: writing past it fails with EFBIG
    result = run_limited("jobs.verify", f"file://{root}", "--json", "--max-age", "3650d", file_size_limit=16 << 40)

    assert error_kinds(result, 1) == [("corrupt_object", key)]


# --------------------------------------------------------------------------- links and depth


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v5_file_replica"])
def test_restore_job_never_writes_through_a_planted_temporary_link(request, tmp_path, fixture):
    replica = request.getfixturevalue(fixture)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    (out_dir / ".restored.db.restorable-tmp").symlink_to(victim)
    out = out_dir / "restored.db"

    result = run_job("jobs.restore", replica.url(), "-o", out)

    assert result.returncode == 0, result.stderr[-2000:]
    assert victim.read_bytes() == b"not yours"
    assert not out.is_symlink() and sha256_of(out) == replica.reference_sha256


def test_local_store_put_never_writes_through_a_planted_temporary_link(tmp_path):
    root = tmp_path / "replica.restorable"
    (root / "history").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    (root / "history" / "latest.json.restorable-tmp").symlink_to(victim)

    LocalStore(root).put("history/latest.json", b"{}")

    assert victim.read_bytes() == b"not yours"
    assert (root / "history" / "latest.json").read_bytes() == b"{}"
    assert not (root / "history" / "latest.json").is_symlink()


@pytest.fixture
def nested(tmp_path):
    """``nested(top, depth)``: ``depth`` folders, each inside the last, below ``top``, with a file at the
    bottom; removed bottom-up afterwards (``Path.mkdir(parents=True)``, ``shutil.rmtree`` and pytest's
    own clean-up of old temporary folders all recurse, and fail past ~1,000 levels)."""
    made: list[Path] = []

    def make(top: Path, depth: int) -> None:
        path = top
        for _ in range(depth):
            path /= "d"
            path.mkdir(parents=not made)
            made.append(path)
        (path / "note").write_bytes(b"x")

    yield make
    if made:
        (made[-1] / "note").unlink(missing_ok=True)
    for path in reversed(made):
        path.rmdir()


def test_deeply_nested_folders_in_a_file_replica_are_listed(v3_file_replica, clone, nested):
    replica = clone(v3_file_replica)
    nested(replica.replica_dir / "generations" / replica.generations[-1] / "junk", 1200)

    result = verify(replica.url(), "--json", timeout=120)

    (db,) = report_of(result, 0)["databases"]
    assert db["restored"]["sha256"] == v3_file_replica.reference_sha256


def test_listing_a_file_replica_enters_only_the_folders_the_prefix_can_be_in(tmp_path):
    """A ``file://`` URL naming a big tree (the file system's root, say) must not walk all of it: the
    real ``os.scandir`` calls are observed through an audit hook, in a child process."""
    root = tmp_path / "replica"
    (root / "generations" / "0123456789abcdef" / "wal").mkdir(parents=True)
    (root / "elsewhere" / "a" / "b").mkdir(parents=True)
    probe = ("import json, sys\n"
             "from lib.storage.local import LocalStore\n"
             "seen = []\n"
             "sys.addaudithook(lambda event, args: seen.append(str(args[0])) if event == 'os.scandir' else None)\n"
             f"LocalStore({str(root)!r}).list('generations/')\n"
             "print(json.dumps(seen))\n")

    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env=restorable_env(), capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    entered = [Path(p).relative_to(root).as_posix() for p in json.loads(result.stdout)]
    assert entered and all(p == "." or p.startswith("generations") for p in entered), entered
