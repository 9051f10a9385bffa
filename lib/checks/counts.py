"""Row counts of the restored copy, expected tables and minimum rows.

Virtual tables are not counted: their module (FTS5, R*Tree, sqlite-vec's ``vec0``, one the
application registers) may not exist here, and their rows live in shadow tables, which
are ordinary tables and counted.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field

import sqlite_utils

from lib.report.model import Finding, error, warning

LITESTREAM_TABLES = ("_litestream_seq", "_litestream_lock")

_VIRTUAL = re.compile(r"\s*CREATE\s+VIRTUAL\s+TABLE\s.*?\bUSING\s+([^\s(]+)", re.IGNORECASE | re.DOTALL)


@dataclass
class Counts:
    """Rows per table: the user's, Litestream's own, and the virtual tables left uncounted (name -> module)."""

    tables: dict[str, int] = field(default_factory=dict)
    litestream: dict[str, int] = field(default_factory=dict)
    virtual: dict[str, str] = field(default_factory=dict)


def count_rows(conn: sqlite3.Connection) -> Counts:
    """Count the rows of every ordinary table (through sqlite-utils); list the virtual ones."""
    counts = Counts()
    db = sqlite_utils.Database(conn, recursive_triggers=False)
    for table in db.tables:
        module = virtual_module(table.schema)
        if module is not None:
            counts.virtual[table.name] = module
            continue
        (counts.litestream if table.name in LITESTREAM_TABLES else counts.tables)[table.name] = table.count
    return counts


def virtual_module(sql: str | None) -> str | None:
    """The module of a ``CREATE VIRTUAL TABLE ... USING module(...)`` statement, else None."""
    match = _VIRTUAL.match(sql or "")
    return match.group(1) if match else None


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def expected_tables(counts: Counts, expected: tuple[str, ...]) -> list[Finding]:
    missing = [t for t in expected if t not in counts.tables and t not in counts.virtual]
    if not missing:
        return []
    return [error("row_count", f"expected table(s) missing from the backup: {', '.join(missing)}")]


def minimum_rows(counts: Counts, minimums: dict[str, int]) -> list[Finding]:
    findings = []
    for table, minimum in minimums.items():
        count = counts.tables.get(table)
        if table in counts.virtual:
            findings.append(warning("row_count", f"table {table} is a virtual table ({counts.virtual[table]}), "
                                    f"whose rows are not counted: min-rows {minimum} was not checked; set it "
                                    "on one of its shadow tables instead"))
        elif count is None:
            findings.append(error("row_count", f"table {table} (min-rows {minimum}) is missing from the backup"))
        elif count < minimum:
            findings.append(error("row_count", f"table {table} has {count} rows in the backup, expected at least {minimum}"))
    return findings
