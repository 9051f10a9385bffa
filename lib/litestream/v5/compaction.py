"""Whether Litestream 0.5's compaction keeps up: a level that stopped advancing while the level below grows.

Litestream compacts level ``k`` every ``levels[k-1].interval`` (default L1 30 s, L2 5 m,
L3 1 h): it merges the level ``k-1`` files newer than level ``k``'s last file. So
level ``k-1`` files beyond level ``k``'s highest TXID are normal for up to one interval.
When such files keep arriving for more than two intervals (plus a minute of slack for
upload time), compaction into level ``k`` has stalled while Litestream is still
writing: L0 then grows without bound, restores read ever more files, and retention,
which deletes L0 files only once compacted, stops too.

A Litestream that stopped altogether leaves the same "uncompacted" files behind but no
new ones: that is not reported here (the staleness check reports it).
"""
from __future__ import annotations

from datetime import datetime

from lib.litestream.v5.layout import SNAPSHOT_LEVEL, LtxFile, V5State
from lib.report.model import Finding, warning
from lib.units import format_duration, format_iso

SLACK_SECONDS = 60.0


def stalled_levels(state: V5State, level_intervals: tuple[float, ...],
                   snapshot_interval: float | None = None) -> list[Finding]:
    """One warning per level ``k`` (1..len(level_intervals)) whose compaction stalled, and for
    the snapshot level (fed from the last configured level every ``snapshot_interval``).

    :param level_intervals: the compaction interval of L1, L2, ... (seconds), as configured.
    """
    steps = [(level, level - 1, interval) for level, interval in enumerate(level_intervals, start=1)]
    if snapshot_interval:
        steps.append((SNAPSHOT_LEVEL, len(level_intervals), snapshot_interval))
    findings = []
    for level, source, interval in steps:
        below = state.levels.get(source, [])
        if not below:
            continue
        reached = max((f.max_txid for f in state.levels.get(level, [])), default=0)
        waiting = [f for f in below if f.max_txid > reached]
        if not waiting:
            continue
        first = min(waiting, key=lambda f: f.info.last_modified)
        last = max(waiting, key=lambda f: f.info.last_modified)
        span = (last.info.last_modified - first.info.last_modified).total_seconds()
        if span > 2 * interval + SLACK_SECONDS:
            findings.append(_stalled(level, source, interval, reached, first, last, len(waiting)))
    return findings


def _stalled(level: int, source: int, interval: float, reached: int, first: LtxFile, last: LtxFile,
             count: int) -> Finding:
    since: datetime = first.info.last_modified
    return warning(
        "compaction_stalled",
        f"compaction into level {level} has stalled since {format_iso(since, 'seconds')}: level {source} gained "
        f"{count} file(s) up to TXID {last.max_txid:016x} "
        f"(the last at {format_iso(last.info.last_modified, 'seconds')}) "
        f"but level {level} still ends at TXID {reached:016x}, although Litestream compacts it every "
        f"{format_duration(interval)}; check Litestream's log for compaction errors (L0 keeps growing meanwhile)",
        first.key)
