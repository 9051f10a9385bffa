"""Native restore of Litestream v0.3 replicas (no litestream binary).

Follows ``../shared/docs/litestream-v0.3-format.md``: choose the generation and snapshot
as ``litestream restore`` does (4.1-4.3), stream the snapshot through LZ4 into the output
file, then replay WAL indexes S..max frame by frame straight into the file, which is
byte-identical to SQLite's checkpoint of the same WAL (4.5). Unlike Litestream, every
object is validated on the way and every problem becomes a finding naming the object.
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from lib import lz4stream, wal
from lib.errors import CorruptObject
from lib.fetch import ObjectChanged, prefetch
from lib.outcome import RestoreOutcome, RestoreTarget, file_sha256
from lib.replica import (FORMAT_V3, WAL_SEGMENT_RE, Generation, Snapshot, V3State, WalSegment,
                         format_wal_segment_name)
from lib.report import Finding, error, warning
from lib.snapshot import Output, SnapshotDamaged, SnapshotStream, restore_snapshot
from lib.storage import ObjectStore

log = logging.getLogger(__name__)

DEFAULT_MAX_RESTORE_BYTES = 1 << 40  # 1 TiB: a ceiling on any restored file, whatever headers claim


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
    findings = _check_indexes(state.prefix, gen, snapshot, segments)
    needed = [s for s in segments if s.index >= snapshot.index]
    return V3Plan(gen, snapshot, needed, [f for f in findings if f.severity == "warning"]), [
        f for f in findings if f.severity != "warning"
    ]


def _missing_snapshot(state: V3State, gen: Generation, target: RestoreTarget) -> Finding:
    best = fallback_generation(state, gen, target)
    if best is not None:
        hint = (f"older generation {best.id} (last upload {best.updated_at:%Y-%m-%dT%H:%M:%SZ}) still has a "
                f"snapshot: restore it with --generation {best.id}; restart litestream to start a new generation")
    else:
        hint = "no other generation has a snapshot either; restart litestream so it takes a new snapshot"
    return error("missing_snapshot", f"generation {gen.id} has WAL but no usable snapshot; {hint}",
                 f"{state.prefix}{gen.id}/snapshots/")


def fallback_generation(state: V3State, gen: Generation, target: RestoreTarget) -> Generation | None:
    """The newest other generation that has a snapshot for ``target``, if any."""
    older = [g for g in state.generations if g is not gen and choose_snapshot(g, target)]
    return max(older, key=lambda g: g.updated_at) if older else None


def _segments_until(gen: Generation, target: RestoreTarget) -> list[WalSegment]:
    kept = []
    for seg in gen.segments:
        if target.timestamp and seg.info.last_modified > target.timestamp:
            break
        kept.append(seg)
    return kept


def _check_indexes(prefix: str, gen: Generation, snapshot: Snapshot, segments: list[WalSegment]) -> list[Finding]:
    """Every index S..max needs segments starting at offset 0; below S, Litestream still insists.

    Errors name the missing object (the offset-0 segment that should exist); indexes below
    the snapshot are not needed for this restore point, so their problems are warnings.
    """
    findings: list[Finding] = []
    by_index: dict[int, list[WalSegment]] = {}
    for seg in segments:
        by_index.setdefault(seg.index, []).append(seg)
    for index, segs in sorted(by_index.items()):
        if segs[0].offset != 0:
            key = wal_key(prefix, gen.id, index, 0)
            if index >= snapshot.index:
                findings.append(error("wal_gap", f"WAL index {index:08x} has no segment at offset 0 "
                                      f"(first is at offset {segs[0].offset}): the index cannot be replayed",
                                      key))
            else:
                findings.append(warning("wal_gap", f"WAL index {index:08x} (below snapshot {snapshot.index:08x}, "
                                        "not needed here) has no segment at offset 0: `litestream restore` will "
                                        "refuse this generation, `python -m jobs.restore` works", key))
    max_index = max(by_index, default=-1)
    if max_index == -1:
        return findings
    if max_index < snapshot.index:
        findings.append(error("wal_gap", f"WAL index {snapshot.index:08x} of snapshot {snapshot.index:08x} is "
                              f"missing (WAL ends at index {max_index:08x}): changes after the snapshot are lost, "
                              "or litestream stopped right after taking the snapshot",
                              wal_key(prefix, gen.id, snapshot.index, 0)))
    for index in range(snapshot.index, max_index + 1):
        if index not in by_index:
            findings.append(error("wal_gap", f"WAL index {index:08x} is missing between snapshot "
                                  f"{snapshot.index:08x} and index {max_index:08x}: every change after index "
                                  f"{index - 1:08x} is unrestorable", wal_key(prefix, gen.id, index, 0)))
    return findings


def wal_key(prefix: str, generation: str, index: int, offset: int) -> str:
    """The key a WAL segment has (or would have) in the store."""
    return f"{prefix}{generation}/wal/{format_wal_segment_name(index, offset)}"


# --------------------------------------------------------------------------- WAL replay

# Compressed WAL downloaded ahead of the replay: it runs while the snapshot streams, so
# this, the staged pages and the snapshot's buffers are what a restore holds in memory.
WAL_PREFETCH_BYTES = 16 << 20

# Pages of a transaction are held until its commit frame so that a transaction cut off
# by damage is never half applied; a transaction bigger than this is written through.
HOLD_LIMIT_BYTES = 64 << 20


# SQLite stamps page 1 with (the counter it last read) + 1 whenever a WAL transaction
# writes page 1 (pager.c, pagerWalFrames -> pager_write_changecounter), and a writer has
# always read the newest page 1 or written it itself: consecutive versions of page 1 carry
# equal or consecutive counters, so a larger step means transactions are missing.
COUNTER_STEP = 1
# Said of a WAL index whose last frame is not a commit frame; ``findings_stand`` treats the
# finding as a possible upload in flight.
MID_TRANSACTION = "ends inside a transaction"


def _position(generation: str, index: int, offset: int) -> str:
    return f"{generation}/{index:08x}:{offset}"


class _Replay:
    """Applies WAL indexes S..max to the output while they are sound, and validates all of them.

    Applying stops for good at the first problem (damage, gap, missing index): the output
    is then the database as of the last sound commit, a consistent earlier state, and
    ``stopped_at`` says where. Validation goes on to the last segment, so every damaged
    or missing object is reported. ``output`` is None when there is no usable snapshot:
    everything is validated, nothing applied.
    """

    def __init__(self, generation: str, prefix: str, snapshot_index: int, output: Output | None,
                 findings: list[Finding], listed_ends: dict[int, int] | None = None, snapshot_counter: int = 0):
        self.generation = generation
        # index -> offset of its last segment in the whole listing: an index the plan ends
        # earlier (a point-in-time target) may stop inside a transaction without damage
        self.listed_ends = listed_ends or {}
        self.prefix = prefix
        self.output = output
        self.findings = findings
        self.page_size = output.page_size if output else None  # of the database; WAL headers must agree
        self.applying = output is not None
        self.applied = _position(generation, snapshot_index, 0)  # end of the last applied commit
        self.stopped_at: str | None = None
        self.snapshot_index = snapshot_index
        self.snapshot_counter = snapshot_counter  # page 1's change counter in the snapshot
        self.behind_snapshot: tuple[int, int, int] | None = None  # (counter reached, snapshot's, WAL end)
        self.next_index = snapshot_index
        self.scan: _IndexScan | None = None
        self.last_counter: tuple[int, int] | None = None  # (page 1 change counter, WAL index) last seen
        self.index_ends: dict[int, int] = {}  # index -> bytes of it that were listed

    def stop(self) -> str:
        """Stop applying (idempotent); return the note that says where the restore ends.

        Called at every problem, so it also forgets page 1's change counter: what lies
        between here and the next page-1 frame is unknown.
        """
        self.last_counter = None
        if self.applying:
            self.applying = False
            self.stopped_at = self.applied
        if self.output is None:
            return ""
        return f"; the restore stops at the last sound commit before it ({self.stopped_at}): later changes are lost"

    def segment(self, seg: WalSegment, data: bytes) -> None:
        if self.scan is None or seg.index != self.scan.index:
            self._finish_index()
            if seg.index != self.next_index:
                self.stop()  # a whole index is missing: planning reported it
            self.scan = _IndexScan(self, seg.index)
            self.next_index = seg.index + 1
        self.scan.segment(seg, data)

    def finish(self) -> None:
        self._finish_index()

    def _finish_index(self) -> None:
        if self.scan is None:
            return
        self.scan.finish()
        self.index_ends[self.scan.index] = self.scan.length or 0
        if self.scan.index == self.snapshot_index and self.applying:
            self._check_reaches_snapshot(self.scan.length or 0)
        self.scan = None

    def _check_reaches_snapshot(self, wal_end: int) -> None:
        """After the snapshot's own index, page 1 must be at least as new as the snapshot's.

        SQLite stamps page 1 with the next change counter whenever a WAL transaction
        writes it, so the counter never goes back. An older page 1 means the WAL listed
        ends before the state the snapshot was taken at: replaying it wrote older pages
        over newer ones. Applying stops; ``restore_v3`` decides whether that is a race
        with Litestream's uploads or missing segments.
        """
        reached = self.output.change_counter()
        if is_older_counter(reached, self.snapshot_counter):
            self.behind_snapshot = (reached, self.snapshot_counter, wal_end)
            self.applying = False
            self.last_counter = None  # reported once, by restore_v3
            self.stopped_at = _position(self.generation, self.snapshot_index, 0)


def is_older_counter(a: int, b: int) -> bool:
    """True when 32-bit change counter ``a`` comes before ``b`` (serial-number arithmetic)."""
    return 0 < (b - a) % (1 << 32) < (1 << 31)


class _IndexScan:
    """One WAL index, fed segment by segment: contiguity, header, frames, commit endings.

    Each damaged segment yields one ``corrupt_object`` finding listing its problems; a
    missing byte range yields one ``wal_gap`` finding naming the segment that should hold
    it. Problems that follow from one already reported (the gap after a truncated segment,
    the frames of an index whose header is bad or missing) are not reported again.
    """

    def __init__(self, replay: _Replay, index: int):
        self.replay = replay
        self.index = index
        self.length: int | None = 0  # bytes of the index covered so far; None: unknown
        self.header: wal.WalHeader | None = None
        self.page_size = 0  # of the frames: the database's
        self.salts = (0, 0)  # every frame must carry these (the header's, unless it was altered)
        self.big_endian = False  # checksum byte order
        self.first_frame: bytes | None = None  # header of the index's first frame, once seen
        self.frame_size = 0
        self.has_frames = True  # False when the index has no usable header: frames can't be judged
        self.aligned = True  # the current segment starts on a frame boundary
        self.seed: tuple[int, int] | None = None  # checksum before the next frame; None: unknown
        self.pending = bytearray()  # bytes of an incomplete frame carried between pieces
        self.frame_offset = 0  # index offset of the next whole frame
        self.held: dict[int, memoryview] = {}  # pages of the open transaction, by page number
        self.held_bytes = 0
        self.commit_pages = 0  # database size after the last applied commit of this index
        self.short = False  # the previous segment ended early (already reported)
        self.last_commit = True  # the last frame judged is a commit frame
        self.last_key = ""  # the segment fed last
        self.last_offset = 0  # and its offset
        self.last_reported = False  # a finding was reported for it
        # per segment
        self.problems: list[str] = []
        self.bad_frames = 0
        self.first_bad = ""
        self.stop_note = ""

    # -- segments

    def segment(self, seg: WalSegment, data: bytes) -> None:
        key = seg.info.key
        self.problems, self.bad_frames, self.first_bad, self.stop_note = [], 0, "", ""
        self._check_offset(seg)
        self.last_key, self.last_offset, self.last_reported = key, seg.offset, False
        self.short = False
        limit = max(len(data) * 300, 1 << 20)  # LZ4's best ratio is ~255:1
        try:
            for piece in lz4stream.decompress_chunks(key, lz4stream.iter_bytes(data), limit):
                self.length += len(piece)
                self._feed(piece)
        except CorruptObject as exc:
            # The decoded bytes can't be trusted: report the LZ4 problem alone.
            note = self._stop()
            self.replay.findings.append(error("corrupt_object", exc.problem + note, key))
            self.length, self.last_reported = None, True
            return
        if self.bad_frames:
            more = f" ({self.bad_frames} bad frames)" if self.bad_frames > 1 else ""
            self.problems.append(f"{self.first_bad}{more}; litestream restore would silently drop it and "
                                 "every later frame of the index")
        self._check_ending()
        self.last_reported = bool(self.problems)
        if self.problems:
            self.replay.findings.append(error("corrupt_object", f"WAL index {self.index:08x}: "
                                              + "; ".join(self.problems) + self.stop_note, key))

    def _check_offset(self, seg: WalSegment) -> None:
        """Segment offsets must continue the index exactly: no gap, no overlap."""
        if self.length == seg.offset:
            return
        if self.length is None:
            self.has_frames = self.has_frames and self.header is not None  # undecodable segment (reported)
        elif self.length == 0 and self.header is None:
            self.has_frames = False  # no offset-0 segment, so no header (planning reported it)
            self._stop()
        elif seg.offset > self.length:
            note = self._stop()
            if not self.short:
                self.replay.findings.append(self._gap(seg.offset, note))
        else:
            note = self._stop()
            self.replay.findings.append(error(
                "corrupt_object", f"WAL index {self.index:08x}: segment starts at offset {seg.offset} but the "
                f"previous segment ends at {self.length}: they overlap{note}", seg.info.key))
        self._resync(seg.offset)

    def _gap(self, next_offset: int, note: str) -> Finding:
        """The finding for bytes missing before ``next_offset``.

        It names the segment that should hold them, unless the previous segment ended
        inside a transaction: Litestream continues such a segment contiguously, so that
        segment was cut and is named instead.
        """
        after = self.last_key.rsplit("/", 1)[-1]
        message = (f"WAL index {self.index:08x}: bytes {self.length}..{next_offset} are missing (no segment at offset "
                   f"{self.length}, after {after}; the next one starts at {next_offset})")
        if not self.last_commit:
            return error("wal_gap", f"{message}: {after} {MID_TRANSACTION}, so it was cut{note}", self.last_key)
        return error("wal_gap", message + note, wal_key(self.replay.prefix, self.replay.generation, self.index,
                                                        self.length))

    def _resync(self, offset: int) -> None:
        """Go on after a discontinuity: nothing before ``offset`` can seed the checksum."""
        self.length = offset
        self.seed = None
        self.pending = bytearray()
        self.frame_offset = offset
        self.aligned = not self.frame_size or (offset - wal.WAL_HEADER_SIZE) % self.frame_size == 0

    def _check_ending(self) -> None:
        """A Litestream segment holds whole frames.

        Whether the index ends on a commit frame is judged at the end of the index: a
        segment may legitimately end inside a transaction that the next segment continues
        (Litestream uploads the shadow WAL while it is still being appended to).
        """
        if not (self.has_frames and self.aligned):
            return
        if self.header is None:
            self.problems.append(f"the segment at offset 0 holds {len(self.pending)} bytes, less than the 32-byte "
                                 "WAL header")
            self.has_frames = False
        elif self.pending:
            self.problems.append(f"segment ends mid-frame ({len(self.pending)} bytes of a {self.frame_size}-byte "
                                 "frame): it was truncated")
        else:
            return
        self.short = True
        self.stop_note = self.stop_note or self._stop()
        self._resync(self.length)

    def _stop(self) -> str:
        self._drop_held()
        return self.replay.stop()

    # -- bytes

    def _feed(self, piece: bytes | memoryview) -> None:
        if not (self.has_frames and self.aligned):
            return
        buf = memoryview(bytes(self.pending) + bytes(piece)) if self.pending else memoryview(piece)
        self.pending = bytearray()
        pos = 0
        if self.header is None:
            if len(buf) < wal.WAL_HEADER_SIZE:
                self.pending = bytearray(buf)
                return
            self._read_header(bytes(buf[: wal.WAL_HEADER_SIZE]))
            if not self.has_frames:
                return
            pos = self.frame_offset = wal.WAL_HEADER_SIZE
        whole = (len(buf) - pos) // self.frame_size * self.frame_size
        if whole:
            self._frames(buf[pos : pos + whole])
        self.pending = bytearray(buf[pos + whole :])

    def _read_header(self, head: bytes) -> None:
        try:
            header = wal.parse_wal_header(head)
        except wal.WalFormatError as exc:
            self.has_frames = False
            self.problems.append(f"{exc}: SQLite ignores the whole index")
            self.stop_note = self._stop()
            return
        self.header = header
        self.salts, self.big_endian = header.salts, header.big_endian_checksums
        self.seed = (header.checksum1, header.checksum2)
        self.page_size = self.replay.page_size or header.page_size
        self.replay.page_size = self.page_size
        if header.page_size != self.page_size:
            # The database's page size is authoritative: frames are judged with it.
            self.problems.append(f"WAL header says page size {header.page_size}, the database's is "
                                 f"{self.page_size}: the header was altered")
            self.stop_note = self._stop()
            self.seed = None
        self.frame_size = wal.FRAME_HEADER_SIZE + self.page_size

    def _judge_header(self, frames: memoryview) -> None:
        """Judge the header's salts and byte order by the index's first two frames.

        SQLite rejects an index whose first frame disagrees with its header, so applying
        stops there whichever of the two was altered. For validating the rest of the index
        the frames' own salts and byte order are used when the first two frames agree with
        each other and not with the header: an altered header is then blamed once instead
        of every later frame.
        """
        start = self.frame_offset
        if start == wal.WAL_HEADER_SIZE:
            self.first_frame = bytes(frames[: wal.FRAME_HEADER_SIZE])
            first = wal.frame_salts(self.first_frame)
            if first != self.salts:
                self.problems.append(f"the first frame's salts {first[0]:08x}/{first[1]:08x} differ from the WAL "
                                     f"header's {self.salts[0]:08x}/{self.salts[1]:08x}: the header or the first "
                                     "frame was altered, SQLite ignores the whole index")
                self.stop_note = self.stop_note or self._stop()
                self.salts, self.seed = first, None  # the header's checksum can't seed this frame either
        at = wal.WAL_HEADER_SIZE + self.frame_size - start
        if self.first_frame is None or not 0 <= at < len(frames):
            return
        second = frames[at : at + self.frame_size]
        if self.salts != self.header.salts and wal.frame_salts(second) == self.header.salts:
            self.salts = self.header.salts  # the first frame was the odd one out
        seed = struct.unpack(">II", self.first_frame[16:24])
        as_is = wal.scan_frames(second, self.page_size, self.salts, self.big_endian, seed).first_problem()
        flipped = wal.scan_frames(second, self.page_size, self.salts, not self.big_endian, seed).first_problem()
        if as_is is not None and flipped is None:
            order = "big" if self.big_endian else "little"
            self.replay.findings.append(error(
                "corrupt_object", f"WAL index {self.index:08x}: the header's magic selects {order}-endian checksums "
                "but the frames use the other byte order: the header was altered",
                wal_key(self.replay.prefix, self.replay.generation, self.index, 0)))
            self.big_endian = not self.big_endian
            self.stop_note = self.stop_note or self._stop()

    def _frames(self, frames: memoryview) -> None:
        if self.frame_offset <= wal.WAL_HEADER_SIZE + self.frame_size:
            self._judge_header(frames)
        scan = wal.scan_frames(frames, self.page_size, self.salts, self.big_endian, self.seed)
        self.seed = scan.last_stored
        first_bad = scan.first_problem()
        if first_bad is not None:
            self._report_frames(scan, first_bad)
        jump = self._check_counters(frames, scan)
        if self.replay.applying:
            self._apply(frames, scan, min(x for x in (first_bad, jump, scan.count) if x is not None))
        if first_bad is not None or jump is not None:
            self.stop_note = self.stop_note or self._stop()
        self.last_commit = bool(scan.commits[-1])
        self.frame_offset += scan.count * self.frame_size

    def _check_counters(self, frames: memoryview, scan: wal.FrameScan) -> int | None:
        """Page 1's change counter may only repeat or step by one (see ``COUNTER_STEP``).

        Returns the number of the first sound page-1 frame that jumps further (transactions
        are missing before it), or None.
        """
        for n in np.flatnonzero((scan.pgnos == 1) & (scan.problems == 0)).tolist():
            at = n * self.frame_size + wal.FRAME_HEADER_SIZE + 24
            counter = int.from_bytes(frames[at : at + 4], "big")
            last = self.replay.last_counter
            if last is not None and (counter - last[0]) % (1 << 32) > COUNTER_STEP:
                self._report_jump(last, counter, self.frame_offset + n * self.frame_size)
                return n
            self.replay.last_counter = (counter, self.index)
        return None

    def _report_jump(self, last: tuple[int, int], counter: int, offset: int) -> None:
        previous, where = last
        if where == self.index:
            self.problems.append(f"page 1's change counter jumps from {previous} to {counter} at offset {offset}: "
                                 "the index lacks transactions between them")
            return
        end_index, end = self.index - 1, self.replay.index_ends.get(self.index - 1, 0)
        note = self._stop()
        self.replay.findings.append(error(
            "wal_gap", f"page 1's change counter jumps from {previous} (WAL index {where:08x}) to {counter} (WAL "
            f"index {self.index:08x}, offset {offset}): transactions between them are missing, most likely the "
            f"last segment(s) of WAL index {end_index:08x} from offset {end} (deleted or never uploaded){note}",
            wal_key(self.replay.prefix, self.replay.generation, end_index, end)))

    def _report_frames(self, scan: wal.FrameScan, first_bad: int) -> None:
        if not self.first_bad:
            offset = self.frame_offset + first_bad * self.frame_size
            reason = wal.PROBLEM_TEXT[int(scan.problems[first_bad])]
            self.first_bad = f"frame at offset {offset} (page {int(scan.pgnos[first_bad])}): {reason}"
        self.bad_frames += scan.bad_count()

    # -- applying

    def _apply(self, frames: memoryview, scan: wal.FrameScan, count: int) -> None:
        """Apply the first ``count`` (sound) frames; a transaction's pages are written at its commit."""
        output = self.replay.output
        size = self.frame_size
        for i, (pgno, commit) in enumerate(zip(scan.pgnos[:count].tolist(), scan.commits[:count].tolist())):
            if max(pgno, commit) * output.page_size > output.limit:
                self.problems.append(f"frame at offset {self.frame_offset + i * size} sets page "
                                     f"{max(pgno, commit)}, beyond the restore size ceiling")
                self.stop_note = self.stop_note or self._stop()
                return
            self.held[pgno] = frames[i * size + wal.FRAME_HEADER_SIZE : (i + 1) * size]
            self.held_bytes += output.page_size
            if commit:
                self._write_held()
                self.commit_pages = commit
                self.replay.applied = _position(self.replay.generation, self.index,
                                                self.frame_offset + (i + 1) * size)
            elif self.held_bytes > HOLD_LIMIT_BYTES:
                self._write_held()  # a huge transaction: written through, see HOLD_LIMIT_BYTES

    def _write_held(self) -> None:
        for pgno, page in self.held.items():
            self.replay.output.write_page(pgno, page)
        self._drop_held()

    def _drop_held(self) -> None:
        self.held = {}
        self.held_bytes = 0

    def finish(self) -> None:
        """End the index: it must end on a commit frame; set the database size to the last
        applied commit, as SQLite's checkpoint does (an unfinished transaction is not applied)."""
        complete = self.replay.listed_ends.get(self.index, self.last_offset) <= self.last_offset
        if self.has_frames and self.aligned and self.header is not None and not self.last_commit \
                and not self.last_reported and complete:
            note = self._stop()
            name = self.last_key.rsplit("/", 1)[-1]
            self.replay.findings.append(error(
                "wal_gap", f"WAL index {self.index:08x} {MID_TRANSACTION} at offset {self.length}: the segment "
                f"continuing its last transaction is missing, or {name} was cut (litestream restore silently drops "
                f"that transaction){note}", self.last_key))
        self._drop_held()
        if self.commit_pages and self.replay.output is not None:
            self.replay.output.set_pages(self.commit_pages)


