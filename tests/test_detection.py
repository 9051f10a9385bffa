"""Damaged v0.3 replicas are reported with the right finding kind, the culprit and exit 1.

Every case damages a clone of a replica the real litestream v0.3.13 wrote. Positions are
chosen from the replica's own layout (first, a middle and the last segment; first, a
middle and the last frame), so the same damage lands differently on each page size.
One case per class also runs ``python -m jobs.verify --json`` and checks the exit code.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import lz4.frame
import pytest

from lib.config.sources import load
from lib.litestream.discover import discover
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v3.layout import parse_v3_listing
from lib.report.model import error as error_finding
from lib.litestream.v3.replay import MID_TRANSACTION
from lib.litestream.v3.race import findings_stand
from lib.litestream.v3.restore import restore_v3
from lib.config.settings_model import Settings
from lib.storage.base import ObjectInfo
from lib.scratch import Scratch
from lib.verify import VerifyOptions, verify_replica
from lib.litestream.v3.wal import checksum_bytes
from tests.support import run_job
from tests.support.replicas import (clone_replica, database_row_counts, delete_object, integrity_check,
                                    litestream_restore, read_object, replica_listing, sha256_file, write_object)

WEEK = 7 * 86400.0
SNAPSHOT_RE = re.compile(r"^generations/([0-9a-f]{16})/snapshots/([0-9a-f]{8})\.snapshot\.lz4$")
SEGMENT_RE = re.compile(r"^generations/([0-9a-f]{16})/wal/([0-9a-f]{8})_([0-9a-f]{8})\.wal\.lz4$")


# --------------------------------------------------------------------------- layout and damage


@dataclass
class Layout:
    """The newest generation of a replica: its snapshot key and WAL segments by index."""

    generation: str
    snapshot: str
    segments: dict[int, list[tuple[int, str]]]  # index -> [(offset, key)], offset order

    @property
    def indexes(self) -> list[int]:
        return sorted(self.segments)

    def segment(self, where: str) -> tuple[int, int, str]:
        """(index, offset, key) of the ``first``, a ``middle`` or the ``last`` segment."""
        flat = [(i, o, k) for i in self.indexes for o, k in self.segments[i]]
        return {"first": flat[0], "middle": flat[len(flat) // 2], "last": flat[-1]}[where]

    def index_with(self, count: int) -> int:
        """The first index holding at least ``count`` segments."""
        return next(i for i in self.indexes if len(self.segments[i]) >= count)


def layout(replica, generation: str | None = None) -> Layout:
    generation = generation or replica.generations[-1]
    snapshots, segments = [], {}
    for key in replica_listing(replica):
        if (m := SNAPSHOT_RE.match(key)) and m.group(1) == generation:
            snapshots.append((int(m.group(2), 16), key))
        elif (m := SEGMENT_RE.match(key)) and m.group(1) == generation:
            segments.setdefault(int(m.group(2), 16), []).append((int(m.group(3), 16), key))
    for segs in segments.values():
        segs.sort()
    return Layout(generation, max(snapshots)[1] if snapshots else "", segments)


def middle_segment(replica, lay: Layout) -> tuple[int, int, str]:
    """(index, offset, key) of a segment with segments before and after it in its index.

    When no index has three segments, one multi-commit segment is split at commit frames
    into three, a shape Litestream itself writes when syncs fall between transactions.
    """
    for index in lay.indexes:
        if len(lay.segments[index]) >= 3:
            offset, key = lay.segments[index][1]
            return index, offset, key
    for index in lay.indexes:
        for offset, key in lay.segments[index]:
            pieces = _split_at_commits(decoded(replica, key), offset, replica.page_size)
            if pieces:
                base = key.rsplit("_", 1)[0]
                for piece_offset, data in pieces:
                    write_object(replica, f"{base}_{piece_offset:08x}.wal.lz4", lz4_frame(data))
                lay.segments[index] = sorted(set(lay.segments[index]) | {
                    (o, f"{base}_{o:08x}.wal.lz4") for o, _ in pieces})
                middle = pieces[1][0]
                return index, middle, f"{base}_{middle:08x}.wal.lz4"
    raise AssertionError("no segment holds three transactions")


def _split_at_commits(wal: bytes, offset: int, page_size: int) -> list[tuple[int, bytes]] | None:
    """Three (offset, bytes) pieces ending on commit frames, or None."""
    size = 24 + page_size
    ends = [s + size for s in frame_starts(wal, offset, page_size) if wal[s + 4 : s + 8] != bytes(4)]
    if len(ends) < 3:
        return None
    cuts = [0, ends[0], ends[len(ends) // 2] if ends[len(ends) // 2] != ends[0] else ends[1], len(wal)]
    return [(offset + a, wal[a:b]) for a, b in zip(cuts, cuts[1:])]


def lz4_frame(data: bytes) -> bytes:
    """An LZ4 frame like Litestream's: content checksum on."""
    return lz4.frame.compress(data, content_checksum=True)


def decoded(replica, key: str) -> bytearray:
    return bytearray(lz4.frame.decompress(read_object(replica, key)))


