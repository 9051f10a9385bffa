"""The user's SQL probes, run under a read-only authorizer, a time budget and SQLite length limits."""
from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from typing import Iterator

from lib.report.model import Finding, could_not_check, error
from lib.units import format_bytes, format_duration

PROBE_BUDGET_SECONDS = 60.0  # per probe (and per freshness query); past it the probe is stopped

PROBE_MAX_VALUE_BYTES = 64 << 20  # SQLITE_LIMIT_LENGTH while a probe runs: no string or blob may grow past it

_PROGRESS_STEPS = 10_000  # SQLite VM instructions between two looks at the clock

# A probe may read and compute, nothing else: no ATTACH (another file), no PRAGMA (query_only off),
# no writes, no extension loading. sqlite3's authorizer is consulted for every statement prepared.
_USER_SQL_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                               sqlite3.SQLITE_RECURSIVE})

# Errors that say the probe cannot run in this process (the application defines the
# collation, module or function), not that the data is wrong.
_NOT_HERE = ("no such collation sequence", "no such module", "no such function")


class ProbeStopped(sqlite3.OperationalError):
    """The probe ran past its time budget or built a value past the length limit (callers
    that treat any ``sqlite3.Error`` as "the SQL did not run" need nothing more)."""


def _user_sql_authorizer(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _USER_SQL_ACTIONS else sqlite3.SQLITE_DENY


@contextmanager
def _bounded(conn: sqlite3.Connection, budget: float) -> Iterator[None]:
    """Run user SQL read-only, stopped after ``budget`` seconds, values capped at the length limit."""
    deadline = time.monotonic() + budget
    length = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
    conn.set_authorizer(_user_sql_authorizer)
    conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, PROBE_MAX_VALUE_BYTES)
    try:
        yield
    except sqlite3.OperationalError as exc:
        if time.monotonic() > deadline and "interrupted" in str(exc):
            raise ProbeStopped(f"it ran longer than its budget of {format_duration(budget)}") from exc
        raise
    except sqlite3.DataError as exc:
        raise ProbeStopped(f"it built a value over {format_bytes(PROBE_MAX_VALUE_BYTES)} ({exc})") from exc
    finally:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, length)
        conn.set_progress_handler(None, 0)
        conn.set_authorizer(None)


def query_user_sql(conn: sqlite3.Connection, sql: str, budget: float = PROBE_BUDGET_SECONDS):
    """First row of the user's SQL, run read-only within ``budget`` seconds.

    :raises ProbeStopped: past the budget or the length limit.
    :raises sqlite3.Error: the SQL failed to run.
    """
    with _bounded(conn, budget):
        return conn.execute(sql).fetchone()


def probes(conn: sqlite3.Connection, probe_list, budget: float = PROBE_BUDGET_SECONDS) -> list[Finding]:
    """Each probe's SQL must return one truthy value."""
    findings = []
    for probe in probe_list:
        try:
            row = query_user_sql(conn, probe.sql, budget)
        except (ProbeStopped, sqlite3.Error) as exc:
            findings.append(not_run(f"probe {probe.name!r}", exc))
            continue
        if row is None or not row[0]:
            value = None if row is None else row[0]
            findings.append(error("probe", f"probe {probe.name!r} returned {value!r}, expected a true value"))
    return findings


def not_run(what: str, exc: Exception) -> Finding:
    """The finding for user SQL that did not finish: inconclusive when the cause is ours or
    the environment's (budget, limit, a collation/module/function only the application has),
    an error when the SQL itself failed on this data (a missing table or column)."""
    if isinstance(exc, ProbeStopped):
        return could_not_check("probe", f"{what} was stopped: {exc}; make it cheaper (an index, a LIMIT) "
                               "so that it answers within the budget")
    if any(marker in str(exc) for marker in _NOT_HERE):
        return could_not_check("probe", f"{what} cannot run outside the application: {exc}; rewrite it "
                               "without what only the application defines")
    return error("probe", f"{what} failed to run: {exc}")