# --------------------------------------------------------------------------- restore


def restore_v3(
    store: ObjectStore,
    state: V3State,
    out_path: Path,
    target: RestoreTarget = RestoreTarget(),
    *,
    workers: int = 8,
    max_bytes: int = DEFAULT_MAX_RESTORE_BYTES,
    digest: bool = True,
) -> RestoreOutcome:
    """Restore the chosen restore point of a v0.3 replica into ``out_path``, validating everything.

    ``digest`` fills ``outcome.sha256`` (a second read of the file; callers that can hash
    while doing something else pass False and use ``file_sha256``).

    ``ObjectNotFound`` (including ``ObjectChanged``) and ``StorageUnavailable`` propagate:
    the caller re-lists or reports inconclusive. Damage becomes findings; on a damaged
    replica ``outcome.position`` is where the sound part ends.
    """
    outcome = RestoreOutcome(format=FORMAT_V3)
    plan, findings = plan_v3(state, target)
    if plan is None:
        outcome.findings.extend(_prove_fallback(store, state, target, out_path, f, workers, max_bytes)
                                if f.kind == "missing_snapshot" else f for f in findings)
        return outcome
    outcome.findings.extend(findings)
    outcome.findings.extend(_confirm_warnings(store, state.prefix, plan))
    outcome.generation = plan.generation.id
    outcome.last_backup_at = plan.last_backup_at
    snapshot = SnapshotStream(store, plan.snapshot, out_path, max_bytes)
    try:
        replay = _replay_onto_snapshot(snapshot, store, plan, state.prefix, out_path, outcome, workers, max_bytes)
    finally:
        snapshot.stop()
    if replay is None:
        damage = snapshot.error
        outcome.findings.append(error("corrupt_object", f"snapshot: {damage.problem}", damage.key))
        _replay(store, plan, state.prefix, None, outcome, workers)
        return outcome
    if replay.behind_snapshot:
        if not _target_cuts_index(plan, plan.snapshot.index):
            outcome.findings.append(_wal_behind_snapshot(store, state.prefix, plan, replay.behind_snapshot))
        restore_snapshot(store, plan.snapshot, out_path, max_bytes)  # the newest consistent state
    outcome.position = replay.stopped_at or plan.position
    outcome.path = out_path
    outcome.bytes = out_path.stat().st_size
    if digest:
        outcome.sha256 = file_sha256(out_path)
    return outcome


