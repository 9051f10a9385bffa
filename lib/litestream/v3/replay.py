"""Replaying v0.3 WAL indexes onto the restored snapshot, frame by frame, validating salts, checksums and contiguity."""
from __future__ import annotations

import struct

import numpy as np

from lib.errors import CorruptObject
from lib.litestream import lz4 as lz4stream
from lib.litestream.v3 import wal
from lib.litestream.v3.layout import WalSegment
from lib.litestream.v3.plan import wal_key
from lib.litestream.v3.snapshot import Output
from lib.report.model import Finding, error

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