def frame_starts(data: bytes, offset: int, page_size: int) -> list[int]:
    """Where each whole frame starts inside a decompressed segment at ``offset``."""
    first = 32 if offset == 0 else 0
    size = 24 + page_size
    return list(range(first, len(data) - size + 1, size))


def pick(items: list, where: str):
    return {"first": items[0], "middle": items[len(items) // 2], "last": items[-1]}[where]


def flip_stored_byte(replica, key: str, where: str) -> None:
    """Flip one byte of the stored (compressed) object: frame header, a block or the checksum."""
    data = bytearray(read_object(replica, key))
    position = {"header": 5, "middle": len(data) // 2, "checksum": len(data) - 2}[where]
    data[position] ^= 0x20
    write_object(replica, key, bytes(data))


def alter_frame(replica, key: str, offset: int, where: str, field: str) -> None:
    """Alter one frame of a segment before compression, then store valid LZ4."""
    wal = decoded(replica, key)
    start = pick(frame_starts(wal, offset, replica.page_size), where)
    at = {"page": start + 24 + replica.page_size // 2, "pgno": start + 3, "commit": start + 7,
          "salt": start + 11, "checksum": start + 19}[field]
    wal[at] ^= 0x01
    write_object(replica, key, lz4_frame(bytes(wal)))


def alter_wal_header(replica, key: str, field: str, fix_checksum: bool) -> None:
    """Alter a WAL header field; with ``fix_checksum`` the header checksum is recomputed."""
    wal = decoded(replica, key)
    if field == "magic":
        wal[0:4] = struct.pack(">I", 0x377F0683)
    elif field == "version":
        wal[4:8] = struct.pack(">I", 3007001)
    elif field == "page_size":
        wal[8:12] = struct.pack(">I", replica.page_size * 2 if replica.page_size < 65536 else 512)
    elif field == "checkpoint_seq":
        wal[12] ^= 0x01
    else:  # salt
        wal[16] ^= 0x01
    if fix_checksum:
        big_endian = struct.unpack(">I", wal[0:4])[0] == 0x377F0683
        wal[24:32] = struct.pack(">II", *checksum_bytes(bytes(wal[:24]), 0, 0, big_endian))
    write_object(replica, key, lz4_frame(bytes(wal)))


def forge_frame(replica, lay: Layout, index: int, choose, mutate) -> int:
    """Change one frame's page and re-chain every later checksum of the index: structurally
    sound WAL carrying corrupt content. Returns the page number altered."""
    size = 24 + replica.page_size
    segs = lay.segments[index]
    wal = bytearray(b"".join(decoded(replica, key) for _, key in segs))
    heads = [struct.unpack(">II", wal[at : at + 8]) for at in range(32, len(wal) - size + 1, size)]
    chosen = choose(heads, wal, replica.page_size)
    at = 32 + chosen * size
    page = bytearray(wal[at + 24 : at + size])
    mutate(heads[chosen][0], page)
    wal[at + 24 : at + size] = page
    seed = struct.unpack(">II", wal[24:32] if chosen == 0 else wal[at - size + 16 : at - size + 24])
    for frame in range(chosen, len(heads)):
        a = 32 + frame * size
        seed = checksum_bytes(bytes(wal[a : a + 8]) + bytes(wal[a + 24 : a + size]), *seed, False)
        wal[a + 16 : a + 24] = struct.pack(">II", *seed)
    for n, (offset, key) in enumerate(segs):
        end = segs[n + 1][0] if n + 1 < len(segs) else len(wal)
        write_object(replica, key, lz4_frame(bytes(wal[offset:end])))
    return heads[chosen][0]


def last_table_leaf(heads, wal, page_size) -> int:
    """The last frame of the index that holds a table b-tree leaf page with cells."""
    size = 24 + page_size
    for n in range(len(heads) - 1, -1, -1):
        pgno = heads[n][0]
        page = 32 + n * size + 24 + (100 if pgno == 1 else 0)
        if wal[page] == 0x0D and int.from_bytes(wal[page + 3 : page + 5], "big") > 0:
            return n
    raise AssertionError("no table leaf page in this index")


def bad_cell_pointer(pgno: int, page: bytearray) -> None:
    header = 100 if pgno == 1 else 0
    page[header + 8 : header + 10] = b"\x00\x05"  # first cell "starts" inside the page header


# --------------------------------------------------------------------------- running the verifier


def verify(replica, tmp_path: Path, **options):
    """The library path of one verification (what jobs.verify does per replica)."""
    config = load(str(replica.config_path), {})
    db = config.dbs[0]
    options.setdefault("max_age_seconds", WEEK)
    scratch = Scratch(tmp_path)
    try:
        return verify_replica(db, db.replicas[0], Settings(source=None).for_db(db.path),
                              VerifyOptions(**options), scratch)
    finally:
        scratch.cleanup()


def verify_job(replica, *args: str, env=None) -> tuple[int, dict]:
    proc = run_job("jobs.verify", "--config", replica.config_path, "--json", "--max-age", "7d", *args, env=env)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def errors(result) -> list:
    return [f for f in result.findings if f.severity == "error"]


def assert_culprit(result, kind: str, key: str | None, *, only: bool = True) -> None:
    """Failed, with a ``kind`` error naming ``key``; with ``only``, every error names it."""
    found = errors(result)
    assert result.status == "failed", result.findings
    assert any(f.kind == kind and (key is None or f.object == _full(result, key)) for f in found), found
    if only:
        assert all(f.object == _full(result, key) for f in found), found


def _full(result, key: str | None) -> str | None:
    """Finding objects are store keys: replica-relative for file replicas, prefixed for S3."""
    if key is None:
        return None
    for f in result.findings:
        if f.object and f.object.endswith(key):
            return f.object
    return key


# --------------------------------------------------------------------------- 1. stored bytes (LZ4)


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_512", "v3_s3_replica"])
@pytest.mark.parametrize("segment,where", [("first", "middle"), ("middle", "header"), ("last", "checksum"),
                                           ("snapshot", "middle")])
def test_flipped_stored_byte_is_corrupt_object(fixture, segment, where, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    lay = layout(replica)
    key = lay.snapshot if segment == "snapshot" else lay.segment(segment)[2]
    flip_stored_byte(replica, key, where)
    result = verify(replica, tmp_path)
    assert_culprit(result, "corrupt_object", key)


def test_flipped_byte_fails_the_job_naming_the_object(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    key = layout(replica).segment("middle")[2]
    flip_stored_byte(replica, key, "middle")
    code, report = verify_job(replica)
    assert code == 1
    [db] = report["databases"]
    assert db["status"] == "failed"
    assert [(f["kind"], f["object"]) for f in db["findings"]] == [("corrupt_object", key)]
    assert "LZ4" in db["findings"][0]["message"]


# --------------------------------------------------------------------------- 2. frames (valid LZ4)


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_512", "v3_file_replica_65536",
                                     "v3_s3_replica", "v3_multigen_file_replica"])
@pytest.mark.parametrize("segment,frame", [("first", "first"), ("middle", "middle"), ("last", "last")])
def test_altered_page_in_a_frame_is_corrupt_object(fixture, segment, frame, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    index, offset, key = layout(replica).segment(segment)
    alter_frame(replica, key, offset, frame, "page")
    result = verify(replica, tmp_path)
    assert_culprit(result, "corrupt_object", key)
    assert "checksum" in errors(result)[0].message


@pytest.mark.parametrize("field", ["pgno", "commit", "salt", "checksum"])
def test_altered_frame_header_is_corrupt_object(field, v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    lay = layout(replica)
    index = lay.index_with(2)
    offset, key = lay.segments[index][1]
    alter_frame(replica, key, offset, "middle", field)
    result = verify(replica, tmp_path)
    assert_culprit(result, "corrupt_object", key)


def test_damage_in_the_newest_index_never_gives_a_silently_shorter_database(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    lay = layout(replica)
    index = max(i for i in lay.indexes if len(lay.segments[i]) >= 2)
    offset, key = lay.segments[index][-1]
    alter_frame(replica, key, offset, "first", "page")
    result = verify(replica, tmp_path)
    assert_culprit(result, "corrupt_object", key)
    assert "restore stops at the last sound commit" in errors(result)[0].message
    # the restored copy is shorter (what litestream would silently give), but it is reported
    rep = load(str(replica.config_path), {}).dbs[0].replicas[0]
    store = rep.open_store()
    outcome = restore_v3(store, discover(store, rep).v3, tmp_path / "r.db")
    assert outcome.sha256 != replica.reference_sha256
    assert sum(database_row_counts(outcome.path).values()) <= sum(replica.row_counts.values())
    assert integrity_check(outcome.path) == ["ok"]


def test_damage_in_an_older_index_restores_a_consistent_earlier_state(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    lay = layout(replica)
    index = lay.index_with(2)
    offset, key = lay.segments[index][1]
    alter_frame(replica, key, offset, "last", "page")
    config = load(str(replica.config_path), {})
    rep = config.dbs[0].replicas[0]
    store = rep.open_store()
    outcome = restore_v3(store, discover(store, rep).v3, tmp_path / "r.db")
    assert [f.kind for f in outcome.findings] == ["corrupt_object"]
    assert integrity_check(outcome.path) == ["ok"]
    assert outcome.position.startswith(f"{lay.generation}/{index:08x}:")


def test_altered_frame_fails_the_job(v3_s3_replica, clone):
    replica = clone(v3_s3_replica)
    index, offset, key = layout(replica).segment("middle")
    alter_frame(replica, key, offset, "middle", "page")
    code, report = verify_job(replica)
    [db] = report["databases"]
    assert code == 1 and db["status"] == "failed"
    assert [f["kind"] for f in db["findings"]] == ["corrupt_object"]
    assert db["findings"][0]["object"].endswith(key)


def test_every_damaged_segment_is_reported_not_just_the_first(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    lay = layout(replica)
    first, last = lay.segment("first")[1:], lay.segment("last")[1:]
    middle = lay.segment("middle")
    alter_frame(replica, first[1], first[0], "last", "page")
    flip_stored_byte(replica, middle[2], "middle")
    alter_frame(replica, last[1], last[0], "first", "page")
    result = verify(replica, tmp_path)
    assert result.status == "failed"
    assert {f.object for f in errors(result)} == {first[1], middle[2], last[1]}
    assert {f.kind for f in errors(result)} == {"corrupt_object"}


# --------------------------------------------------------------------------- 3. WAL headers


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_512", "v3_file_replica_65536"])
@pytest.mark.parametrize("field", ["magic", "version", "page_size", "checkpoint_seq", "salt"])
@pytest.mark.parametrize("fix_checksum", [False, True], ids=["raw", "checksum-recomputed"])
@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_altered_wal_header_is_corrupt_object(fixture, field, fix_checksum, which, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    lay = layout(replica)
    index = lay.indexes[0] if which == "oldest" else lay.indexes[-1]
    key = lay.segments[index][0][1]
    alter_wal_header(replica, key, field, fix_checksum)
    result = verify(replica, tmp_path)
    assert_culprit(result, "corrupt_object", key)


def test_altered_wal_header_fails_the_job(v3_file_replica_512, clone):
    replica = clone(v3_file_replica_512)
    lay = layout(replica)
    key = lay.segments[lay.index_with(2)][0][1]
    alter_wal_header(replica, key, "salt", fix_checksum=True)
    code, report = verify_job(replica)
    [db] = report["databases"]
    assert code == 1
    assert {(f["kind"], f["object"]) for f in db["findings"]} == {("corrupt_object", key)}


# --------------------------------------------------------------------------- 4. missing objects


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_512", "v3_s3_replica"])
def test_split_segments_are_healthy(fixture, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    middle_segment(replica, layout(replica))
    result = verify(replica, tmp_path)
    assert result.status == "ok", result.findings
    assert result.restored.sha256 == replica.reference_sha256


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_512", "v3_s3_replica"])
def test_deleted_middle_segment_is_a_gap_naming_the_offset(fixture, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    index, offset, key = middle_segment(replica, layout(replica))
    delete_object(replica, key)
    result = verify(replica, tmp_path)
    assert_culprit(result, "wal_gap", key)
    assert f"offset {offset}" in errors(result)[0].message
    assert f"{index:08x}" in errors(result)[0].message


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_65536", "v3_s3_replica"])
@pytest.mark.parametrize("which", ["oldest", "middle"])
def test_deleted_offset_zero_segment_is_a_gap(fixture, which, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    lay = layout(replica)
    candidates = [i for i in lay.indexes if len(lay.segments[i]) >= 2]
    index = candidates[0] if which == "oldest" else candidates[len(candidates) // 2]
    key = lay.segments[index][0][1]
    delete_object(replica, key)
    result = verify(replica, tmp_path)
    assert_culprit(result, "wal_gap", key)
    assert f"{index:08x}" in errors(result)[0].message and "offset 0" in errors(result)[0].message


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_512", "v3_multigen_file_replica"])
def test_deleted_whole_index_is_a_gap_naming_the_index(fixture, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    lay = layout(replica)
    index = lay.indexes[len(lay.indexes) // 2]
    assert lay.indexes[0] < index < lay.indexes[-1]
    for _, key in lay.segments[index]:
        delete_object(replica, key)
    result = verify(replica, tmp_path)
    assert_culprit(result, "wal_gap", lay.segments[index][0][1])
    assert f"WAL index {index:08x} is missing" in errors(result)[0].message


@pytest.mark.parametrize("damage", ["middle", "offset0", "index"])
def test_missing_objects_fail_the_job(damage, v3_file_replica, clone):
    replica = clone(v3_file_replica)
    lay = layout(replica)
    if damage == "index":
        index = lay.indexes[len(lay.indexes) // 2]
        doomed = [k for _, k in lay.segments[index]]
        named = doomed[0]
    elif damage == "middle":
        named = middle_segment(replica, lay)[2]
        doomed = [named]
    else:
        named = lay.segments[lay.index_with(2)][0][1]
        doomed = [named]
    for key in doomed:
        delete_object(replica, key)
    code, report = verify_job(replica)
    [db] = report["databases"]
    assert code == 1 and db["status"] == "failed"
    assert [(f["kind"], f["object"]) for f in db["findings"] if f["severity"] == "error"] == [("wal_gap", named)]


def test_missing_tail_of_the_snapshot_index_is_a_gap(v3_file_replica, clone, tmp_path):
    """The snapshot's own index must reach the snapshot's state (page-1 change counter)."""
    replica = clone(v3_file_replica)
    lay = layout(replica)
    index = lay.indexes[0]
    counters = [_page1_counters(replica, key, offset) for offset, key in lay.segments[index]]
    # the fixtures' first index ends with a batch that writes page 1 (docs/detection.md: not certain in general)
    assert counters[-1] and max(counters[-1]) > max(sum(counters[:-1], []), default=0), counters
    state_at_index_end = _state_after(replica, index, tmp_path)
    write_object(replica, lay.snapshot, lz4_frame(state_at_index_end.read_bytes()))
    offset, key = lay.segments[index][-1]
    delete_object(replica, key)
    result = verify(replica, tmp_path)
    assert_culprit(result, "wal_gap", key)
    assert "snapshot" in errors(result)[0].message


def _page1_counters(replica, key: str, offset: int) -> list[int]:
    """The change counters that the segment's page-1 frames carry."""
    wal = decoded(replica, key)
    return [int.from_bytes(wal[s + 24 + 24 : s + 24 + 28], "big")
            for s in frame_starts(wal, offset, replica.page_size) if wal[s : s + 4] == b"\x00\x00\x00\x01"]


def _state_after(replica, index: int, tmp_path: Path) -> Path:
    """The database as of the end of WAL ``index`` (restored from a copy without later indexes)."""
    copy = clone_replica(replica, tmp_path / "state-copy")
    lay = layout(copy)
    for later in lay.indexes:
        if later > index:
            for _, key in lay.segments[later]:
                delete_object(copy, key)
    rep = load(str(copy.config_path), {}).dbs[0].replicas[0]
    store = rep.open_store()
    outcome = restore_v3(store, discover(store, rep).v3, tmp_path / "state.db")
    assert outcome.findings == []
    return outcome.path


# --------------------------------------------------------------------------- 5. cut segments


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_512", "v3_file_replica_65536",
                                     "v3_s3_replica"])
@pytest.mark.parametrize("segment", ["middle", "last"])
@pytest.mark.parametrize("cut", ["mid-frame", "frame-boundary"])
def test_cut_segment_is_reported(fixture, segment, cut, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    lay = layout(replica)
    index, offset, key = lay.segment(segment) if cut == "mid-frame" else multi_frame_segment(replica, lay, segment)
    wal = decoded(replica, key)
    starts = frame_starts(wal, offset, replica.page_size)
    heads = [struct.unpack(">I", wal[s + 4 : s + 8])[0] for s in starts]
    # cut inside the last frame, or after a frame that is not a commit frame
    if cut == "mid-frame":
        end = starts[-1] + 24 + replica.page_size // 3
    else:
        end = next(s + 24 + replica.page_size for s, commit in zip(starts, heads) if commit == 0)
    write_object(replica, key, lz4_frame(bytes(wal[:end])))
    result = verify(replica, tmp_path)
    assert result.status == "failed"
    [culprit] = errors(result)
    assert culprit.kind in ("corrupt_object", "wal_gap")
    name = key.rsplit("/", 1)[-1]
    assert culprit.object.endswith(key) or name in culprit.message, culprit


def multi_frame_segment(replica, lay: Layout, where: str) -> tuple[int, int, str]:
    """(index, offset, key) of a segment that a frame-boundary cut shortens: one holding a
    frame that is not a commit frame. ``middle``: the most central such segment with another
    segment after it in its index (the cut leaves a gap); ``last``: the newest such segment.
    Every fixture has them (each batch of writes is one multi-frame segment)."""
    candidates = []
    for index in lay.indexes:
        segments = lay.segments[index]
        for n, (offset, key) in enumerate(segments):
            wal = decoded(replica, key)
            if n + 1 < len(segments) or where == "last":
                if any(wal[s + 4 : s + 8] == bytes(4) for s in frame_starts(wal, offset, replica.page_size)):
                    candidates.append((index, offset, key))
    assert candidates, "the fixture has no segment holding a non-commit frame"
    return candidates[-1] if where == "last" else candidates[len(candidates) // 2]


def test_cut_segment_fails_the_job(v3_file_replica_65536, clone):
    replica = clone(v3_file_replica_65536)
    index, offset, key = layout(replica).segment("middle")
    wal = decoded(replica, key)
    write_object(replica, key, lz4_frame(bytes(wal[: len(wal) - 100])))
    code, report = verify_job(replica)
    [db] = report["databases"]
    assert code == 1
    assert [(f["kind"], f["object"]) for f in db["findings"]] == [("corrupt_object", key)]


# --------------------------------------------------------------------------- 6. snapshots


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_512", "v3_s3_replica"])
@pytest.mark.parametrize("damage", ["stored-truncated", "truncated-before-compression", "not-sqlite",
                                    "empty-object", "bad-header-field"])
def test_damaged_snapshot_is_corrupt_object(fixture, damage, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    key = layout(replica).snapshot
    stored = read_object(replica, key)
    db = bytearray(lz4.frame.decompress(stored))
    if damage == "stored-truncated":
        data = stored[: len(stored) // 2]
    elif damage == "truncated-before-compression":
        data = lz4_frame(bytes(db[: len(db) // 2 // replica.page_size * replica.page_size]))
    elif damage == "not-sqlite":
        data = lz4_frame(b"definitely not a database " * 500)
    elif damage == "empty-object":
        data = b""
    else:
        db[21] = 0x41  # maximum embedded payload fraction must be 64
        data = lz4_frame(bytes(db))
    write_object(replica, key, data)
    result = verify(replica, tmp_path)
    assert_culprit(result, "corrupt_object", key)


# Replicas whose newest snapshot holds b-tree pages that no later WAL frame rewrites: the
# second generation's snapshot carries the first one's data, and at 64 KiB pages litestream's
# only snapshot follows a checkpoint. (The others' snapshots hold the empty schema only.)
@pytest.mark.parametrize("fixture", ["v3_multigen_file_replica", "v3_file_replica_65536"])
def test_snapshot_page_that_survives_the_restore_altered_is_caught_by_integrity(fixture, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    lay = layout(replica)
    db = bytearray(lz4.frame.decompress(read_object(replica, lay.snapshot)))
    rewritten = _pages_in_wal(replica, lay)
    size = replica.page_size
    survivors = [n for n in range(2, len(db) // size + 1) if n not in rewritten and db[(n - 1) * size] in (2, 5, 10, 13)]
    assert survivors, "every snapshot page is rewritten by the WAL: the fixture no longer produces this case"
    db[(survivors[0] - 1) * size] = 0x07  # not a b-tree page type
    write_object(replica, lay.snapshot, lz4_frame(bytes(db)))
    result = verify(replica, tmp_path)
    assert result.status == "failed"
    assert {f.kind for f in errors(result)} == {"integrity"}


def test_snapshot_page_rewritten_by_the_wal_is_harmless_and_not_reported(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    lay = layout(replica)
    db = bytearray(lz4.frame.decompress(read_object(replica, lay.snapshot)))
    page = min(_pages_in_wal(replica, lay) - {1})
    db[(page - 1) * replica.page_size + replica.page_size // 2] ^= 0xFF
    write_object(replica, lay.snapshot, lz4_frame(bytes(db)))
    result = verify(replica, tmp_path)
    assert result.status == "ok", result.findings
    assert result.restored.sha256 == replica.reference_sha256


def _pages_in_wal(replica, lay: Layout) -> set[int]:
    pages = set()
    for index in lay.indexes:
        for offset, key in lay.segments[index]:
            wal = decoded(replica, key)
            pages |= {struct.unpack(">I", wal[s : s + 4])[0] for s in frame_starts(wal, offset, replica.page_size)}
    return pages


def test_damaged_snapshot_fails_the_job_and_still_checks_the_wal(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    lay = layout(replica)
    write_object(replica, lay.snapshot, lz4_frame(b"SQLite format 2\x00" + bytes(4000)))
    index, offset, key = lay.segment("last")
    flip_stored_byte(replica, key, "middle")
    code, report = verify_job(replica)
    [db] = report["databases"]
    assert code == 1
    assert {(f["kind"], f["object"]) for f in db["findings"]} == {("corrupt_object", lay.snapshot),
                                                                  ("corrupt_object", key)}


# --------------------------------------------------------------------------- 7. missing snapshot


def test_newest_generation_without_snapshot_names_the_older_restorable_one(v3_multigen_file_replica, clone):
    replica = clone(v3_multigen_file_replica)
    older, newest = replica.generations[-2], replica.generations[-1]
    delete_object(replica, layout(replica, newest).snapshot)
    code, report = verify_job(replica)
    [db] = report["databases"]
    assert code == 1 and db["status"] == "failed"
    [finding] = db["findings"]
    assert finding["kind"] == "missing_snapshot"
    assert newest in finding["message"] and older in finding["message"]
    assert "restores cleanly" in finding["message"] and f"--generation {older}" in finding["message"]


def test_older_generation_damaged_too_is_said_so(v3_multigen_file_replica, clone, tmp_path):
    replica = clone(v3_multigen_file_replica)
    older, newest = replica.generations[-2], replica.generations[-1]
    delete_object(replica, layout(replica, newest).snapshot)
    old = layout(replica, older)
    flip_stored_byte(replica, old.segment("middle")[2], "middle")
    result = verify(replica, tmp_path)
    [finding] = result.findings
    assert finding.kind == "missing_snapshot"
    assert "does not restore cleanly" in finding.message


def test_only_generation_without_snapshot(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    delete_object(replica, layout(replica).snapshot)
    result = verify(replica, tmp_path)
    assert [f.kind for f in result.findings] == ["missing_snapshot"]
    assert "no other generation" in result.findings[0].message


# --------------------------------------------------------------------------- 8. empty replica


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_s3_replica"])
def test_empty_replica_is_no_backups(fixture, request, clone, restorable_env):
    replica = clone(request.getfixturevalue(fixture))
    for key in replica_listing(replica):
        delete_object(replica, key)
    if replica.kind == "file":
        shutil.rmtree(replica.replica_dir / "generations", ignore_errors=True)
    code, report = verify_job(replica, env=restorable_env)
    [db] = report["databases"]
    assert code == 1 and db["status"] == "failed"
    assert [f["kind"] for f in db["findings"]] == ["no_backups"]
    code, report = verify_job(replica, "--allow-empty", env=restorable_env)
    assert code == 0 and report["databases"][0]["status"] == "warning"
    assert [f["severity"] for f in report["databases"][0]["findings"]] == ["warning"]


def test_empty_replica_allowed_by_settings(v3_file_replica, clone, tmp_path, restorable_env):
    replica = clone(v3_file_replica)
    shutil.rmtree(replica.replica_dir)
    replica.replica_dir.mkdir()  # empty, as before Litestream's first upload (a missing folder is a config error)
    settings = tmp_path / "restorable.yml"
    settings.write_text("defaults:\n  allow-empty: true\n")
    code, report = verify_job(replica, "--settings", settings, env=restorable_env)
    assert code == 0
    assert [f["kind"] for f in report["databases"][0]["findings"]] == ["no_backups"]


# --------------------------------------------------------------------------- 9. integrity


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_file_replica_512", "v3_file_replica_65536"])
def test_sound_wal_with_corrupt_content_is_integrity_with_rows(fixture, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    lay = layout(replica)
    index = max(i for i in lay.indexes if len(lay.segments[i]) >= 2)
    pgno = forge_frame(replica, lay, index, last_table_leaf, bad_cell_pointer)
    result = verify(replica, tmp_path)
    assert result.status == "failed"
    [finding] = errors(result)
    assert finding.kind == "integrity"
    assert f"page {pgno}" in finding.message and "problem(s)" in finding.message


def test_integrity_failure_fails_the_job(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    lay = layout(replica)
    index = max(i for i in lay.indexes if len(lay.segments[i]) >= 2)
    forge_frame(replica, lay, index, last_table_leaf, bad_cell_pointer)
    code, report = verify_job(replica)
    [db] = report["databases"]
    assert code == 1
    assert [f["kind"] for f in db["findings"]] == ["integrity"]
    assert "Offset 5 out of range" in db["findings"][0]["message"]


# --------------------------------------------------------------------------- no false alarms


@pytest.mark.parametrize("fixture", ["v3_file_replica", "v3_s3_replica", "v3_file_replica_512",
                                     "v3_file_replica_65536", "v3_multigen_file_replica"])
def test_healthy_replica_has_no_findings(fixture, request, tmp_path):
    replica = request.getfixturevalue(fixture)
    result = verify(replica, tmp_path)
    assert result.status == "ok" and result.findings == []
    assert result.restored.sha256 == replica.reference_sha256


def test_unneeded_index_below_the_snapshot_without_offset_zero_is_only_a_warning(v3_file_replica, clone, tmp_path):
    """Litestream's retention deletes such indexes; only `litestream restore` refuses (P3)."""
    replica = clone(v3_file_replica)
    lay = layout(replica)
    keep = lay.indexes[1]
    state = _state_after(replica, keep - 1, tmp_path)
    new_snapshot = lay.snapshot.replace(f"{lay.indexes[0]:08x}.snapshot", f"{keep:08x}.snapshot")
    write_object(replica, new_snapshot, lz4_frame(state.read_bytes()))
    delete_object(replica, lay.snapshot)
    delete_object(replica, lay.segments[lay.indexes[0]][0][1])
    result = verify(replica, tmp_path)
    assert result.status == "warning", result.findings
    assert [(f.severity, f.kind) for f in result.findings] == [("warning", "wal_gap")]
    assert result.restored.sha256 == sha256_file(replica.reference_path)


def test_transaction_split_across_segments_is_healthy(v3_file_replica, clone, tmp_path):
    """Litestream uploads the shadow WAL while it is being appended to, so a segment can end
    inside a transaction that the next segment finishes: that is not damage."""
    replica = clone(v3_file_replica)
    lay = layout(replica)
    size = 24 + replica.page_size
    for index in lay.indexes:
        for offset, key in lay.segments[index]:
            wal = decoded(replica, key)
            starts = frame_starts(wal, offset, replica.page_size)
            inside = [s + size for s in starts[:-1] if wal[s + 4 : s + 8] == bytes(4)]
            if inside:
                cut = inside[len(inside) // 2]
                write_object(replica, key, lz4_frame(bytes(wal[:cut])))
                write_object(replica, key.rsplit("_", 1)[0] + f"_{offset + cut:08x}.wal.lz4", lz4_frame(bytes(wal[cut:])))
                result = verify(replica, tmp_path)
                assert result.status == "ok", result.findings
                assert result.restored.sha256 == replica.reference_sha256
                return
    raise AssertionError("no transaction spans two frames: the fixture no longer produces this case")


# --------------------------------------------------------------------------- findings_stand (pure)


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
GEN = "0123456789abcdef"


def listing(*names: str, changed: str = "", gen: str = GEN):
    """A parsed v0.3 listing of ``names`` (``snap:I`` or ``I_O``) uploaded a second apart."""
    objects = []
    for n, name in enumerate(names):
        if name.startswith("snap:"):
            key = f"generations/{gen}/snapshots/{int(name[5:]):08x}.snapshot.lz4"
        else:
            index, offset = name.split("_")
            key = f"generations/{gen}/wal/{int(index):08x}_{int(offset):08x}.wal.lz4"
        size = 200 if name == changed else 100
        objects.append(ObjectInfo(key, size, T0 + timedelta(seconds=n)))
    return parse_v3_listing(objects, "generations/")


def wal(index: int, offset: int) -> str:
    return f"generations/{GEN}/wal/{index:08x}_{offset:08x}.wal.lz4"


BASE = ("snap:0", "0_0", "0_100", "0_200", "1_0", "1_100")


@pytest.mark.parametrize("fresh,stands", [
    (BASE, True),
    (BASE + ("1_200", "2_0"), True),  # Litestream kept appending after the culprit
    (("snap:0", "0_0", "0_100", "0_200", "1_0"), True),  # later objects deleted: the culprit is still there
])
def test_damage_to_an_unchanged_object_stands(fresh, stands):
    finding = error_finding("corrupt_object", "bad", wal(0, 100))
    assert findings_stand(listing(*BASE), listing(*fresh), [finding]) is stands


def test_damage_to_a_changed_or_vanished_object_does_not_stand():
    finding = error_finding("corrupt_object", "bad", wal(0, 100))
    assert not findings_stand(listing(*BASE), listing(*BASE, changed="0_100"), [finding])
    assert not findings_stand(listing(*BASE), listing("snap:0", "0_0", "0_200", "1_0"), [finding])
    assert not findings_stand(listing(*BASE), listing("snap:0", "0_0", "0_100", "0_200", "1_0", "1_100",
                                                      gen="fedcba9876543210"), [finding])


def test_a_gap_stands_only_while_the_object_is_missing():
    old = listing("snap:0", "0_0", "0_200", "1_0")
    finding = error_finding("wal_gap", "bytes missing", wal(0, 100))
    assert findings_stand(old, listing("snap:0", "0_0", "0_200", "1_0", "1_100"), [finding])
    assert not findings_stand(old, listing("snap:0", "0_0", "0_100", "0_200", "1_0"), [finding])


def test_integrity_stands_unless_the_snapshots_index_grew():
    finding = error_finding("integrity", "bad rows")
    old = listing("snap:1", "1_0", "1_100")
    assert not findings_stand(old, listing("snap:1", "1_0", "1_100", "1_200"), [finding])
    assert findings_stand(old, listing("snap:1", "1_0", "1_100", "2_0"), [finding])
    assert findings_stand(old, listing("snap:1", "1_0", "1_100"), [finding])


def test_an_index_ending_inside_a_transaction_stands_only_if_nothing_continued_it():
    finding = error_finding("wal_gap", f"WAL index 00000001 {MID_TRANSACTION} at offset 200", wal(1, 100))
    assert findings_stand(listing(*BASE), listing(*BASE), [finding])
    assert not findings_stand(listing(*BASE), listing(*BASE + ("1_200",)), [finding])


def test_planning_findings_stand_while_planning_fails_the_same_way():
    finding = error_finding("missing_snapshot", "no snapshot", f"generations/{GEN}/snapshots/")
    old = listing("0_0", "0_100")
    assert findings_stand(old, listing("0_0", "0_100", "0_200"), [finding])
    assert not findings_stand(old, listing("snap:0", "0_0", "0_100"), [finding])


def test_findings_that_cannot_race_always_stand():
    findings = [error_finding("stale", "old"), error_finding("row_count", "few")]
    assert findings_stand(listing(*BASE), listing("snap:5", "5_0"), findings, RestoreTarget())


def test_point_in_time_inside_a_split_transaction_matches_litestream(v3_file_replica, clone, tmp_path):
    """A target between two segments of one transaction restores the state before it, no finding."""
    replica = clone(v3_file_replica)
    lay = layout(replica)
    size = 24 + replica.page_size
    for index in reversed(lay.indexes):
        offset, key = lay.segments[index][-1]
        wal = decoded(replica, key)
        inside = [s + size for s in frame_starts(wal, offset, replica.page_size)[:-1] if wal[s + 4 : s + 8] == bytes(4)]
        if inside:
            break
    else:
        raise AssertionError("no transaction spans two frames: the fixture no longer produces this case")
    cut = inside[0]
    first = replica.replica_dir / key
    moment = datetime.fromtimestamp(first.stat().st_mtime, tz=timezone.utc)
    write_object(replica, key, lz4_frame(bytes(wal[:cut])))
    second = replica.replica_dir / (key.rsplit("_", 1)[0] + f"_{offset + cut:08x}.wal.lz4")
    second.write_bytes(lz4_frame(bytes(wal[cut:])))
    later = (moment + timedelta(seconds=2)).timestamp()
    os.utime(second, (later, later))
    target = moment + timedelta(seconds=1)
    rep = load(str(replica.config_path), {}).dbs[0].replicas[0]
    store = rep.open_store()
    ours = restore_v3(store, discover(store, rep).v3, tmp_path / "ours.db", RestoreTarget(timestamp=target))
    assert ours.findings == []
    theirs = litestream_restore(replica, tmp_path / "theirs.db", timestamp=target)
    assert ours.sha256 == sha256_file(theirs)


def test_a_cut_segment_before_a_gap_stands_while_the_gap_stays():
    old = listing("snap:0", "0_0", "0_100", "0_300")
    finding = error_finding("wal_gap", f"00000000_00000064.wal.lz4 {MID_TRANSACTION}, so it was cut", wal(0, 100))
    assert findings_stand(old, listing("snap:0", "0_0", "0_100", "0_300", "0_400", "1_0"), [finding])
    assert not findings_stand(old, listing("snap:0", "0_0", "0_100", "0_200", "0_300"), [finding])


def test_snapshot_inflating_far_past_its_header_is_corrupt_object(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    key = layout(replica).snapshot
    db = lz4.frame.decompress(read_object(replica, key))
    compressor = lz4.frame.LZ4FrameCompressor(content_checksum=True)
    bomb = compressor.begin() + compressor.compress(db)
    bomb += b"".join(compressor.compress(bytes(8 << 20)) for _ in range(9)) + compressor.flush()  # 72 MiB of zeros
    write_object(replica, key, bomb)
    result = verify(replica, tmp_path)
    assert_culprit(result, "corrupt_object", key)
    assert "header" in errors(result)[0].message
