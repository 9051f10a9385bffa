"""One v0.3 WAL index, segment by segment: contiguity, damage findings, commit endings, page 1's counter."""
from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from lib.errors import CorruptObject
from lib.litestream import lz4 as lz4stream
from lib.litestream.v3 import age, wal
from lib.litestream.v3.age import AgeKeys
from lib.litestream.v3.frames import FrameReader
from lib.litestream.v3.layout import Position, WalSegment
from lib.litestream.v3.output import Output
from lib.litestream.v3.transaction import Transaction
from lib.report.model import Finding, error

# SQLite stamps page 1 with (the counter it last read) + 1 whenever a WAL transaction
# writes page 1 (pager.c, pagerWalFrames -> pager_write_changecounter), and a writer has
# always read the newest page 1 or written it itself: consecutive versions of page 1 carry
# equal or consecutive counters, so a larger step means transactions are missing.
COUNTER_STEP = 1

# Said of a WAL index whose last frame is not a commit frame; ``findings_stand`` treats the
# finding as a possible upload in flight.
MID_TRANSACTION = "ends inside a transaction"

LZ4_MAX_RATIO = 300  # LZ4's best ratio is ~255:1: a segment inflating further is a bomb


class Replay(Protocol):
    """What an index scan shares with the replay of the whole generation (``lib.litestream.v3.replay.Replay``)."""

    generation: str
    output: Output | None  # None: validate only
    max_bytes: int
    page_size: int | None  # the database's, once known
    applying: bool
    applied: Position  # end of the last applied commit
    last_counter: tuple[int, int] | None  # (page 1 change counter, WAL index) last seen
    listed_ends: dict[int, int]
    index_ends: dict[int, int]
    age_keys: AgeKeys | None  # identities of an age-encrypted replica

    def key(self, index: int, offset: int) -> str: ...

    def report(self, finding: Finding) -> None: ...

    def stop(self) -> str: ...


