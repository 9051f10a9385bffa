"""Text for the recovery block, the drill and the vault: report lines and ``jobs.status`` lines."""
from __future__ import annotations

from typing import Any

from lib.units import format_duration


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(max(0.0, round(seconds, 3)))


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def report_lines(extra: dict[str, Any]) -> list[str]:
    """Lines for one database's report (``DbResult.extra``); empty when there is nothing to say."""
    lines = []
    recovery = extra.get("recovery")
    if recovery and recovery.get("earliest"):
        lines.append(f"window {recovery['earliest']} .. {recovery['latest']} "
                     f"({_duration(recovery['window_seconds'])}); RPO {_duration(recovery['rpo_seconds'])}; "
                     f"restore {_duration(recovery['restore_seconds'])}, "
                     f"{(recovery.get('restore_bytes') or 0):,} bytes downloaded")
    drill = extra.get("drill")
    if drill:
        seed = f", seed {drill['seed']}" if "seed" in drill else ""
        lines.append(f"drill {drill['kind']} {drill.get('target', '')}{seed}: {drill['status']}"
                     + (f" ({drill['note']})" if drill.get("note") else ""))
    vault = extra.get("vault")
    if vault:
        keep = vault.get("keep", {})
        kept = keep.get("uploaded") and f"kept {keep['uploaded']}" or keep.get("skipped") or "not kept"
        check = vault.get("check") or {}
        checked = f"; re-read {check['day']}: {check['status']}" if check.get("day") else ""
        lines.append(f"vault: {kept}; {_entries(len(keep.get('kept', [])))}{checked}")
    return lines


def status_lines(block: dict[str, Any]) -> list[str]:
    """Lines for ``jobs.status``: the window from the listing, the last drill of each kind, the vault."""
    lines = []
    window = block.get("window") or {}
    if window.get("earliest"):
        lines.append(f"recovery window: {window['earliest']} .. {window['latest']} "
                     f"({_duration(window['window_seconds'])})")
        for span in window.get("spans", []):
            lines.append(f"  {span['label']}: {span['earliest']} .. {span['latest']}, {span['points']} point(s), "
                         f"every ~{_duration(span['granularity_seconds'])}")
    for kind, drill in sorted((block.get("drills") or {}).items()):
        lines.append(f"last {kind} drill: {drill.get('status', '?')} at {drill.get('at', '?')} "
                     f"(target {drill.get('target', '?')})")
    vault = block.get("vault")
    if vault:
        if vault.get("error"):
            lines.append(f"vault {vault.get('location', '')}: could not list: {vault['error']}")
        else:
            lines.append(f"vault {vault['location']}: {_entries(len(vault['entries']))}")
            for entry in vault["entries"]:
                lines.append(f"  {entry['day']}  {entry['bytes']:,} bytes  sha256 {entry['sha256'][:12]}  "
                             f"point {entry['restore_point'].get('position') or '-'}  "
                             f"last re-read {entry.get('last_check') or 'never'}")
    return ["  " + line for line in lines]


def mail_facts(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Alert-email rows for a database's report JSON: window, RPO, restore time, the drill."""
    rows = []
    recovery = result.get("recovery") or {}
    if recovery.get("earliest"):
        rows.append(("restore window", f"{recovery['earliest']} .. {recovery['latest']}"))
        rows.append(("RPO (data at risk)", _duration(recovery.get("rpo_seconds"))))
    if recovery.get("restore_seconds") is not None:
        rows.append(("restore took", f"{_duration(recovery['restore_seconds'])}, "
                                     f"{(recovery.get('restore_bytes') or 0):,} bytes"))
    drill = result.get("drill") or {}
    if drill.get("status"):
        rows.append((f"{drill['kind']} drill", f"{drill['status']} ({drill.get('target', '')})"))
    return rows
