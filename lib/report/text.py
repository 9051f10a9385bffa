"""Human-readable rendering of a report for a terminal or a plain log."""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone

from lib.crosscheck.text import cross_check_line
from lib.recovery.render import report_lines as recovery_lines
from lib.report.model import DbResult, Report
from lib.report.scrub import Scrubber
from lib.units import format_duration

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
    if result.extra.get("virtual_tables"):
        virtual = ", ".join(f"{name} ({module})" for name, module in sorted(result.extra["virtual_tables"].items()))
        lines.append(f"       not counted (virtual tables): {virtual}")
    if "cross_check" in result.extra:
        lines.append("       " + cross_check_line(result.extra["cross_check"]))
    lines += ["       " + line for line in recovery_lines(result.extra)]
    for finding in result.findings:
        where = f" ({finding.object})" if finding.object else ""
        lines.append(f"       {finding.severity}: [{finding.kind}] {finding.message}{where}")
    return lines


def print_report(report: Report, as_json: bool, secrets: list[str]) -> None:
    """Write the report on stdout, as JSON or text, scrubbed of secrets."""
    if as_json:
        text = json.dumps(report.to_json(), indent=2) + "\n"
    else:
        text = render_text(report) + "".join(render_retention(r) for r in report.results)
    sys.stdout.write(Scrubber.from_environ(os.environ, secrets).text(text))
    sys.stdout.flush()


def render_retention(result) -> str:
    """Text lines for one database's ``extra["retention"]``; the dry-run lists every key."""
    summary = result.extra.get("retention")
    if not summary:
        return ""
    head = f"retention {result.db} replica={result.replica}: {summary['mode']}"
    if "policy" in summary:
        policy = summary["policy"]
        head += f", window {policy['window'] or 'off'} ({policy['source']}), keep-snapshots {policy['keep_snapshots']}"
        head += (f"; kept {_objects(summary['kept'])}, reclaimable {_objects(summary['reclaimable'])}, "
                 f"deleted {_objects(summary['deleted'])}")
    lines = [head]
    lines += [f"  note: {note}" for note in summary.get("notes", [])]
    if "would_delete" in summary:
        lines.append(f"  would delete {len(summary['would_delete'])} object(s):")
        lines += [f"{d['key']}\t{d['size']}\t{d['reason']}" for d in summary["would_delete"]]
    return "\n".join(lines) + "\n"


def _objects(count: dict) -> str:
    return f"{count['objects']} object(s) / {count['bytes']:,} bytes"