def _replay_onto_snapshot(snapshot: SnapshotStream, store: ObjectStore, plan: V3Plan, prefix: str, out_path: Path,
                          outcome: RestoreOutcome, workers: int, max_bytes: int) -> _Replay | None:
    """Replay the WAL into ``out_path`` while ``snapshot`` streams into it; written pages wait for the snapshot.

    Returns None, with ``outcome`` as it was, when the snapshot turns out damaged: the
    caller then validates the WAL without applying it, downloading it again (only a
    damaged replica pays for that, and the findings come from the same code as before).
    """
    findings_before = len(outcome.findings)
    try:
        header = snapshot.header()
        output = Output(out_path, header.page_size, max_bytes, snapshot.finished)
        try:
            replay = _replay(store, plan, prefix, output, outcome, workers, header.change_counter)
            output.close()  # writes the staged pages once the snapshot is complete
        except BaseException:
            output.abandon()
            raise
    except SnapshotDamaged:
        del outcome.findings[findings_before:]
        outcome.objects_read = outcome.bytes_downloaded = 0
        return None
    outcome.objects_read += 1
    outcome.bytes_downloaded += plan.snapshot.info.size
    outcome.page_size = header.page_size
    return replay


def _target_cuts_index(plan: V3Plan, index: int) -> bool:
    """True when the generation lists segments of ``index`` (or later) that the plan leaves out
    (a point-in-time target before them): the snapshot alone is then the consistent state."""
    planned = {s.info.key for s in plan.segments}
    return any(s.index >= index and s.info.key not in planned for s in plan.generation.segments)


