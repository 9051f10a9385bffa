"""Applying one WAL index's sound frames to the output, a whole transaction at a time.

A transaction's pages are held until its commit frame, so a transaction cut off by
damage is never half applied. Each commit's database size is checked against SQLite's
own rule before anything of it is written.
"""
from __future__ import annotations

from dataclasses import dataclass

from lib.litestream.v3 import wal
from lib.litestream.v3.snapshot import Output

# Pages of a transaction are held until its commit frame; a transaction bigger than this
# is written through.
HOLD_LIMIT_BYTES = 64 << 20

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
        self.commit_pages = 0  # database size after the last applied commit of this index
        self.room = output.room()  # bytes that may be held before the output must make room

    def apply(self, frames: memoryview, scan: wal.FrameScan, count: int, frame_offset: int) -> Applied:
        """Apply the first ``count`` (sound) frames of ``frames``, which start at ``frame_offset`` in the index."""
        done = Applied()
        page_size = self.output.page_size
        size = wal.FRAME_HEADER_SIZE + page_size
        for i, (pgno, commit) in enumerate(zip(scan.pgnos[:count].tolist(), scan.commits[:count].tolist())):
            offset = frame_offset + i * size
            done.problem = self._beyond_ceiling(pgno, commit, offset)
            if commit and not done.problem:
                done.problem = self._beyond_frames(commit, offset + size)
            if done.problem:
                self.drop()
                return done
            self.held[pgno] = bytes(frames[i * size + wal.FRAME_HEADER_SIZE : (i + 1) * size])
            self.held_bytes += page_size
            if commit:
                self._write_held()
                self.commit_pages = commit
                done.commit_end = offset + size
            elif self.held_bytes > HOLD_LIMIT_BYTES:
                self._write_held()  # a huge transaction: written through, see HOLD_LIMIT_BYTES
            elif self.held_bytes >= self.room:
                self.room = self.output.make_room(self.held_bytes)
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

    def _write_held(self) -> None:
        for pgno, page in self.held.items():
            self.output.write_page(pgno, page)
        self.drop()
        self.room = self.output.room()

    def drop(self) -> None:
        """Forget the open transaction (it is not applied)."""
        self.held = {}
        self.held_bytes = 0
