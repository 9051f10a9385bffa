"""The user's SQL probes, run under a read-only SQLite authorizer."""
from __future__ import annotations

import sqlite3

import sqlite_utils

from lib.report.model import Finding, error

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