def _wal_behind_snapshot(store: ObjectStore, prefix: str, plan: V3Plan, behind: tuple[int, int, int]) -> Finding:
    """The WAL of the snapshot's index ends before the snapshot's state: a race, or segments are missing.

    Raises ``ObjectChanged`` when a fresh listing shows that index grew since the plan
    (Litestream uploaded the snapshot before the WAL it contains: the caller re-lists);
    otherwise the segments are missing and this returns the finding.
    """
    reached, wanted, wal_end = behind
    index = plan.snapshot.index
    listed = {s.info.key for s in plan.segments if s.index >= index}
    wal_prefix = f"{prefix}{plan.generation.id}/wal/"
    fresh = [o for o in store.list(wal_prefix) if _segment_index(o.key[len(wal_prefix):]) >= index]
    if any(o.key not in listed for o in fresh):
        raise ObjectChanged(plan.snapshot.info.key, "the snapshot is newer than the WAL listed with it: Litestream "
                            "was uploading")
    return error("wal_gap", f"WAL index {index:08x} ends at offset {wal_end}, before the state snapshot "
                 f"{index:08x} was taken at (page 1 change counter {reached} < the snapshot's {wanted}): its last "
                 "segments are missing, or litestream stopped right after the snapshot; `litestream restore` would "
                 "write these older pages over the snapshot's newer ones. Restored the snapshot alone",
                 wal_key(prefix, plan.generation.id, index, wal_end))


