"""Which v0.5 LTX files rebuild a restore point, as litestream restore chooses them, and what is missing."""
from __future__ import annotations

import heapq
import logging
from datetime import datetime, timezone

from lib.litestream.hazards import EMPTY_RESTART
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v5.layout import SNAPSHOT_LEVEL, LtxFile, V5State
from lib.report.model import Finding, error

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- plan


def plan_v5(state: V5State, target: RestoreTarget) -> tuple[list[LtxFile], list[Finding]]:
    """Litestream's ``CalcRestorePlan`` (spec 3.1): the files to apply, in order.

    The latest snapshot (level 9) at or before the target, then greedy extension over
    levels 0..8: among files with ``min <= cur + 1 < max + 1`` pick the larger max TXID,
    then the smaller min TXID, the higher level, the earlier time. ``target.txid`` must be
    the end of some file (files are never applied partially); ``target.timestamp`` keeps
    files whose time is strictly before it. A file's time is its header timestamp when
    the state came through :func:`with_header_times` (what Litestream compares), else
    its listing time (file replicas: the same, as the mtime is set to it; S3: the later
    upload time).

    The plan is the chain as far as it reaches even when that is short of the target;
    findings then say why (Litestream would refuse): ``no_backups`` (nothing listed, or
    no file ends at the target TXID), ``missing_snapshot`` (no snapshot and no chain from
    TXID 1), ``wal_gap`` (a hole before newer files, or before the target TXID).
    """
    if target.txid and target.timestamp:
        raise ValueError("a restore target takes a TXID or a timestamp, not both")
    if not state.files():
        return [], [error("no_backups", f"no LTX files under {state.prefix!r}")]
    txid = target.txid or None
    before = _aware(target.timestamp) if target.timestamp else None
    plan = _pick_snapshot(state, txid, before)
    cur = plan[-1].max_txid if plan else 0
    if txid is None or cur < txid:
        plan += _extend(state, cur, txid, before)
    return plan, _plan_findings(state, plan, txid, before)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _eligible(f: LtxFile, txid: int | None, before: datetime | None) -> bool:
    if txid is not None and f.max_txid > txid:
        return False
    return before is None or f.time < before


def _pick_snapshot(state: V5State, txid: int | None, before: datetime | None) -> list[LtxFile]:
    """The last level-9 file (highest max TXID) that passes the target filters."""
    passing = [f for f in state.snapshots if _eligible(f, txid, before)]
    return passing[-1:]


def _extend(state: V5State, cur: int, txid: int | None, before: datetime | None) -> list[LtxFile]:
    """Greedy chain extension over levels 0..8 in O(n log n).

    Files enter a heap once their min TXID is within reach (``min <= cur + 1``); the heap
    orders by Litestream's ``restoreCandidateBetter``, and a file whose max is already
    covered can never become useful again, so it is dropped.
    """
    pool = sorted((f for level in range(SNAPSHOT_LEVEL) for f in state.levels.get(level, [])
                   if _eligible(f, txid, before)), key=lambda f: f.min_txid)
    heap: list[tuple] = []
    chain: list[LtxFile] = []
    i = 0
    while txid is None or cur < txid:
        while i < len(pool) and pool[i].min_txid <= cur + 1:
            f = pool[i]
            heapq.heappush(heap, (-f.max_txid, f.min_txid, -f.level, f.time, i, f))
            i += 1
        while heap and heap[0][-1].max_txid <= cur:
            heapq.heappop(heap)
        if not heap:
            break
        best = heapq.heappop(heap)[-1]
        chain.append(best)
        cur = best.max_txid
    return chain


def _plan_findings(state: V5State, plan: list[LtxFile], txid: int | None,
                   before: datetime | None) -> list[Finding]:
    """Why the chain is not the restore asked for; Litestream checks gaps only on latest
    restores (a timestamp restore silently stops at a gap, as Litestream's does)."""
    if not plan:
        return [error("missing_snapshot", _no_start_message(state, txid, before))]
    cur = plan[-1].max_txid
    if before is not None or (txid is not None and cur >= txid):
        return []
    nxt = _first_beyond(state, cur, txid)
    if nxt:
        return [_gap_finding(cur, nxt)]
    if txid is None:
        return []
    return [error("no_backups", f"TXID {txid:016x} is not a restore point: the chain ends at {cur:016x} "
                                f"and no file ends exactly at the target (files are never applied partially)")]


def _first_beyond(state: V5State, cur: int, txid: int | None) -> LtxFile | None:
    """The file Litestream names in its gap error: scanning levels 8..0, the first file
    starting after ``cur + 1`` (and ending at or before the target TXID, if any)."""
    for level in range(SNAPSHOT_LEVEL - 1, -1, -1):
        for f in state.levels.get(level, []):
            if f.min_txid > cur + 1 and (txid is None or f.max_txid <= txid):
                return f
    return None


def _gap_finding(cur: int, nxt: LtxFile) -> Finding:
    return error("wal_gap", f"non-contiguous LTX files: have up to TXID {cur:016x} but the next file "
                            f"starts at {nxt.min_txid:016x} (level {nxt.level}); TXIDs "
                            f"{cur + 1:016x}..{nxt.min_txid - 1:016x} are in no file", nxt.key)


def _no_start_message(state: V5State, txid: int | None, before: datetime | None) -> str:
    where = ""
    if txid is not None:
        where = f" at or before TXID {txid:016x}"
    elif before is not None:
        where = f" before {before.isoformat()}"
    lowest = min((f.min_txid for f in state.files()), default=0)
    message = (f"no snapshot (level 9){where} and no file starting at TXID 1 to build one from; "
               f"the oldest listed file starts at TXID {lowest:016x}")
    return f"{message}; {EMPTY_RESTART}" if txid is None and before is None else message
