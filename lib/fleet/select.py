"""Which targets a fleet run verifies: a stable shard, then the oldest-verified first, then a sample.

* ``--shard I/N`` (``RESTORABLE_SHARD``): target (database, replica) belongs to shard
  ``sha256(db NUL replica) mod N``. The partition depends on nothing but the target's
  own name, so N services (or an indexed job) cover every target exactly once, and a
  tenant that appears or goes moves no other target. ``I`` counts from 0, as
  Kubernetes' ``JOB_COMPLETION_INDEX`` does.
* Order: the target verified longest ago (``checked_at`` of its history's
  ``latest.json``; never verified counts as oldest) goes first, so a run cut short by
  ``--max-runtime`` leaves the most recently verified ones for next time.
* ``--sample P%`` or ``--sample K`` (``RESTORABLE_SAMPLE``): the first ``K`` of that
  order (``P%`` of the targets, rounded up, at least 1). With ``T`` targets every one is
  verified within ``ceil(T / K)`` runs, since a verified target moves to the back.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, Mapping

from lib.config.model import Config, DbConfig, ReplicaConfig
from lib.errors import ConfigError

log = logging.getLogger(__name__)

ENV_SHARD = "RESTORABLE_SHARD"

ENV_SAMPLE = "RESTORABLE_SAMPLE"

HISTORY_READERS = 8  # concurrent latest.json reads when ordering many targets

_NEVER = datetime.min.replace(tzinfo=timezone.utc)

Target = tuple[DbConfig, ReplicaConfig]


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    def holds(self, db_path: str, replica_name: str) -> bool:
        digest = hashlib.sha256(f"{db_path}\0{replica_name}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


@dataclass(frozen=True)
class Sample:
    count: int | None = None  # K targets
    percent: float | None = None  # or P% of them

    def size(self, total: int) -> int:
        if self.count is not None:
            return min(total, self.count)
        return min(total, max(1, math.ceil(total * self.percent / 100)))


def parse_shard(flag: str | None, environ: Mapping[str, str]) -> Shard | None:
    """``--shard I/N``, else ``$RESTORABLE_SHARD``, else None.

    :raises ConfigError: not ``I/N`` with ``0 <= I < N``.
    """
    raw, origin = (flag, "--shard") if flag else (environ.get(ENV_SHARD, "").strip(), ENV_SHARD)
    if not raw:
        return None
    index, sep, count = raw.partition("/")
    if not (sep and index.strip().isdigit() and count.strip().isdigit()) or int(count) < 1:
        raise ConfigError(f"{origin}={raw!r}: expected I/N such as 0/3 (shard I of N, I counted from 0)")
    shard = Shard(int(index), int(count))
    if shard.index >= shard.count:
        raise ConfigError(f"{origin}={raw!r}: shard index {shard.index} is not below {shard.count}; "
                          f"shards are numbered 0 to {shard.count - 1}")
    return shard


def parse_sample(flag: str | None, environ: Mapping[str, str]) -> Sample | None:
    """``--sample P%|K``, else ``$RESTORABLE_SAMPLE``, else None.

    :raises ConfigError: not a positive count or a percentage in (0, 100].
    """
    raw, origin = (flag, "--sample") if flag else (environ.get(ENV_SAMPLE, "").strip(), ENV_SAMPLE)
    if not raw:
        return None
    text = raw.strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if 0 < percent <= 100:
                return Sample(percent=percent)
        elif int(text) > 0:
            return Sample(count=int(text))
    except ValueError:
        pass
    raise ConfigError(f"{origin}={raw!r}: expected a percentage such as 10% or a number of targets such as 50")


def apply_shard(config: Config, shard: Shard | None) -> Config:
    """``config`` with only the replicas of ``shard``; databases left without one are dropped."""
    if shard is None:
        return config
    dbs = []
    for db in config.dbs:
        kept = tuple(r for r in db.replicas if shard.holds(db.path, r.name))
        if kept:
            dbs.append(replace(db, replicas=kept))
    log.info("shard %d/%d: %d of %d target(s)", shard.index, shard.count, sum(len(d.replicas) for d in dbs),
             sum(len(d.replicas) for d in config.dbs))
    return replace(config, dbs=tuple(dbs))


def oldest_first(config: Config, last_verified: Callable[[DbConfig, ReplicaConfig], datetime | None],
                 sample: Sample | None, deadline: float | None = None) -> tuple[Config, int]:
    """``config`` as one database per target, oldest-verified first, cut to ``sample``; and the
    number of targets left out. History reads that do not finish by ``deadline`` count as never."""
    targets = [(db, r) for db in config.dbs for r in db.replicas]
    times = _read_all(targets, last_verified, deadline)
    order = sorted(range(len(targets)), key=lambda i: (times[i], i))
    keep = sample.size(len(targets)) if sample else len(targets)
    chosen = [targets[i] for i in order[:keep]]
    if sample:
        log.info("sample: %d of %d target(s) this run, oldest-verified first; each is verified within %d run(s)",
                 keep, len(targets), math.ceil(len(targets) / max(1, keep)))
    return replace(config, dbs=tuple(replace(db, replicas=(r,)) for db, r in chosen)), len(targets) - keep


def _read_all(targets: list[Target], last_verified, deadline: float | None) -> list[datetime]:
    times = [_NEVER] * len(targets)
    if not targets:
        return times
    pool = ThreadPoolExecutor(max_workers=HISTORY_READERS, thread_name_prefix="history")
    try:
        futures = {pool.submit(last_verified, db, r): i for i, (db, r) in enumerate(targets)}
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = wait(futures, timeout=timeout)
        for fut in done:
            try:
                times[futures[fut]] = fut.result() or _NEVER
            except Exception:  # unreadable history: verify it early rather than never
                log.debug("history read failed", exc_info=True)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return times


def history_time(previous: Mapping | None) -> datetime | None:
    """``checked_at`` of a ``latest.json`` document, or None."""
    raw = (previous or {}).get("checked_at")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
