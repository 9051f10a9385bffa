"""The scratch database file the v0.3 WAL is replayed into, while the snapshot still streams into it.

Committed pages are staged (``lib.litestream.pages.PageStage``) and written in page order;
nothing is written before the snapshot is complete.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from lib.litestream import sqlite
from lib.litestream.pages import STAGE_LIMIT_BYTES, PageFile, PageStage
from lib.litestream.v3.snapshot import SnapshotHeader

# The fraction of the staged pages, the most recently staged, that a full stage keeps: on a
# WAL-heavy replica they are the pages rewritten again and again (writes per restored page
# fell by about a third against writing the whole stage each time).
STAGE_KEEP = 0.75

# Of what an open transaction leaves of the stage's budget, the fraction the stage keeps when the
# transaction grows into it (``Output.make_room``): a transaction grows a page at a time, so
# writing a little often keeps more hot pages staged, and writes fewer in all, than STAGE_KEEP.
ROOM_KEEP = 0.9


class Output:
    """The scratch database file the WAL is replayed into, written at page offsets.

    Committed pages are staged (the last version of each page wins) and written in page
    order (``lib.litestream.pages``). Resizes are staged too, so pages are written once
    per ``STAGE_LIMIT_BYTES`` instead of once per WAL index. Nothing is written until
    ``snapshot_done()`` returns (it raises when the snapshot is unusable).
    """

    def __init__(self, path: Path, header: SnapshotHeader, limit: int, snapshot_done=lambda: None):
        self.path = path
        self.page_size = header.page_size
        self.limit = limit
        self.file = PageFile.open(path)
        self._declared_pages = header.pages or 0
        self._snapshot_done = snapshot_done
        self._snapshot_bytes: int | None = None
        self._stage = PageStage(header.page_size)
        self._shortest: int | None = None  # fewest pages the file was cut to since the last flush
        self._pages: int | None = None  # the size last set, in pages
        self._checkpointed: int | None = None  # the size set at the end of the last WAL index, in pages

    @property
    def fd(self) -> int:
        """The file's read-write descriptor (-1 once closed)."""
        return self.file.fd

    def write_pages(self, pages: Iterable[tuple[int, bytes]]) -> None:
        """Stage each (page number, page bytes) in turn (the last version of a page wins), writing out
        the oldest staged pages whenever the stage is full."""
        stage = self._stage
        for pgno, page in pages:
            stage.put(pgno, page)
            if stage.is_full():
                self.flush(keep=STAGE_KEEP)

    def make_room(self, held: int, rewritten: Iterable[int] = ()) -> int:
        """Write out the oldest staged pages so that they and ``held`` bytes of a transaction
        not committed yet fit in the stage's budget (``STAGE_LIMIT_BYTES``) together; return
        how many bytes the transaction may hold before it asks again.

        Why one budget for both: the stage is most of what a replay holds, and a transaction's
        pages join it at its commit anyway; held beside a full stage, they came on top of the
        budget. ``rewritten`` are pages the transaction holds (new
        since the last call): their staged versions are kept longest, as their commit
        supersedes them and writing them would be wasted.
        """
        for pgno in rewritten:
            page = self._stage.get(pgno)
            if page is not None:
                self._stage.put(pgno, page)  # now the most recently staged
        if len(self._stage) and len(self._stage) * self.page_size + held >= STAGE_LIMIT_BYTES:
            keep = int(max(STAGE_LIMIT_BYTES - held, 0) * ROOM_KEEP) // self.page_size
            self._flush(len(self._stage) - keep)
        return self.room()

    def room(self) -> int:
        """How many bytes a transaction may hold before it asks :meth:`make_room` (what the staged pages leave)."""
        return STAGE_LIMIT_BYTES - len(self._stage) * self.page_size

    def set_pages(self, pages: int) -> None:
        """Resize the database to ``pages`` pages at the end of a WAL index (staged: applied in order at the next flush)."""
        self._stage.drop_above(pages)
        self._shortest = pages if self._shortest is None else min(self._shortest, pages)
        self._pages = self._checkpointed = pages

    def size_before_index(self, exact: bool) -> int:
        """The database's size in bytes before the WAL index being replayed (SQLite's "current size" at checkpoint).

        After a WAL index it is the size that index set; before, the snapshot's size. Unless
        ``exact``, the snapshot's header size stands in for it (a lower bound, known at once);
        ``exact`` waits for the snapshot to be complete.
        """
        if self._checkpointed is not None:
            return self._checkpointed * self.page_size
        if not exact:
            return self._declared_pages * self.page_size
        self._snapshot_complete()
        return self._snapshot_bytes

    def change_counter(self) -> int:
        """The file change counter in the database header (page 1, offset 24)."""
        page1 = self._stage.get(1)
        if page1 is not None:
            return sqlite.change_counter_of(page1)
        self.flush()
        return sqlite.change_counter_of(os.pread(self.fd, sqlite.HEADER_SIZE, 0))

    def flush(self, keep: float = 0.0) -> None:
        """Apply the staged resizes and pages (after the snapshot is complete), all but the
        ``keep`` fraction of the pages staged most recently (see ``PageStage.write_oldest``).

        Resizes first: every staged page is within the size last set (``set_pages`` drops
        the others), so a page kept and written later still lands inside the file.
        """
        self._flush(len(self._stage) - int(len(self._stage) * keep))

    def _flush(self, count: int) -> None:
        """``flush``, writing the ``count`` pages staged least recently."""
        self._snapshot_complete()
        if self._shortest is not None:
            # Cutting to the shortest size first zeroes what a shrink dropped before a later growth.
            os.ftruncate(self.fd, self._shortest * self.page_size)
            if self._pages != self._shortest:
                os.ftruncate(self.fd, self._pages * self.page_size)
            self._shortest = self._pages = None
        if count < len(self._stage):
            self._stage.write_oldest(self.file.pwritev, count)
        else:
            self._stage.write(self.file.pwritev)

    def _snapshot_complete(self) -> None:
        if self._snapshot_bytes is None:
            self._snapshot_done()
            self._snapshot_bytes = os.fstat(self.fd).st_size

    def close(self) -> None:
        """Flush and close; when flushing fails the file stays open for ``abandon()``."""
        self.flush()
        self.abandon()

    def abandon(self) -> None:
        """Close without writing what is staged (the restore failed); idempotent."""
        self._stage.clear()
        self.file.close()
