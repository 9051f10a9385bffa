"""Human-readable rendering of a report for a terminal or a plain log."""
from __future__ import annotations

from datetime import datetime, timezone

from lib.durations import format_duration
from lib.report import DbResult, Report

SYMBOL = {"ok": "OK", "warning": "WARN", "failed": "FAIL", "inconclusive": "????"}


def render_text(report: Report, now: datetime | None = None) -> str:
    """A few lines per database: verdict, restore point, size, tables, then each finding."""
    now = now or datetime.now(timezone.utc)
    lines = [f"restorable: {report.status.upper()} ({len(report.results)} replica(s) checked)"]
    for result in report.results:
        lines.extend(_render_result(result, now))
    for finding in report.run_findings:
        lines.append(f"  {finding.severity}: [{finding.kind}] {finding.message}")
    return "\n".join(lines) + "\n"


def _render_result(result: DbResult, now: datetime) -> list[str]:
    head = f"[{SYMBOL[result.status]:>4}] {result.db}  replica={result.replica}"
    if result.format:
        head += f"  format={result.format}"
    lines = [head]
    details = []
    if result.position:
        details.append(f"restore point {result.position}")
    if result.last_backup_at:
        age = (now - result.last_backup_at).total_seconds()
        details.append(f"last backup {format_duration(max(round(age), 0))} ago")
    if result.restored:
        details.append(f"{result.restored.bytes:,} bytes, page size {result.restored.page_size}, "
                       f"sha256 {result.restored.sha256[:12]}")
    if details:
        lines.append("       " + "; ".join(details))
    if result.tables:
        shown = ", ".join(f"{name}={count:,}" for name, count in sorted(result.tables.items())[:12])
        more = f" (+{len(result.tables) - 12} more tables)" if len(result.tables) > 12 else ""
        lines.append(f"       rows: {shown}{more}")
    for finding in result.findings:
        where = f" ({finding.object})" if finding.object else ""
        lines.append(f"       {finding.severity}: [{finding.kind}] {finding.message}{where}")
    return lines
