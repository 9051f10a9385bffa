"""PRAGMA integrity_check on the restored copy, opened read-only and immutable."""
from __future__ import annotations

import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import sqlite_utils

from lib.report.model import Finding, error

MAX_INTEGRITY_ROWS_REPORTED = 20


@contextmanager
def open_readonly(path: Path) -> Iterator[sqlite_utils.Database]:
    """A sqlite-utils Database on a read-only, immutable, query-only connection."""
    uri = f"file:{quote(str(path))}?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True, check_same_thread=False)) as conn:
        conn.execute("PRAGMA query_only = 1")
        yield sqlite_utils.Database(conn)


def integrity(db: sqlite_utils.Database) -> list[Finding]:
    """``PRAGMA integrity_check``, reading every row it returns (up to SQLite's 100)."""
    try:
        rows = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        return [error("integrity", f"restored database cannot be checked: {exc}")]
    if rows == ["ok"]:
        return []
    problems = integrity_problems(rows)
    shown = problems[:MAX_INTEGRITY_ROWS_REPORTED]
    more = f" (+{len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
    return [error("integrity", f"PRAGMA integrity_check reported {len(problems)} problem(s): "
                  + "; ".join(shown) + more)]


def integrity_problems(rows: list[str]) -> list[str]:
    """One entry per problem: SQLite may pack several, newline-separated, into one row,
    under a ``*** in database main ***`` heading that is not a problem itself."""
    lines = [line.strip() for row in rows for line in str(row).splitlines()]
    return [line for line in lines if line and not line.startswith("*** in database")]