def _confirm_warnings(store: ObjectStore, prefix: str, plan: V3Plan) -> list[Finding]:
    """Keep the planning warnings (an index below the snapshot without its offset-0
    segment) that a fresh listing confirms: Litestream's retention deletes such indexes
    segment by segment, so a listing taken meanwhile shows one half deleted."""
    if not plan.findings:
        return []
    wal_prefix = f"{prefix}{plan.generation.id}/wal/"
    fresh: dict[int, list[int]] = {}
    for obj in store.list(wal_prefix):
        order = _segment_order(obj.key)
        fresh.setdefault(order[0], []).append(order[1])
    return [f for f in plan.findings if _still_without_offset0(f, fresh)]


def _still_without_offset0(finding: Finding, fresh: dict[int, list[int]]) -> bool:
    index = _segment_order(finding.object or "")[0]
    return index < 0 or (index in fresh and 0 not in fresh[index])


def _segment_index(name: str) -> int:
    match = WAL_SEGMENT_RE.match(name)
    return int(match.group(1), 16) if match else -1


def _replay(store: ObjectStore, plan: V3Plan, prefix: str, output: Output | None, outcome: RestoreOutcome,
            workers: int, snapshot_counter: int = 0) -> _Replay:
    listed_ends = {s.index: s.offset for s in plan.generation.segments}  # segments are in (index, offset) order
    replay = _Replay(plan.generation.id, prefix, plan.snapshot.index, output, outcome.findings, listed_ends,
                     snapshot_counter)
    for seg, data in prefetch(store, plan.segments, workers=workers, max_buffered_bytes=WAL_PREFETCH_BYTES):
        outcome.objects_read += 1
        outcome.bytes_downloaded += len(data)
        replay.segment(seg, data)
    replay.finish()
    return replay


