"""What is in the bucket for each database, without restoring (``python -m jobs.status``).

For v0.3: one row per generation (start, end, snapshots, WAL indexes and segments,
bytes), like ``litestream generations``; for v0.5: one row per LTX level (files, TXID
range, bytes, newest time), like ``litestream ltx``. Plus the restore point
``jobs.verify`` would use, the age of the newest object, the bytes held and their
estimated monthly cost, the last verification from the history, and the recovery window,
the last drill of each kind and the vault's entries (``lib/recovery``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from lib.config.model import DbConfig, ReplicaConfig
from lib.errors import StorageError
from lib.litestream.discover import ReplicaState, discover
from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v3.plan import plan_v3
from lib.litestream.v5.plan import plan_v5
from lib.recovery.render import status_lines as recovery_status_lines
from lib.recovery.status import recovery_status
from lib.report.cost import monthly_cost
from lib.units import format_duration, format_iso


@dataclass
class ReplicaStatus:
    db: str
    replica: str
    location: str
    format: str | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    restore_point: str | None = None
    newest: datetime | None = None
    bytes: int = 0
    monthly_cost_usd: float = 0.0
    last_verification: dict[str, Any] | None = None
    error: str | None = None
    recovery: dict[str, Any] | None = None  # window, last drills, vault entries (lib/recovery/status.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "db": self.db, "replica": self.replica, "location": self.location, "format": self.format,
            "rows": self.rows, "restore_point": self.restore_point, "newest": format_iso(self.newest),
            "bytes": self.bytes, "monthly_cost_usd": self.monthly_cost_usd,
            "last_verification": self.last_verification, "error": self.error, "recovery": self.recovery,
        }


def v3_rows(state: ReplicaState) -> list[dict[str, Any]]:
    rows = []
    for gen in state.v3.generations:
        rows.append({
            "generation": gen.id, "start": format_iso(gen.created_at), "end": format_iso(gen.updated_at),
            "snapshots": len(gen.snapshots), "wal_indexes": len({s.index for s in gen.segments}),
            "wal_segments": len(gen.segments), "bytes": gen.bytes,
        })
    return rows


def v5_rows(state: ReplicaState) -> list[dict[str, Any]]:
    rows = []
    for level, files in sorted(state.v5.levels.items()):
        if not files:
            continue
        rows.append({
            "level": level, "files": len(files), "min_txid": f"{min(f.min_txid for f in files):016x}",
            "max_txid": f"{max(f.max_txid for f in files):016x}", "bytes": sum(f.info.size for f in files),
            "newest": format_iso(max(f.info.last_modified for f in files)),
        })
    return rows


def restore_point(state: ReplicaState) -> str | None:
    """The position ``jobs.verify`` would restore (None when nothing is restorable)."""
    if state.format == FORMAT_V3:
        plan, _ = plan_v3(state.v3, RestoreTarget())
        return plan.position if plan else None
    if state.format == FORMAT_V5:
        plan, _ = plan_v5(state.v5, RestoreTarget())
        return f"{plan[-1].max_txid:016x}" if plan else None
    return None


def replica_status(db: DbConfig, replica: ReplicaConfig, price: float, history_doc=None,
                   environ=None) -> ReplicaStatus:
    """List one replica and summarise it; storage errors land in ``error``. ``environ`` names
    the vault (``RESTORABLE_VAULT_*``), whose entries are listed too."""
    status = ReplicaStatus(db=db.path, replica=replica.name, location=replica.describe(), format=None)
    try:
        state = discover(replica.open_store(), replica)
    except StorageError as exc:
        status.error = str(exc)
        return status
    status.format = state.format
    status.rows = v3_rows(state) if state.format == FORMAT_V3 else v5_rows(state) if state.format else []
    status.restore_point = restore_point(state)
    status.newest = state.newest
    status.bytes = state.bytes
    status.monthly_cost_usd = monthly_cost(state.bytes, price)
    status.last_verification = history_doc
    status.recovery = recovery_status(db, state, history_doc, environ or {})
    return status


def render_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """Left-aligned columns with two spaces between, like litestream's listings."""
    cells = [columns] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]


def render_status(statuses: list[ReplicaStatus], now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    out: list[str] = []
    for st in statuses:
        out.append(f"{st.db}  replica={st.replica}  {st.location}  format={st.format or '-'}")
        if st.error:
            out.append(f"  could not list: {st.error}")
            out.append("")
            continue
        if st.format == FORMAT_V3:
            out += ["  " + line for line in render_table(st.rows, ["generation", "start", "end", "snapshots",
                                                                  "wal_indexes", "wal_segments", "bytes"])]
        elif st.format == FORMAT_V5:
            out += ["  " + line for line in render_table(st.rows, ["level", "files", "min_txid", "max_txid",
                                                                  "bytes", "newest"])]
        else:
            out.append("  no backups")
        age = format_duration(max(0, round((now - st.newest).total_seconds()))) if st.newest else "-"
        out.append(f"  restore point: {st.restore_point or '-'}   newest object: {age} ago   "
                   f"size: {st.bytes:,} bytes (~${st.monthly_cost_usd:.4f}/month)")
        if st.last_verification:
            lv = st.last_verification
            out.append(f"  last verification: {lv.get('status', '?')} at {lv.get('checked_at', lv.get('at', '?'))}")
        out += recovery_status_lines(st.recovery or {})
        out.append("")
    return "\n".join(out)
