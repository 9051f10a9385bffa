"""Findings, per-database results and the run report (the ``--json`` contract).

Statuses, worst last: ``ok`` < ``warning`` < ``inconclusive`` < ``failed``.
The process exit code is derived here and nowhere else.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from lib.errors import EXIT_FAILED, EXIT_INCONCLUSIVE, EXIT_OK
from lib.units import format_iso

ERROR = "error"

WARNING = "warning"

OK = "ok"

WARN = "warning"

FAILED = "failed"

INCONCLUSIVE = "inconclusive"

_RANK = {OK: 0, WARN: 1, INCONCLUSIVE: 2, FAILED: 3}


@dataclass(frozen=True)
class Finding:
    """One problem found. ``severity`` error fails the database; warning does not.

    ``inconclusive`` marks findings that say "we could not tell" (storage errors,
    timeouts) rather than "the backup is bad".
    """

    severity: str
    kind: str
    message: str
    object: str | None = None
    inconclusive: bool = False

    def to_json(self) -> dict[str, Any]:
        out = {"severity": self.severity, "kind": self.kind, "message": self.message}
        if self.object:
            out["object"] = self.object
        if self.inconclusive:
            out["inconclusive"] = True
        return out


def error(kind: str, message: str, obj: str | None = None) -> Finding:
    return Finding(ERROR, kind, message, obj)


def warning(kind: str, message: str, obj: str | None = None) -> Finding:
    return Finding(WARNING, kind, message, obj)


def could_not_check(kind: str, message: str, obj: str | None = None) -> Finding:
    return Finding(ERROR, kind, message, obj, inconclusive=True)


def status_of(findings: list[Finding]) -> str:
    """The status a list of findings adds up to."""
    if any(f.severity == ERROR and not f.inconclusive for f in findings):
        return FAILED
    if any(f.inconclusive for f in findings):
        return INCONCLUSIVE
    if findings:
        return WARN
    return OK


def worst(statuses: list[str]) -> str:
    return max(statuses, key=_RANK.__getitem__, default=OK)


@dataclass
class Restored:
    bytes: int
    sha256: str
    page_size: int
    path: str | None = None  # scratch path; not serialised


@dataclass
class DbResult:
    """The verdict for one database (on one replica)."""

    db: str
    replica: str = ""
    format: str | None = None
    generation: str | None = None
    position: str | None = None
    restored: Restored | None = None
    tables: dict[str, int] = field(default_factory=dict)
    litestream_tables: dict[str, int] = field(default_factory=dict)
    last_backup_at: datetime | None = None
    findings: list[Finding] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return status_of(self.findings)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "db": self.db,
            "replica": self.replica,
            "format": self.format,
            "status": self.status,
            "generation": self.generation,
            "position": self.position,
            "restored": None,
            "tables": self.tables,
            "litestream_tables": self.litestream_tables,
            "last_backup_at": format_iso(self.last_backup_at),
            "findings": [f.to_json() for f in self.findings],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        if self.restored:
            r = asdict(self.restored)
            r.pop("path", None)
            out["restored"] = r
        out.update(self.extra)
        return out


@dataclass
class Report:
    results: list[DbResult] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished_at: datetime | None = None
    run_findings: list[Finding] = field(default_factory=list)  # not tied to one database

    @property
    def status(self) -> str:
        return worst([r.status for r in self.results] + [status_of(self.run_findings)])

    def exit_code(self) -> int:
        return {OK: EXIT_OK, WARN: EXIT_OK, FAILED: EXIT_FAILED, INCONCLUSIVE: EXIT_INCONCLUSIVE}[self.status]

    def database_statuses(self) -> dict[str, str]:
        """Each database's status: the worst of its replicas' verdicts."""
        by_db: dict[str, list[str]] = {}
        for result in self.results:
            by_db.setdefault(result.db, []).append(result.status)
        return {db: worst(statuses) for db, statuses in by_db.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "database_statuses": self.database_statuses(),
            "started_at": format_iso(self.started_at),
            "finished_at": format_iso(self.finished_at),
            "databases": [r.to_json() for r in self.results],
            "findings": [f.to_json() for f in self.run_findings],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)