def _prove_fallback(store: ObjectStore, state: V3State, target: RestoreTarget, out_path: Path, finding: Finding,
                    workers: int, max_bytes: int) -> Finding:
    """Say whether the generation a ``missing_snapshot`` finding points to really restores.

    The older generation is restored into ``out_path`` (then removed) and integrity-checked;
    the finding's message then says which generation to use, or that it is damaged too.
    """
    gen_id = _generation_of(finding.object or "", state.prefix)
    gen = next((g for g in state.generations if g.id == gen_id), None)
    best = fallback_generation(state, gen, target) if gen is not None else None
    if best is None:
        return finding
    sub = restore_v3(store, state, out_path, RestoreTarget(timestamp=target.timestamp, generation=best.id),
                     workers=workers, max_bytes=max_bytes, digest=False)
    problems = [f.message for f in sub.findings if f.severity == "error"]
    if sub.path is not None:
        from lib import checks

        with checks.open_readonly(sub.path) as db:
            problems += [f.message for f in checks.integrity(db)]
        sub.path.unlink(missing_ok=True)
    if problems:
        verdict = f"older generation {best.id} has a snapshot but does not restore cleanly either ({problems[0]})"
    else:
        verdict = (f"older generation {best.id} restores cleanly (verified up to {sub.position}, last upload "
                   f"{best.updated_at:%Y-%m-%dT%H:%M:%SZ}): restore it with --generation {best.id}")
    message = (f"generation {gen.id} has WAL but no usable snapshot; {verdict}; restart litestream so it "
               "starts a new generation with a snapshot")
    return error(finding.kind, message, finding.object)


