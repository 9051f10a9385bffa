"""Row counts of the restored copy, expected tables and minimum rows."""
from __future__ import annotations

import sqlite_utils

from lib.report.model import Finding, error

LITESTREAM_TABLES = ("_litestream_seq", "_litestream_lock")


def count_rows(db: sqlite_utils.Database) -> tuple[dict[str, int], dict[str, int]]:
    """Row counts of the user's tables and, separately, of Litestream's own tables."""
    tables: dict[str, int] = {}
    litestream: dict[str, int] = {}
    for name in db.table_names():
        count = db[name].count
        (litestream if name in LITESTREAM_TABLES else tables)[name] = count
    return tables, litestream


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
