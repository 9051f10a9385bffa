"""Native restore of Litestream v0.3 replicas (no litestream binary).

Follows ``../shared/docs/litestream-v0.3-format.md``: choose the generation and snapshot
as ``litestream restore`` does (4.1-4.3), stream the snapshot through LZ4 into the output
file, then replay WAL indexes S..max frame by frame straight into the file, which is
byte-identical to SQLite's checkpoint of the same WAL (4.5). Unlike Litestream, every
object is validated on the way and every problem becomes a finding naming the object.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lib import lz4stream, wal
from lib.errors import CorruptObject
from lib.fetch import prefetch
from lib.outcome import RestoreOutcome, RestoreTarget
from lib.replica import FORMAT_V3, Generation, Snapshot, V3State, WalSegment, format_wal_segment_name
from lib.report import Finding, error, warning
from lib.storage import ObjectStore

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
DEFAULT_MAX_RESTORE_BYTES = 1 << 40  # 1 TiB: a ceiling on any restored file, whatever headers claim
MAX_PAGE_NUMBER = 0xFFFFFFFE


# --------------------------------------------------------------------------- planning


@dataclass
class V3Plan:
    """Which objects rebuild the chosen restore point."""

    generation: Generation
    snapshot: Snapshot
    segments: list[WalSegment]  # indexes snapshot.index..max, in (index, offset) order
    findings: list[Finding] = field(default_factory=list)  # warnings found while planning

    @property
    def last_backup_at(self) -> datetime:
        times = [self.snapshot.info.last_modified] + [s.info.last_modified for s in self.segments]
        return max(times)

    @property
    def position(self) -> str:
        if self.segments:
            last = self.segments[-1]
            return f"{self.generation.id}/{last.index:08x}:{last.offset}"
        return f"{self.generation.id}/{self.snapshot.index:08x}:0"


def choose_generation(state: V3State, target: RestoreTarget) -> tuple[Generation | None, list[Finding]]:
    """Pick the generation ``litestream restore`` would (max updatedAt, first on ties)."""
    if target.generation:
        for gen in state.generations:
            if gen.id == target.generation:
                return gen, []
        known = ", ".join(g.id for g in state.generations) or "none"
        return None, [error("no_backups", f"generation {target.generation} not found (generations: {known})")]
    best: Generation | None = None
    for gen in state.generations:
        if target.timestamp and not (gen.created_at <= target.timestamp <= gen.updated_at):
            continue
        if best is None or gen.updated_at > best.updated_at:
            best = gen
    if best is None:
        if not state.generations:
            return None, [error("no_backups", f"no Litestream v0.3 backups under {state.prefix or 'the replica root'}")]
        return None, [error("no_backups", f"no generation covers {target.timestamp.isoformat()}")]
    return best, []


def choose_snapshot(gen: Generation, target: RestoreTarget) -> Snapshot | None:
    """The snapshot with the latest created time at or before the target (ties: first listed)."""
    best = None
    for snap in gen.snapshots:
        if target.timestamp and snap.info.last_modified > target.timestamp:
            continue
        if best is None or snap.info.last_modified > best.info.last_modified:
            best = snap
    return best


def plan_v3(state: V3State, target: RestoreTarget = RestoreTarget()) -> tuple[V3Plan | None, list[Finding]]:
    """Decide what to restore. Pure: looks only at the listing.

    Returns the plan (None when nothing can be restored) and the findings that planning
    alone can establish: no backups, a generation without snapshot, WAL indexes or
    initial segments missing.
    """
    gen, findings = choose_generation(state, target)
    if gen is None:
        return None, findings
    snapshot = choose_snapshot(gen, target)
    if snapshot is None:
        return None, [_missing_snapshot(state, gen, target)]
    segments = _segments_until(gen, target)
    findings = _check_indexes(gen, snapshot, segments)
    needed = [s for s in segments if s.index >= snapshot.index]
    return V3Plan(gen, snapshot, needed, [f for f in findings if f.severity == "warning"]), [
        f for f in findings if f.severity != "warning"
    ]


def _missing_snapshot(state: V3State, gen: Generation, target: RestoreTarget) -> Finding:
    older = [g for g in state.generations if g is not gen and choose_snapshot(g, target)]
    if older:
        best = max(older, key=lambda g: g.updated_at)
        hint = (f"older generation {best.id} (last upload {best.updated_at:%Y-%m-%dT%H:%M:%SZ}) still has a "
                f"snapshot: restore it with --generation {best.id}; restart litestream to start a new generation")
    else:
        hint = "no other generation has a snapshot either; restart litestream so it takes a new snapshot"
    return error("missing_snapshot", f"generation {gen.id} has WAL but no usable snapshot; {hint}",
                 f"{state.prefix}{gen.id}/snapshots/")


def _segments_until(gen: Generation, target: RestoreTarget) -> list[WalSegment]:
    kept = []
    for seg in gen.segments:
        if target.timestamp and seg.info.last_modified > target.timestamp:
            break
        kept.append(seg)
    return kept


def _check_indexes(gen: Generation, snapshot: Snapshot, segments: list[WalSegment]) -> list[Finding]:
    """Every index S..max needs segments starting at offset 0; below S, Litestream still insists."""
    findings: list[Finding] = []
    by_index: dict[int, list[WalSegment]] = {}
    for seg in segments:
        by_index.setdefault(seg.index, []).append(seg)
    for index, segs in sorted(by_index.items()):
        if segs[0].offset != 0:
            key = segs[0].info.key.rsplit("/", 1)[0] + "/" + format_wal_segment_name(index, 0)
            if index >= snapshot.index:
                findings.append(error("wal_gap", f"WAL index {index:08x} has no segment at offset 0 "
                                      f"(first is at offset {segs[0].offset})", key))
            else:
                findings.append(warning("wal_gap", f"WAL index {index:08x} (below snapshot {snapshot.index:08x}, "
                                        "not needed here) has no segment at offset 0: `litestream restore` will "
                                        "refuse this generation, `python -m jobs.restore` works", key))
    max_index = max(by_index, default=-1)
    if max_index == -1:
        return findings
    if max_index < snapshot.index:
        findings.append(error("wal_gap", f"WAL index {snapshot.index:08x} of snapshot {snapshot.index:08x} is "
                              f"missing (WAL ends at index {max_index:08x}); changes after the snapshot are lost",
                              snapshot.info.key))
    for index in range(snapshot.index, max_index + 1):
        if index not in by_index:
            findings.append(error("wal_gap", f"WAL index {index:08x} is missing between snapshot "
                                  f"{snapshot.index:08x} and index {max_index:08x}",
                                  f"{gen.id}/wal/{index:08x}_*"))
    return findings


# --------------------------------------------------------------------------- applying


class _Output:
    """The scratch database file, written at page offsets."""

    def __init__(self, path: Path, page_size: int, limit: int):
        self.path = path
        self.page_size = page_size
        self.limit = limit
        self.fd = os.open(path, os.O_RDWR)

    def write_page(self, pgno: int, page: memoryview) -> None:
        os.pwrite(self.fd, page, (pgno - 1) * self.page_size)

    def set_pages(self, pages: int) -> None:
        os.ftruncate(self.fd, pages * self.page_size)

    def close(self) -> None:
        os.close(self.fd)


def _page_size_from_header(header: bytes) -> int:
    raw = int.from_bytes(header[16:18], "big")
    return 65536 if raw == 1 else raw


def restore_snapshot(store: ObjectStore, snapshot: Snapshot, out_path: Path, limit: int) -> tuple[int, int]:
    """Stream the snapshot into ``out_path``; return (page_size, bytes). Raise CorruptObject."""
    key = snapshot.info.key
    written = 0
    page_size = 0
    expected_size = None
    with store.open(key) as reader, open(out_path, "wb", buffering=0) as out:
        os.chmod(out_path, 0o600)
        for piece in lz4stream.decompress_chunks(key, lz4stream.iter_reader(reader), limit):
            if written == 0:
                page_size, expected_size = _validate_db_header(key, bytes(piece[:100]))
                limit = min(limit, expected_size) if expected_size else limit
            out.write(piece)
            written += len(piece)
    if written < 100:
        raise CorruptObject(key, f"snapshot is {written} bytes, too short for a SQLite database")
    if written % page_size:
        raise CorruptObject(key, f"snapshot is {written} bytes, not a whole number of {page_size}-byte pages")
    if expected_size and written != expected_size:
        raise CorruptObject(key, f"snapshot is {written} bytes but its header says {expected_size}: truncated")
    return page_size, written


def _validate_db_header(key: str, head: bytes) -> tuple[int, int | None]:
    """Check the SQLite header; return the page size and, when the header is trustworthy, the size."""
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        raise CorruptObject(key, "snapshot does not start with the SQLite header ('SQLite format 3')")
    page_size = _page_size_from_header(head)
    if not wal.is_valid_page_size(page_size):
        raise CorruptObject(key, f"snapshot header has invalid page size {page_size}")
    pages = int.from_bytes(head[28:32], "big")
    change_counter = int.from_bytes(head[24:28], "big")
    valid_for = int.from_bytes(head[92:96], "big")
    if pages and change_counter == valid_for:
        return page_size, pages * page_size
    return page_size, None


class _IndexReplay:
    """Replays one WAL index, segment by segment, into the output file.

    Mirrors SQLite's recovery: frames are applied until the first invalid one; the
    database size becomes the last commit's size. Everything SQLite would skip silently
    is recorded as a finding instead.
    """

    def __init__(self, index: int, output: _Output, findings: list[Finding]):
        self.index = index
        self.output = output
        self.findings = findings
        self.header: wal.WalHeader | None = None
        self.length = 0  # decompressed bytes of this index seen so far
        self.s0 = self.s1 = 0
        self.broken = False  # the chain is broken: later frames of this index are not applied
        self.commit_pages = 0  # size after the last applied commit frame
        self.pending = bytearray()  # bytes of an incomplete frame carried between pieces
        self.frame_size = 24 + output.page_size
        self.last_frame_commit = True

    def fail(self, kind: str, message: str, key: str) -> None:
        self.findings.append(error(kind, message, key))
        self.broken = True

    def segment(self, seg: WalSegment, data: bytes) -> None:
        key = seg.info.key
        if seg.offset != self.length and not self.broken:
            what = "gap" if seg.offset > self.length else "overlap"
            self.fail("wal_gap", f"WAL index {self.index:08x}: {what} between offset {self.length} and segment "
                      f"at offset {seg.offset}", key)
        self.last_frame_commit = True
        limit = max(len(data) * 300, 1 << 20)  # LZ4's best ratio is ~255:1
        start = 0
        for piece in lz4stream.decompress_chunks(key, lz4stream.iter_bytes(data), limit):
            self.length += len(piece)
            self._feed(key, piece, start)
            start += len(piece)
        if self.pending and not self.broken:
            self.fail("corrupt_object", f"segment ends mid-frame ({len(self.pending)} bytes of an incomplete "
                      "frame)", key)
        elif not self.last_frame_commit and not self.broken:
            self.fail("corrupt_object", "segment does not end on a commit frame (a transaction is cut off)", key)
        self.pending.clear()

    def _feed(self, key: str, piece: bytes | memoryview, start: int) -> None:
        buf = memoryview(self.pending + piece if self.pending else piece)
        self.pending = bytearray()
        pos = 0
        if self.header is None:
            if len(buf) < wal.WAL_HEADER_SIZE:
                self.pending = bytearray(buf)
                return
            self._read_header(key, bytes(buf[:32]))
            pos = 32
        whole = (len(buf) - pos) // self.frame_size * self.frame_size
        if whole and not self.broken:
            self._apply_frames(key, buf[pos : pos + whole])
        elif whole:
            self.last_frame_commit = True
        self.pending = bytearray(buf[pos + whole :])

    def _read_header(self, key: str, head: bytes) -> None:
        try:
            self.header = wal.parse_wal_header(head)
        except wal.WalFormatError as exc:
            self.header = wal.WalHeader(0, 0, self.output.page_size, 0, 0, 0, 0, 0)
            self.fail("corrupt_object", f"WAL index {self.index:08x}: {exc}; SQLite would ignore the whole index", key)
            return
        if self.header.page_size != self.output.page_size:
            self.fail("corrupt_object", f"WAL page size {self.header.page_size} differs from the snapshot's "
                      f"{self.output.page_size}", key)
            return
        self.s0, self.s1 = self.header.checksum1, self.header.checksum2

    def _apply_frames(self, key: str, frames: memoryview) -> None:
        result = wal.check_frames(frames, self.output.page_size, self.header, self.s0, self.s1)
        fs = self.frame_size
        for i in range(result.valid_frames):
            frame = frames[i * fs : (i + 1) * fs]
            pgno = int.from_bytes(frame[0:4], "big")
            commit = int.from_bytes(frame[4:8], "big")
            if pgno * self.output.page_size > self.output.limit:
                self.fail("corrupt_object", f"frame for page {pgno} lies beyond the restore size ceiling", key)
                return
            self.output.write_page(pgno, frame[24:])
            self.last_frame_commit = commit != 0
            if commit:
                self.commit_pages = commit
        self.s0, self.s1 = result.s0, result.s1
        if result.problem:
            self.fail("corrupt_object", f"WAL index {self.index:08x}: {result.problem} in frame "
                      f"{result.valid_frames} of this segment; later frames of the index are unusable", key)

    def finish(self) -> None:
        """Set the database size to the last commit, as SQLite's checkpoint does."""
        if self.commit_pages:
            self.output.set_pages(self.commit_pages)