def _generation_of(key: str, prefix: str) -> str:
    return key[len(prefix):].split("/", 1)[0] if key.startswith(prefix) else ""


# --------------------------------------------------------------------------- races

# Finding kinds that a listing racing Litestream's uploads, checkpoints and retention can
# produce on a healthy replica; ``findings_stand`` re-examines them on a fresh listing.
RACE_KINDS = ("corrupt_object", "wal_gap", "missing_snapshot", "integrity")


def findings_stand(old: V3State, fresh: V3State, findings: list[Finding],
                   target: RestoreTarget = RestoreTarget()) -> bool:
    """True when a fresh listing still holds the basis of every racy error finding.

    Litestream never rewrites a WAL segment, so what a restore found is settled when the
    objects it read up to the culprit are listed unchanged in ``fresh`` and nothing new
    appeared before the culprit (a missing object is settled when it is still missing).
    ``integrity`` has no culprit: it stands when the whole plan is unchanged, apart from
    new indexes after the snapshot's (Litestream uploads them only once that index is
    complete). Otherwise the caller verifies again from ``fresh``.
    """
    racy = [f for f in findings if f.severity == "error" and f.kind in RACE_KINDS and not f.inconclusive]
    if not racy:
        return True
    old_plan, old_problems = plan_v3(old, target)
    new_plan, new_problems = plan_v3(fresh, target)
    if old_plan is None or new_plan is None:
        return old_plan is None and new_plan is None and _same_problems(old_problems, new_problems)
    old_objects, new_objects = _plan_objects(old_plan), _plan_objects(new_plan)
    return all(_stands(f, old_plan, old_objects, new_objects) for f in racy)


