"""Checks on a restored database; each returns findings and raises only when it can't run.

The restored file is opened read-only and immutable (``?immutable=1``) so checking it
creates no ``-wal``/``-shm`` files and cannot change it; probes additionally run with
``PRAGMA query_only``.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import sqlite_utils

from lib.durations import format_duration
from lib.report import Finding, error, warning

LITESTREAM_TABLES = ("_litestream_seq", "_litestream_lock")
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


def count_rows(db: sqlite_utils.Database) -> tuple[dict[str, int], dict[str, int]]:
    """Row counts of the user's tables and, separately, of Litestream's own tables."""
    tables: dict[str, int] = {}
    litestream: dict[str, int] = {}
    for name in db.table_names():
        count = db[name].count
        (litestream if name in LITESTREAM_TABLES else tables)[name] = count
    return tables, litestream


def staleness(last_backup_at: datetime | None, now: datetime, max_age: float, what: str = "newest backup object") -> list[Finding]:
    """``stale`` when the newest object is older than ``max_age`` seconds."""
    if last_backup_at is None:
        return []
    age = (now - last_backup_at).total_seconds()
    if age > max_age:
        return [error("stale", f"{what} is {format_duration(age)} old (limit {format_duration(max_age)}): "
                      "is litestream still running and able to write to the bucket?")]
    return []


def expected_tables(tables: dict[str, int], expected: tuple[str, ...]) -> list[Finding]:
    missing = [t for t in expected if t not in tables]
    if not missing:
        return []
    return [error("row_count", f"expected table(s) missing from the backup: {', '.join(missing)}")]


def minimum_rows(tables: dict[str, int], minimums: dict[str, int]) -> list[Finding]:
    findings = []
    for table, minimum in minimums.items():
        count = tables.get(table)
        if count is None:
            findings.append(error("row_count", f"table {table} (min-rows {minimum}) is missing from the backup"))
        elif count < minimum:
            findings.append(error("row_count", f"table {table} has {count} rows in the backup, expected at least {minimum}"))
    return findings


# A probe may read and compute, nothing else: no ATTACH (another file), no PRAGMA (query_only off),
# no writes, no extension loading. sqlite3's authorizer is consulted for every statement prepared.
_USER_SQL_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                               sqlite3.SQLITE_RECURSIVE})


def _user_sql_authorizer(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _USER_SQL_ACTIONS else sqlite3.SQLITE_DENY


def query_user_sql(db: sqlite_utils.Database, sql: str):
    """First row of the user's SQL, run under an authorizer that allows reading only."""
    db.conn.set_authorizer(_user_sql_authorizer)
    try:
        return db.execute(sql).fetchone()
    finally:
        db.conn.set_authorizer(None)


def probes(db: sqlite_utils.Database, probe_list) -> list[Finding]:
    """Each probe's SQL must return one truthy value."""
    findings = []
    for probe in probe_list:
        try:
            row = query_user_sql(db, probe.sql)
        except sqlite3.Error as exc:
            findings.append(error("probe", f"probe {probe.name!r} failed to run: {exc}"))
            continue
        if row is None or not row[0]:
            value = None if row is None else row[0]
            findings.append(error("probe", f"probe {probe.name!r} returned {value!r}, expected a true value"))
    return findings


def freshness(db: sqlite_utils.Database, probe, now: datetime) -> list[Finding]:
    """The freshness query's single timestamp must be younger than its limit."""
    try:
        row = query_user_sql(db, probe.sql)
    except sqlite3.Error as exc:
        return [error("probe", f"freshness query failed to run: {exc}")]
    value = row[0] if row else None
    moment = to_datetime(value)
    if moment is None:
        return [error("stale", f"freshness query returned {value!r}, not a timestamp: no data written yet?")]
    return staleness(moment, now, probe.max_age_seconds, "newest row of the freshness query")


def to_datetime(value) -> datetime | None:
    """Interpret a SQL value as a UTC time: ISO 8601 text, or Unix seconds / milliseconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    if isinstance(value, str):
        text = value.strip().replace(" ", "T", 1)
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return None


def note(message: str) -> Finding:
    return warning("probe", message)
