"""The rows the benchmark's databases hold: random-ish, about 2.7x compressible with LZ4."""
from __future__ import annotations

import random
import sqlite3
from pathlib import Path

ROW_RANDOM_BYTES = 80  # per row, plus ~300 bytes of JSON-ish text: ~2.7x LZ4 ratio, like the 213/79 MB
FILL_ROWS_PER_TXN = 5000
ROW_BYTES_ON_DISK = 420  # a row plus its index entry, roughly


class Writer:
    """Writes random-ish rows (about 2.7x compressible) into one database."""

    def __init__(self, path: Path, seed: int):
        self.rng = random.Random(seed)
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, "
                         "name TEXT NOT NULL, payload BLOB NOT NULL)")
        self.con.execute("CREATE INDEX IF NOT EXISTS items_name ON items (name)")
        self.batch = 0
        self.words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()

    def _row(self) -> tuple:
        rng, words = self.rng, self.words
        a, b, c = rng.choice(words), rng.choice(words), rng.choice(words)
        doc = (f'{{"status": "active", "plan": "{a}", "region": "eu-west-{rng.randint(1, 3)}", "tags": ["{b}", '
               f'"{c}"], "owner": "{a}.{b}@example.com", "note": "written by the restorable benchmark; random-ish '
               f'so the database compresses about like an application database", "n": {rng.randint(0, 10**6)}}}')
        return self.batch, f"item-{rng.getrandbits(40):012x}", rng.randbytes(ROW_RANDOM_BYTES) + doc.encode()

    def insert(self, rows: int) -> None:
        self.batch += 1
        self.con.execute("BEGIN")
        self.con.executemany("INSERT INTO items (batch, name, payload) VALUES (?, ?, ?)",
                             [self._row() for _ in range(rows)])
        self.con.execute("COMMIT")

    def churn(self, inserts: int, updates: int) -> None:
        """One transaction: new rows plus updates of rows spread over the whole file."""
        self.batch += 1
        top = self.con.execute("SELECT max(id) FROM items").fetchone()[0] or 1
        self.con.execute("BEGIN")
        self.con.executemany("INSERT INTO items (batch, name, payload) VALUES (?, ?, ?)",
                             [self._row() for _ in range(inserts)])
        self.con.executemany("UPDATE items SET batch = ?, payload = ? WHERE id = ?",
                             [(self.batch, self._row()[2], self.rng.randint(1, top)) for _ in range(updates)])
        self.con.execute("COMMIT")

    def fill_to(self, size_bytes: int) -> None:
        self.con.execute("PRAGMA synchronous=OFF")
        rows = max(50, min(FILL_ROWS_PER_TXN, size_bytes // ROW_BYTES_ON_DISK // 20))
        while self.size() < size_bytes:
            self.insert(rows)
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size(self) -> int:
        pages = self.con.execute("PRAGMA page_count").fetchone()[0]
        return pages * self.con.execute("PRAGMA page_size").fetchone()[0]

    def summary(self) -> tuple[int, int, int]:
        return self.con.execute("SELECT count(*), coalesce(sum(batch), 0), coalesce(max(id), 0) FROM items").fetchone()

    def close(self) -> None:
        self.con.close()


def summary_of(path: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*), coalesce(sum(batch), 0), coalesce(max(id), 0) FROM items").fetchone()
    finally:
        con.close()
