"""Every check on one restored database file, in order: integrity, row counts, expectations, probes, drift."""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lib.checks.counts import count_rows, expected_tables, minimum_rows
from lib.checks.drift import row_count_drift
from lib.checks.freshness import freshness_value
from lib.checks.integrity import integrity, open_readonly
from lib.checks.probes import probes, query_user_sql
from lib.report.model import Finding, error


@dataclass
class Checked:
    """What the checks found, and the row counts they read on the way."""

    findings: list[Finding] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    litestream_tables: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def check_restored(path: Path, db_settings: Any, previous: dict | None) -> Checked:
    """Integrity first; when the file can be read at all, row counts, the expected tables and
    minimum rows, the probes, and the drift since the last good run (``previous``)."""
    checked = Checked()
    t0 = time.monotonic()
    with open_readonly(path) as db:
        problems = integrity(db)
        checked.findings += problems
        checked.timings["integrity"] = time.monotonic() - t0
        if problems and "cannot be checked" in problems[0].message:
            return checked
        t0 = time.monotonic()
        try:
            checked.tables, checked.litestream_tables = count_rows(db)
        except Exception as exc:  # a malformed database can fail anywhere
            checked.findings.append(error("integrity", f"counting rows failed: {exc}"))
            return checked
        checked.timings["counts"] = time.monotonic() - t0
        checked.findings += expected_tables(checked.tables, tuple(db_settings.expect_tables))
        checked.findings += minimum_rows(checked.tables, dict(db_settings.min_rows))
        checked.findings += probes(db, db_settings.probes)
    if previous:
        checked.findings += row_count_drift(previous, checked.tables, db_settings.row_drop_warning,
                                            db_settings.row_drop_error)
    return checked


def check_freshness(path: Path, probe: Any, now: datetime) -> list[Finding]:
    """The user's freshness query on the restored file (``probe`` is a ``Freshness`` setting)."""
    with open_readonly(path) as db:
        try:
            row = query_user_sql(db, probe.sql)
        except sqlite3.Error as exc:
            return [error("probe", f"freshness query failed to run: {exc}")]
    return freshness_value(row[0] if row else None, now, probe.max_age_seconds)
