"""Memory of the v0.3 WAL replay: an open transaction's pages and the staged ones share one budget.

The WAL here is SQLite's own (a real database in WAL mode, checkpoints off), replayed onto
a copy of the database as it was before it, and must give exactly SQLite's checkpoint.
"""
from __future__ import annotations

import random
import sqlite3
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import lz4.frame
import pytest

from lib.litestream import sqlite as sqlite_facts
from lib.litestream.lz4 import iter_bytes
from lib.litestream.pages import STAGE_LIMIT_BYTES
from lib.litestream.v3.layout import WalSegment
from lib.litestream.v3.replay import MID_TRANSACTION, Replay
from lib.litestream.v3.output import Output
from lib.litestream.v3.snapshot import SnapshotHeader
from lib.storage.base import ObjectInfo

PAGE = 4096
MiB = 1 << 20
GENERATION = "0123456789abcdef"


class SqliteWal:
    """A database, a copy of it as the "snapshot", and the WAL SQLite wrote after it."""

    def __init__(self, tmp_path: Path, transactions: list[int], seed: int = 5, compressible: bool = False):
        self.db = tmp_path / "src.db"
        self.compressible = compressible  # rows that LZ4 shrinks tenfold (big WALs, little memory in the test)
        con = sqlite3.connect(self.db, isolation_level=None)
        con.execute(f"PRAGMA page_size={PAGE}")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        rng = random.Random(seed)
        self._insert(con, rng, 2 * MiB)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.snapshot = self.db.read_bytes()
        for size in transactions:
            self._insert(con, rng, size)
        self.wal = (tmp_path / "src.db-wal").read_bytes()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        self.checkpointed = self.db.read_bytes()  # what the replay must give

    def _insert(self, con: sqlite3.Connection, rng: random.Random, size: int) -> None:
        """One transaction of ``size`` bytes of new rows, plus updates scattered over older ones."""
        con.execute("BEGIN")
        con.executemany("INSERT INTO t (v) VALUES (?)", [(self._row(rng),) for _ in range(size // 1000)])
        (top,) = con.execute("SELECT max(id) FROM t").fetchone()
        con.executemany("UPDATE t SET v = ? WHERE id = ?",
                        [(self._row(rng), rng.randint(1, top)) for _ in range(size // 20000)])
        con.execute("COMMIT")

    def _row(self, rng: random.Random) -> bytes:
        return rng.randbytes(100) * 10 if self.compressible else rng.randbytes(1000)


def segments(source: SqliteWal, frames: int = 1000) -> list[tuple[WalSegment, bytes]]:
    """The WAL as Litestream segments of ``frames`` frames each, stored as Litestream stores
    them (LZ4 frames of independent 4 MiB blocks with a content checksum)."""
    size = 24 + PAGE
    cuts = [0, *range(32 + frames * size, len(source.wal), frames * size), len(source.wal)]
    stamp = datetime(2026, 12, 3, tzinfo=timezone.utc)
    out = []
    for offset, end in zip(cuts, cuts[1:]):
        stored = lz4.frame.compress(source.wal[offset:end], block_linked=False,
                                    block_size=lz4.frame.BLOCKSIZE_MAX4MB, content_checksum=True)
        key = f"db/generations/{GENERATION}/wal/00000000_{offset:08x}.wal.lz4"
        out.append((WalSegment(GENERATION, 0, offset, ObjectInfo(key, len(stored), stamp)), stored))
    return out


def replay(source: SqliteWal, stored: list[tuple[WalSegment, bytes]], out: Path) -> list:
    """Replay the ``stored`` segments onto a copy of the snapshot at ``out``; return the findings."""
    out.write_bytes(source.snapshot)
    head = source.snapshot[: sqlite_facts.HEADER_SIZE]
    header = SnapshotHeader(PAGE, sqlite_facts.change_counter_of(head), sqlite_facts.declared_pages(head))
    output = Output(out, header, limit=1 << 40)
    findings: list = []
    rep = Replay(GENERATION, "db/", 0, output, findings, max_bytes=1 << 40)
    for seg, data in stored:
        rep.segment(seg, iter_bytes(data, MiB))
    rep.finish()
    output.close()
    return findings


@pytest.fixture(scope="module")
def big_transactions(tmp_path_factory) -> SqliteWal:
    # Transactions of about half the stage's budget: before, each was held whole beside a full stage.
    return SqliteWal(tmp_path_factory.mktemp("wal"), [STAGE_LIMIT_BYTES // 2] * 6)


def traced_replay(source: SqliteWal, stored: list[tuple[WalSegment, bytes]], out: Path) -> tuple[list, int, int]:
    """``replay`` under tracemalloc: its findings, the bytes traced when it started, and the peak."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        findings = replay(source, stored, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return findings, before, peak


def test_replay_gives_sqlites_own_checkpoint(big_transactions, tmp_path):
    out = tmp_path / "out.db"
    assert replay(big_transactions, segments(big_transactions), out) == []
    assert out.read_bytes() == big_transactions.checkpointed


def test_open_transaction_and_staged_pages_never_exceed_the_stage_budget(big_transactions, tmp_path):
    """The pages a replay keeps (staged, and those of the transaction not committed yet)
    stay within ``STAGE_LIMIT_BYTES``; besides them it holds the stored bytes of the LZ4 block
    being decoded (up to 4 MiB) and a few frames (the 4 MiB buffer blocks are decoded into is
    reused from an earlier replay on the same thread)."""
    stored = segments(big_transactions)
    replay(big_transactions, stored, tmp_path / "warm.db")  # this thread's LZ4 buffer, numpy's caches
    out = tmp_path / "out.db"
    findings, before, peak = traced_replay(big_transactions, stored, out)
    assert findings == []
    assert out.read_bytes() == big_transactions.checkpointed
    # Transactions of half the budget held beside a full stage came to ~1.5x it (28.6 MiB).
    assert peak - before < STAGE_LIMIT_BYTES + 5 * MiB, f"replay peaked at {(peak - before) / MiB:.1f} MiB"


def test_a_segment_boundary_inside_a_transaction_changes_nothing(big_transactions, tmp_path):
    """Segments cut anywhere (Litestream uploads the WAL while a transaction is appended)."""
    out = tmp_path / "out.db"
    assert replay(big_transactions, segments(big_transactions, frames=777), out) == []
    assert out.read_bytes() == big_transactions.checkpointed


# Beyond the 64 MiB a replay once held of a transaction before writing it through.
HUGE = 72 * MiB


@pytest.fixture(scope="module")
def huge_transaction(tmp_path_factory) -> tuple[SqliteWal, bytes]:
    """A WAL of a small transaction then a huge one, and the database after the small one alone."""
    sizes = [MiB, HUGE]
    source = SqliteWal(tmp_path_factory.mktemp("huge"), sizes, compressible=True)
    return source, SqliteWal(tmp_path_factory.mktemp("small"), sizes[:1], compressible=True).checkpointed


def test_a_huge_transaction_cut_short_is_not_applied(huge_transaction, tmp_path):
    """The segment holding the end of a huge transaction never reached the bucket: the restore
    is the database before that transaction, exactly, never part of it (SQLite's checkpoint
    ignores frames after the last commit too)."""
    source, before_huge = huge_transaction
    stored = segments(source)
    assert HUGE // (24 + PAGE) > 1000 * 2  # the transaction spans many segments
    out = tmp_path / "out.db"
    findings = replay(source, stored[:-1], out)
    assert [(f.kind, MID_TRANSACTION in f.message, f.object) for f in findings] == [
        ("wal_gap", True, stored[-2][0].info.key)]
    assert out.read_bytes() == before_huge


def test_a_huge_transaction_is_applied_whole_within_the_budget(huge_transaction, tmp_path):
    """A transaction several times the stage's budget: SQLite's checkpoint, byte for byte, and
    the replay's memory stays within the budget (the pages wait in a scratch file)."""
    source, _ = huge_transaction
    stored = segments(source)
    replay(source, stored[:1], tmp_path / "warm.db")
    out = tmp_path / "out.db"
    findings, _, peak = traced_replay(source, stored, out)
    assert findings == []
    assert out.read_bytes() == source.checkpointed
    assert peak < STAGE_LIMIT_BYTES + 5 * MiB, f"replay peaked at {peak / MiB:.1f} MiB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.db", "warm.db"]  # the spill left nothing
