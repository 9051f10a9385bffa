"""PRAGMA integrity_check on the restored copy, opened read-only and immutable.

Indexes may use collations that only the writing application defines (``COLLATE
my_collation``); SQLite refuses to check a database it cannot compare keys of. Such an
index is checked with a stand-in collation for everything but its order, and what the
stand-in cannot judge (entries missing from it, their count) is left out of the verdict
and named in a warning.
"""
from __future__ import annotations

import re
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from lib.report.model import Finding, error, warning

MAX_INTEGRITY_ROWS_REPORTED = 20

BUILTIN_COLLATIONS = frozenset({"binary", "nocase", "rtrim"})


@contextmanager
def open_readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only, immutable, query-only connection: checking creates no ``-wal``/``-shm`` files."""
    uri = f"file:{quote(str(path))}?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True, check_same_thread=False)) as conn:
        conn.execute("PRAGMA query_only = 1")
        yield conn


def integrity(conn: sqlite3.Connection) -> list[Finding]:
    """``PRAGMA integrity_check``, reading every row it returns (up to SQLite's 100).

    Registers stand-ins on ``conn`` for collations the schema names and SQLite lacks; use
    a connection of its own, as queries through a stand-in could return wrong rows.
    """
    try:
        foreign = foreign_collations(conn)
        for name in sorted({c for names in foreign.values() for c in names}):
            conn.create_collation(name, _stand_in)
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        return [error("integrity", f"restored database cannot be checked: {exc}")]
    problems = [p for p in integrity_problems(rows) if not _judged_by_stand_in(p, foreign)] if rows != ["ok"] else []
    findings = [_foreign_collation_warning(foreign)] if foreign else []
    if not problems:
        return findings
    shown = problems[:MAX_INTEGRITY_ROWS_REPORTED]
    more = f" (+{len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
    return [error("integrity", f"PRAGMA integrity_check reported {len(problems)} problem(s): "
                  + "; ".join(shown) + more)] + findings


def integrity_problems(rows: list[str]) -> list[str]:
    """One entry per problem: SQLite may pack several, newline-separated, into one row,
    under a ``*** in database main ***`` heading that is not a problem itself."""
    lines = [line.strip() for row in rows for line in str(row).splitlines()]
    return [line for line in lines if line and not line.startswith("*** in database")]


def foreign_collations(conn: sqlite3.Connection) -> dict[str, set[str]]:
    """Index name -> the collations it uses that SQLite does not define (application-defined ones)."""
    indexes = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    foreign: dict[str, set[str]] = {}
    for index in indexes:
        names = {str(r[4]) for r in conn.execute("SELECT * FROM pragma_index_xinfo(?)", (index,)) if r[4]}
        unknown = {n for n in names if n.lower() not in BUILTIN_COLLATIONS}
        if unknown:
            foreign[index] = unknown
    return foreign


def _stand_in(a: str, b: str) -> int:
    """Binary order, in place of a collation the application defines."""
    return (a > b) - (a < b)


_INDEX_PROBLEM = re.compile(r"(?:missing from index|wrong # of entries in index|non-unique entry in index) (\S+)")


def _judged_by_stand_in(problem: str, foreign: dict[str, set[str]]) -> bool:
    """A problem about an index's entries, for an index SQLite could only compare with a stand-in."""
    match = _INDEX_PROBLEM.search(problem)
    return bool(match) and match.group(1) in foreign


def _foreign_collation_warning(foreign: dict[str, set[str]]) -> Finding:
    described = ", ".join(f"{index} ({', '.join(sorted(names))})" for index, names in sorted(foreign.items()))
    return warning("integrity", f"index(es) {described} use collations only the application defines: their "
                   "pages were checked, whether they hold every row of their table was not")
