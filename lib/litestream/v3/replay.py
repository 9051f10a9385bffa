"""Replaying v0.3 WAL indexes onto the restored snapshot, index by index, validating every segment.

The work on one index is :class:`lib.litestream.v3.index_scan.IndexScan`'s; this module
keeps what spans indexes: where applying stopped, page 1's change counter, the size each
index ended at, and the check that the WAL reaches the snapshot's state.
"""
from __future__ import annotations

from typing import Iterator

from lib.litestream.v3.age import AgeKeys
from lib.litestream.v3.index_scan import MID_TRANSACTION, IndexScan
from lib.litestream.v3.layout import Position, WalSegment, wal_key
from lib.litestream.v3.output import Output
from lib.report.model import Finding

__all__ = ["MID_TRANSACTION", "Replay", "WAL_PREFETCH_BYTES", "is_older_counter"]

# Compressed WAL downloaded ahead of the replay: it runs while the snapshot streams, so
# this, the staged pages and the snapshot's buffers are what a restore holds in memory.
WAL_PREFETCH_BYTES = 4 << 20


class Replay:
    """Applies WAL indexes S..max to the output while they are sound, and validates all of them.

    Applying stops for good at the first problem (damage, gap, missing index): the output
    is then the database as of the last sound commit, a consistent earlier state, and
    ``stopped_at`` says where. Validation goes on to the last segment, so every damaged
    or missing object is reported. ``output`` is None when there is no usable snapshot:
    everything is validated, nothing applied.
    """

    def __init__(self, generation: str, prefix: str, snapshot_index: int, output: Output | None,
                 findings: list[Finding], listed_ends: dict[int, int] | None = None, snapshot_counter: int = 0,
                 *, max_bytes: int, age_keys: AgeKeys | None = None):
        self.generation = generation
        self.age_keys = age_keys  # identities of an age-encrypted replica
        # index -> offset of its last segment in the whole listing: an index the plan ends
        # earlier (a point-in-time target) may stop inside a transaction without damage
        self.listed_ends = listed_ends or {}
        self.prefix = prefix
        self.output = output
        self.max_bytes = max_bytes  # the restore size ceiling, also on what one segment may inflate to
        self.findings = findings
        self.page_size = output.page_size if output else None  # of the database; WAL headers must agree
        self.applying = output is not None
        self.applied = Position(generation, snapshot_index, 0)  # end of the last applied commit
        self.stopped_at: Position | None = None
        self.snapshot_index = snapshot_index
        self.snapshot_counter = snapshot_counter  # page 1's change counter in the snapshot
        self.behind_snapshot: tuple[int, int, int] | None = None  # (counter reached, snapshot's, WAL end)
        self.next_index = snapshot_index
        self.scan: IndexScan | None = None
        self.last_counter: tuple[int, int] | None = None  # (page 1 change counter, WAL index) last seen
        self.index_ends: dict[int, int] = {}  # index -> bytes of it that were listed

    def key(self, index: int, offset: int) -> str:
        """The key of this generation's segment at ``index``/``offset`` (to name one that is missing)."""
        return wal_key(self.prefix, self.generation, index, offset)

    def report(self, finding: Finding) -> None:
        self.findings.append(finding)

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

    def segment(self, seg: WalSegment, chunks: Iterator[bytes]) -> None:
        """Feed one segment (its stored, compressed bytes as ``chunks``), in plan order."""
        if self.scan is None or seg.index != self.scan.index:
            self._finish_index()
            if seg.index != self.next_index:
                self.stop()  # a whole index is missing: planning reported it
            self.scan = IndexScan(self, seg.index)
            self.next_index = seg.index + 1
        self.scan.segment(seg, chunks)

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
            self.stopped_at = Position(self.generation, self.snapshot_index, 0)


def is_older_counter(a: int, b: int) -> bool:
    """True when 32-bit change counter ``a`` comes before ``b`` (serial-number arithmetic)."""
    return 0 < (b - a) % (1 << 32) < (1 << 31)
