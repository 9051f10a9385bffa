"""What the status page shows, as plain JSON-ready dicts (pure: history documents in, views out).

One view per (database, replica): current status, the last finding, the restore point,
the backup's age, a timeline of the last runs and four chart series over the last 30
days. ``status.json`` is these views as they are; ``index.html`` renders them.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from lib.report.model import FAILED, INCONCLUSIVE, OK, WARN, worst
from lib.site.runs import RunKey
from lib.units import format_iso as iso, parse_iso

UNKNOWN = "unknown"

KNOWN = (OK, WARN, INCONCLUSIVE, FAILED)

CHARTS = (
    ("backup_age_seconds", "Backup age"),
    ("restore_seconds", "Restore time"),
    ("bucket_bytes", "Bucket bytes"),
    ("monthly_cost_usd", "Monthly cost"),
)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def measures(doc: dict[str, Any]) -> dict[str, float | None]:
    """The four charted numbers of one run document."""
    result = doc.get("result") if isinstance(doc.get("result"), dict) else {}
    checked, backup = _parse(doc.get("checked_at")), _parse(result.get("last_backup_at"))
    timings = result.get("timings") if isinstance(result.get("timings"), dict) else {}
    return {
        "backup_age_seconds": max(0.0, (checked - backup).total_seconds()) if checked and backup else None,
        "restore_seconds": _number(timings.get("restore")),
        "bucket_bytes": _number(result.get("replica_bytes")),
        "monthly_cost_usd": _number(result.get("monthly_cost_usd")),
    }


def last_finding(result: dict[str, Any]) -> str | None:
    """The finding that matters most: the first error, else the first warning."""
    findings = [f for f in result.get("findings") or [] if isinstance(f, dict)]
    for wanted in ("error", "warning"):
        for finding in findings:
            if finding.get("severity") == wanted:
                return f"[{finding.get('kind')}] {finding.get('message')}"
    return None


def restore_point(result: dict[str, Any]) -> str | None:
    parts = [f"{name} {result[name]}" for name in ("generation", "position") if result.get(name)]
    return ", ".join(parts) or None


def pair_view(db: str, replica: str, latest: dict[str, Any] | None, timeline: list[RunKey],
              chart: list[RunKey], docs: dict[str, dict[str, Any]], now: datetime,
              error: str | None = None) -> dict[str, Any]:
    """The view of one database on one replica."""
    latest = latest or {}
    status = latest.get("status") if latest.get("status") in KNOWN else UNKNOWN
    newest_key = latest.get("report_key") or (timeline[-1].key if timeline else None)
    result = (docs.get(newest_key) or {}).get("result") if newest_key else None
    result = result if isinstance(result, dict) else {}
    backup = _parse(result.get("last_backup_at"))
    runs = []
    for run in timeline:
        kinds = (docs.get(run.key) or {}).get("kinds") or []
        runs.append({"at": iso(run.at), "status": run.status if run.status in KNOWN else UNKNOWN,
                     "kinds": [str(k) for k in kinds]})
    series = {name: [] for name, _ in CHARTS}
    for run in chart:
        if run.key in docs:
            for name, value in measures(docs[run.key]).items():
                if value is not None:
                    series[name].append([iso(run.at), value])
    return {
        "db": db, "replica": replica, "status": status,
        "status_since": latest.get("status_since"), "checked_at": latest.get("checked_at"),
        "kinds": list(latest.get("kinds") or []),
        "last_finding": last_finding(result), "restore_point": restore_point(result),
        "format": result.get("format"),
        "last_backup_at": iso(backup) if backup else None,
        "backup_age_seconds": max(0.0, (now - backup).total_seconds()) if backup else None,
        "last_good_at": (latest.get("last_good") or {}).get("at") if isinstance(latest.get("last_good"), dict)
        else None,
        "runs": runs, "series": series, "error": error,
    }


def overall(views: list[dict[str, Any]]) -> str:
    """The worst known status; ``unknown`` when nothing is known, or when a database is
    unknown and the rest would otherwise claim it is all good."""
    known = [v["status"] for v in views if v["status"] in KNOWN]
    if not known:
        return UNKNOWN
    verdict = worst(known)
    if len(known) < len(views) and verdict in (OK, WARN):
        return UNKNOWN
    return verdict


def by_database(views: list[dict[str, Any]]) -> dict[str, str]:
    """Each database's status over its replicas (for the per-database badges)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for view in views:
        groups.setdefault(view["db"], []).append(view)
    return {db: overall(group) for db, group in groups.items()}


def status_document(views: list[dict[str, Any]], generated_at: datetime) -> dict[str, Any]:
    return {"schema": 1, "generated_at": iso(generated_at), "status": overall(views),
            "database_statuses": by_database(views), "databases": views}