def restore_v3(
    store: ObjectStore,
    state: V3State,
    out_path: Path,
    target: RestoreTarget = RestoreTarget(),
    *,
    workers: int = 8,
    max_bytes: int = DEFAULT_MAX_RESTORE_BYTES,
) -> RestoreOutcome:
    """Restore the chosen restore point of a v0.3 replica into ``out_path``.

    ``ObjectNotFound`` and ``StorageUnavailable`` propagate (the caller re-lists or
    reports inconclusive); damage becomes findings.
    """
    outcome = RestoreOutcome(format=FORMAT_V3)
    plan, findings = plan_v3(state, target)
    outcome.findings.extend(findings)
    if plan is None:
        return outcome
    outcome.findings.extend(plan.findings)
    outcome.generation = plan.generation.id
    outcome.position = plan.position
    outcome.last_backup_at = plan.last_backup_at
    try:
        page_size, _ = restore_snapshot(store, plan.snapshot, out_path, max_bytes)
    except CorruptObject as exc:
        outcome.findings.append(error("corrupt_object", f"snapshot: {exc.problem}", exc.key))
        _scan_segments(store, plan, outcome, workers)
        return outcome
    outcome.objects_read = 1
    outcome.bytes_downloaded = plan.snapshot.info.size
    outcome.page_size = page_size
    _replay(store, plan, out_path, page_size, max_bytes, outcome, workers)
    outcome.path = out_path
    outcome.bytes, outcome.sha256 = _size_and_sha256(out_path)
    return outcome