def _same_problems(old: list[Finding], new: list[Finding]) -> bool:
    return {(f.kind, f.object) for f in old} == {(f.kind, f.object) for f in new}


def _plan_objects(plan: V3Plan) -> list[tuple[str, int, datetime]]:
    infos = [plan.snapshot.info] + [s.info for s in plan.segments]
    return [(o.key, o.size, o.last_modified) for o in infos]


def _stands(finding: Finding, old_plan: V3Plan, old: list, new: list) -> bool:
    if finding.kind == "integrity" or not finding.object:
        return new[: len(old)] == old and _no_new_in_index(new, old, old_plan.snapshot.index)
    keys = [o[0] for o in old]
    if finding.object in keys:
        end = keys.index(finding.object) + 1
        if MID_TRANSACTION in finding.message:
            return new[:end] == old[:end] and not _continued(finding.object, keys, new)
        return new[:end] == old[:end]
    if finding.object.endswith("/"):
        return new[:1] == old[:1]  # about the generation's snapshots: settled by the snapshot
    # A missing object: everything listed before its place, and the next one, are unchanged.
    end = 1 + sum(1 for key in keys[1:] if _segment_order(key) < _segment_order(finding.object))
    return new[: end + 1] == old[: end + 1] and finding.object not in {o[0] for o in new}


def _continued(key: str, old_keys: list[str], new: list) -> bool:
    """Whether ``new`` holds a segment, absent before, that may continue ``key``'s transaction
    (between it and the next segment of its index that was already listed)."""
    index, offset = _segment_order(key)
    following = [o for i, o in map(_segment_order, old_keys) if i == index and o > offset]
    bound = min(following, default=None)
    for other in (o[0] for o in new if o[0] not in old_keys):
        i, o = _segment_order(other)
        if i == index and o > offset and (bound is None or o < bound):
            return True
    return False


def _no_new_in_index(new: list, old: list, index: int) -> bool:
    """The fresh plan holds no segment of ``index`` that the old one lacked."""
    old_keys = {o[0] for o in old}
    prefix = f"{index:08x}_"
    return not any(o[0].rsplit("/", 1)[-1].startswith(prefix) and o[0] not in old_keys for o in new)


def _segment_order(key: str) -> tuple[int, int]:
    match = WAL_SEGMENT_RE.match(key.rsplit("/", 1)[-1])
    return (int(match.group(1), 16), int(match.group(2), 16)) if match else (-1, -1)
