"""Every check on one restored database file, in order: integrity, row counts, expectations, probes, drift.

User SQL (probes, the freshness query) runs with a time budget of at most
``PROBE_BUDGET_SECONDS`` and at most half the time left before the run's deadline, so
that a runaway query ends as a ``probe`` finding while the rest of the verdict stands.
SQLite's temporary files (sorts, materialised CTEs) go to the scratch directory given,
never to ``TMPDIR``.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from lib.checks.counts import Counts, count_rows, expected_tables, minimum_rows
from lib.checks.drift import row_count_drift
from lib.checks.freshness import freshness_value
from lib.checks.integrity import integrity, open_readonly
from lib.checks.probes import PROBE_BUDGET_SECONDS, ProbeStopped, not_run, probes, query_user_sql
from lib.report.model import Finding, error

MIN_PROBE_BUDGET_SECONDS = 1.0


@dataclass
class Checked:
    """What the checks found, and the row counts they read on the way."""

    findings: list[Finding] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    timings: dict[str, float] = field(default_factory=dict)


def check_restored(path: Path, db_settings: Any, previous: dict | None, temp_dir: Path,
                   deadline: float | None = None) -> Checked:
    """Integrity first; when the file can be read at all, row counts, the expected tables and
    minimum rows, the probes, and the drift since the last good run (``previous``).

    :param temp_dir: where SQLite may put temporary files (a scratch directory that
        outlives the checks).
    :param deadline: the run's deadline (``time.monotonic()``), which bounds the probes' budget.
    """
    checked = Checked()
    with sqlite_temp_dir(temp_dir):
        counted = _check(checked, path, db_settings, deadline)
    if previous and counted:
        checked.findings += row_count_drift(previous, checked.counts.tables, db_settings.row_drop_warning,
                                            db_settings.row_drop_error, uncounted=checked.counts.virtual)
    return checked


def _check(checked: Checked, path: Path, db_settings: Any, deadline: float | None) -> bool:
    """Fill ``checked``; True when the rows were counted (else there is nothing to compare)."""
    t0 = time.monotonic()
    with open_readonly(path) as conn:  # its own connection: integrity may add stand-in collations
        problems = integrity(conn)
    checked.findings += problems
    checked.timings["integrity"] = time.monotonic() - t0
    if problems and "cannot be checked" in problems[0].message:
        return False
    with open_readonly(path) as conn:
        t0 = time.monotonic()
        try:
            checked.counts = count_rows(conn)
        except sqlite3.Error as exc:  # a malformed database can fail anywhere
            checked.findings.append(error("integrity", f"counting rows failed: {exc}"))
            return False
        checked.timings["counts"] = time.monotonic() - t0
        checked.findings += expected_tables(checked.counts, tuple(db_settings.expect_tables))
        checked.findings += minimum_rows(checked.counts, dict(db_settings.min_rows))
        checked.findings += probes(conn, db_settings.probes, probe_budget(deadline))
    return True


def check_freshness(path: Path, probe: Any, now: datetime, temp_dir: Path,
                    deadline: float | None = None) -> list[Finding]:
    """The user's freshness query on the restored file (``probe`` is a ``Freshness`` setting)."""
    with sqlite_temp_dir(temp_dir), open_readonly(path) as conn:
        try:
            row = query_user_sql(conn, probe.sql, probe_budget(deadline))
        except (ProbeStopped, sqlite3.Error) as exc:
            return [not_run("the freshness query", exc)]
    return freshness_value(row[0] if row else None, now, probe.max_age_seconds, probe.sql)


def probe_budget(deadline: float | None) -> float:
    """Seconds one probe may run: ``PROBE_BUDGET_SECONDS``, or half the time left before ``deadline``."""
    if deadline is None:
        return PROBE_BUDGET_SECONDS
    left = deadline - time.monotonic()
    return max(MIN_PROBE_BUDGET_SECONDS, min(PROBE_BUDGET_SECONDS, left / 2))


@contextmanager
def sqlite_temp_dir(directory: Path) -> Iterator[None]:
    """Point SQLite's temporary files at ``directory`` while inside.

    ``temp_store_directory`` is process-wide (SQLite reads ``SQLITE_TMPDIR`` once, at
    initialisation, so the variable cannot do this). Checks of one run overlap on threads
    and all pass the same run scratch folder; the last one out restores the default, so
    nothing later in the process points at a folder that is gone.
    """
    global _temp_dir_users
    with _temp_dir_lock:
        _temp_dir_users += 1
        _set_temp_store_directory(str(directory))
    try:
        yield
    finally:
        with _temp_dir_lock:
            _temp_dir_users -= 1
            if _temp_dir_users == 0:
                _set_temp_store_directory("")


_temp_dir_lock = threading.Lock()

_temp_dir_users = 0


def _set_temp_store_directory(directory: str) -> None:
    quoted = directory.replace("'", "''")
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"PRAGMA temp_store_directory = '{quoted}'")
