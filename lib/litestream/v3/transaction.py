"""Applying one WAL index's sound frames to the output, a whole transaction at a time.

A transaction's pages are held until its commit frame, so a transaction cut off by
damage is never half applied, however big: in memory while they fit beside the staged
pages (``Output.make_room``), in a scratch file beyond (``lib.litestream.v3.spill``).
Each commit's database size is checked against SQLite's own rule before anything of it
is written.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from lib.litestream.v3 import wal
from lib.litestream.v3.output import Output
from lib.litestream.v3.spill import Spill

# SQLite's checkpoint (wal.c, walCheckpoint) calls a WAL corrupt when the database size
# its last commit declares exceeds the database file's size plus the frames of the WAL
# plus this much (the most the lock-byte page can add).
PENDING_PAGE_SLACK_BYTES = 65536


@dataclass
class Applied:
    """What one call to :meth:`Transaction.apply` did."""

    commit_end: int | None = None  # index offset just after the last commit frame applied
    problem: str | None = None  # why applying must stop (a frame set beyond what is allowed)


class Transaction:
    """The open transaction of one WAL index and the size its last applied commit set."""

    def __init__(self, output: Output):
        self.output = output
        # pages of the open transaction, by page number: copies, as the frames are views into
        # a decompression buffer that is reused for the next piece
        self.held: dict[int, bytes] = {}
        self.held_bytes = 0
        self.shown = 0  # the first this many held pages were passed to ``output.make_room``
        self.spilled = Spill(output.path.parent, output.page_size)  # older pages of the open transaction
        self.commit_pages = 0  # database size after the last applied commit of this index
        self.room = output.room()  # bytes that may be held before the output must make room

    def apply(self, frames: memoryview, scan: wal.FrameScan, count: int, frame_offset: int) -> Applied:
        """Apply the first ``count`` (sound) frames of ``frames``, which start at ``frame_offset`` in the index."""
        done = Applied()
        page_size = self.output.page_size
        size = wal.FRAME_HEADER_SIZE + page_size
        pgnos, commits = scan.pgnos[:count].tolist(), scan.commits[:count].tolist()
        # frame by frame only when some frame of the run goes beyond the ceiling
        check_ceiling = count > 0 and max(max(pgnos), max(commits)) * page_size > self.output.limit
        for i, (pgno, commit) in enumerate(zip(pgnos, commits)):
            offset = frame_offset + i * size
            done.problem = self._beyond_ceiling(pgno, commit, offset) if check_ceiling else None
            if commit and not done.problem:
                done.problem = self._beyond_frames(commit, offset + size)
            if done.problem:
                self.drop()
                return done
            start = i * size + wal.FRAME_HEADER_SIZE
            self.held[pgno] = bytes(frames[start : start + page_size])
            self.held_bytes += page_size
            if commit:
                self._write_held()
                self.commit_pages = commit
                done.commit_end = offset + size
            elif self.held_bytes >= self.room:
                self._make_room()
        return done

    def _beyond_ceiling(self, pgno: int, commit: int, offset: int) -> str | None:
        if max(pgno, commit) * self.output.page_size > self.output.limit:
            return f"frame at offset {offset} sets page {max(pgno, commit)}, beyond the restore size ceiling"
        return None

    def _beyond_frames(self, commit: int, end: int) -> str | None:
        """SQLite's rule: a commit may not size the database past what the file and the frames
        so far can justify (``end`` is the index offset after the commit frame)."""
        page_size = self.output.page_size
        frames = (end - wal.WAL_HEADER_SIZE) // (wal.FRAME_HEADER_SIZE + page_size)
        grown = commit * page_size - PENDING_PAGE_SLACK_BYTES - frames * page_size  # the file must hold this much
        if grown <= self.output.size_before_index(exact=False):
            return None
        base = self.output.size_before_index(exact=True)  # waits for the snapshot: only a suspect commit does
        if grown <= base:
            return None
        return (f"commit frame at offset {end - wal.FRAME_HEADER_SIZE - page_size} sets the database size to {commit} "
                f"pages, more than the {base // page_size} pages before the index and its {frames} frames can "
                "hold: the WAL is malformed (SQLite's checkpoint and litestream restore refuse it)")

    def _make_room(self) -> None:
        """Keep the held pages within what the staged ones leave of the budget: committed
        pages are written out first; when the transaction alone fills it, its pages move to
        the spill file."""
        fresh = itertools.islice(self.held, self.shown, None)  # held pages the output has not been told of
        self.room = self.output.make_room(self.held_bytes, fresh)
        self.shown = len(self.held)
        if self.held_bytes >= self.room:
            self.spilled.add(self.held)
            self.held = {}
            self.held_bytes = self.shown = 0

    def _write_held(self) -> None:
        """Apply the committed transaction: the spilled pages, then the newer ones held (those
        join the spill first when there is one: held beside a stage refilled from the spill,
        they would take the budget twice)."""
        if len(self.spilled):
            self.spilled.add(self.held)
            self.held = {}
            self.output.write_pages(self.spilled.pages())
        else:
            self.output.write_pages(self.held.items())
        self.drop()

    def drop(self) -> None:
        """Forget the open transaction (not applied, or applied already)."""
        self.held = {}
        self.held_bytes = self.shown = 0
        if len(self.spilled):
            self.spilled.clear()
        self.room = self.output.room()