def _replay(store, plan: V3Plan, out_path: Path, page_size: int, max_bytes: int, outcome: RestoreOutcome,
            workers: int) -> None:
    output = _Output(out_path, page_size, max_bytes)
    try:
        replay: _IndexReplay | None = None
        for seg, data in prefetch(store, plan.segments, workers=workers):
            if replay is None or seg.index != replay.index:
                if replay is not None:
                    replay.finish()
                replay = _IndexReplay(seg.index, output, outcome.findings)
            outcome.objects_read += 1
            outcome.bytes_downloaded += len(data)
            try:
                replay.segment(seg, data)
            except CorruptObject as exc:
                replay.fail("corrupt_object", exc.problem, exc.key)
        if replay is not None:
            replay.finish()
    finally:
        output.close()


def _scan_segments(store, plan: V3Plan, outcome: RestoreOutcome, workers: int) -> None:
    """With no usable snapshot, still check every WAL object so all damage is reported."""
    for seg, data in prefetch(store, plan.segments, workers=workers):
        try:
            for _ in lz4stream.decompress_chunks(seg.info.key, lz4stream.iter_bytes(data), len(data) * 300 + 65536):
                pass
        except CorruptObject as exc:
            outcome.findings.append(error("corrupt_object", exc.problem, exc.key))


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