class IndexScan:
    """One WAL index, fed segment by segment, on behalf of a :class:`Replay`.

    Each damaged segment yields one ``corrupt_object`` finding listing its problems; a
    missing byte range yields one ``wal_gap`` finding naming the segment that should hold
    it. Problems that follow from one already reported (the gap after a truncated segment,
    the frames of an index whose header is bad or missing) are not reported again. The
    frames are cut and judged by a :class:`FrameReader`, applied by a :class:`Transaction`.
    """

    def __init__(self, replay: Replay, index: int):
        self.replay = replay
        self.index = index
        self.length: int | None = 0  # bytes of the index covered so far; None: unknown
        self.frames = FrameReader(replay.page_size)
        self.txn = Transaction(replay.output) if replay.output is not None else None
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

    def segment(self, seg: WalSegment, chunks: Iterator[bytes]) -> None:
        """Judge (and, while the replay applies, apply) one segment, its stored bytes fed as ``chunks``."""
        key = seg.info.key
        self.problems, self.bad_frames, self.first_bad, self.stop_note = [], 0, "", ""
        self._check_offset(seg)
        self.last_key, self.last_offset, self.last_reported = key, seg.offset, False
        self.short = False
        limit = min(max(seg.info.size * LZ4_MAX_RATIO, 1 << 20), self.replay.max_bytes)
        try:
            plain = age.plain_chunks(key, chunks, self.replay.age_keys)
            # a piece is done with when the next is asked for (one buffer)
            for piece in lz4stream.decompress_pieces(key, plain, limit):
                self.length += len(piece)
                self._feed(piece)
        except CorruptObject as exc:
            # The decoded bytes can't be trusted: report the LZ4 problem alone.
            note = self._stop()
            self.replay.report(error("corrupt_object", exc.problem + note, key))
            self.length, self.last_reported = None, True
            return
        if self.bad_frames:
            more = f" ({self.bad_frames} bad frames)" if self.bad_frames > 1 else ""
            self.problems.append(f"{self.first_bad}{more}; litestream restore would silently drop it and "
                                 "every later frame of the index")
        self._check_ending()
        self.last_reported = bool(self.problems)
        if self.problems:
            self.replay.report(error("corrupt_object", f"WAL index {self.index:08x}: "
                                     + "; ".join(self.problems) + self.stop_note, key))

    def _check_offset(self, seg: WalSegment) -> None:
        """Segment offsets must continue the index exactly: no gap, no overlap."""
        if self.length == seg.offset:
            return
        if self.length is None:
            self.frames.has_frames = self.frames.has_frames and self.frames.header is not None  # undecodable (reported)
        elif self.length == 0 and self.frames.header is None:
            self.frames.has_frames = False  # no offset-0 segment, so no header (planning reported it)
            self._stop()
        elif seg.offset > self.length:
            note = self._stop()
            if not self.short:
                self.replay.report(self._gap(seg.offset, note))
        else:
            note = self._stop()
            self.replay.report(error(
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
        return error("wal_gap", message + note, self.replay.key(self.index, self.length))

    def _resync(self, offset: int) -> None:
        """Go on after a discontinuity: nothing before ``offset`` can seed the checksum."""
        self.length = offset
        self.frames.resync(offset)

    def _check_ending(self) -> None:
        """A Litestream segment holds whole frames.

        Whether the index ends on a commit frame is judged at the end of the index: a
        segment may legitimately end inside a transaction that the next segment continues
        (Litestream uploads the shadow WAL while it is still being appended to).
        """
        if not self.frames.is_judging:
            return
        if self.frames.header is None:
            self.problems.append(f"the segment at offset 0 holds {len(self.frames.pending)} bytes, less than the "
                                 "32-byte WAL header")
            self.frames.has_frames = False
        elif self.frames.pending:
            self.problems.append(f"segment ends mid-frame ({len(self.frames.pending)} bytes of a "
                                 f"{self.frames.frame_size}-byte frame): it was truncated")
        else:
            return
        self.short = True
        self.stop_note = self.stop_note or self._stop()
        self._resync(self.length)

    def _stop(self) -> str:
        if self.txn is not None:
            self.txn.drop()
        return self.replay.stop()

    # -- frames

    def _feed(self, piece: memoryview) -> None:
        for frames, scan in self.frames.feed(piece):
            self._take_frame_problems()
            self._judged(frames, scan)
            self.frames.frame_offset += scan.count * self.frames.frame_size
        self._take_frame_problems()
        if self.frames.page_size:
            self.replay.page_size = self.frames.page_size

    def _take_frame_problems(self) -> None:
        """Report what the frame reader found in the header or the first frames; stop if it must."""
        self.problems += self.frames.problems
        for message in self.frames.header_findings:
            self.replay.report(error("corrupt_object", f"WAL index {self.index:08x}: {message}",
                                     self.replay.key(self.index, 0)))
        self.frames.problems, self.frames.header_findings = [], []
        if self.frames.must_stop:
            self.frames.must_stop = False
            self.stop_note = self.stop_note or self._stop()

    def _judged(self, frames: memoryview, scan: wal.FrameScan) -> None:
        first_bad = scan.first_problem()
        if first_bad is not None:
            self._report_frames(scan, first_bad)
        jump = self._check_counters(frames, scan)
        if self.replay.applying:
            self._apply(frames, scan, min(x for x in (first_bad, jump, scan.count) if x is not None))
        if first_bad is not None or jump is not None:
            self.stop_note = self.stop_note or self._stop()
        self.last_commit = bool(scan.commits[-1])

    def _apply(self, frames: memoryview, scan: wal.FrameScan, count: int) -> None:
        done = self.txn.apply(frames, scan, count, self.frames.frame_offset)
        if done.commit_end is not None:
            self.replay.applied = Position(self.replay.generation, self.index, done.commit_end)
        if done.problem:
            self.problems.append(done.problem)
            self.stop_note = self.stop_note or self._stop()

    def _check_counters(self, frames: memoryview, scan: wal.FrameScan) -> int | None:
        """Page 1's change counter may only repeat or step by one (see ``COUNTER_STEP``).

        Returns the number of the first sound page-1 frame that jumps further (transactions
        are missing before it), or None.
        """
        frame_size = self.frames.frame_size
        for n in np.flatnonzero((scan.pgnos == 1) & (scan.problems == 0)).tolist():
            at = n * frame_size + wal.FRAME_HEADER_SIZE + 24
            counter = int.from_bytes(frames[at : at + 4], "big")
            last = self.replay.last_counter
            if last is not None and (counter - last[0]) % (1 << 32) > COUNTER_STEP:
                self._report_jump(last, counter, self.frames.frame_offset + n * frame_size)
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
        self.replay.report(error(
            "wal_gap", f"page 1's change counter jumps from {previous} (WAL index {where:08x}) to {counter} (WAL "
            f"index {self.index:08x}, offset {offset}): transactions between them are missing, most likely the "
            f"last segment(s) of WAL index {end_index:08x} from offset {end} (deleted or never uploaded){note}",
            self.replay.key(end_index, end)))

    def _report_frames(self, scan: wal.FrameScan, first_bad: int) -> None:
        if not self.first_bad:
            offset = self.frames.frame_offset + first_bad * self.frames.frame_size
            reason = wal.PROBLEM_TEXT[int(scan.problems[first_bad])]
            self.first_bad = f"frame at offset {offset} (page {int(scan.pgnos[first_bad])}): {reason}"
        self.bad_frames += scan.bad_count()

    # -- the end

    def finish(self) -> None:
        """End the index: it must end on a commit frame; set the database size to the last
        applied commit, as SQLite's checkpoint does (an unfinished transaction is not applied)."""
        complete = self.replay.listed_ends.get(self.index, self.last_offset) <= self.last_offset
        if self.frames.is_judging and self.frames.header is not None and not self.last_commit \
                and not self.last_reported and complete:
            note = self._stop()
            name = self.last_key.rsplit("/", 1)[-1]
            self.replay.report(error(
                "wal_gap", f"WAL index {self.index:08x} {MID_TRANSACTION} at offset {self.length}: the segment "
                f"continuing its last transaction is missing, or {name} was cut (litestream restore silently drops "
                f"that transaction){note}", self.last_key))
        if self.txn is not None:
            self.txn.drop()
            if self.txn.commit_pages:
                self.replay.output.set_pages(self.txn.commit_pages)
