"""How many targets one process verifies at once, and how much memory one verification may use.

One verification's memory does not grow with the database: the restorers stream objects
through bounded buffers (``lib.storage.pool``), stage at most ``STAGE_LIMIT_BYTES`` of
pages before writing them out (``lib.litestream.pages``) and check the restored file on
disk with SQLite's own bounded cache. Measured peaks are under 150 MB (a v0.3 replica of
10,000 WAL segments; docs/performance.md). ``TARGET_MEMORY_BYTES`` is that with head room:
it sizes the default ``--parallel`` and is the default memory ceiling of an RQ job
(``RESTORABLE_JOB_MEMORY``, ``lib.fleet.memory``).

Only ``os`` and files under /proc and /sys are read here: ``jobs.verify`` imports this at
start-up.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

TARGET_MEMORY_BYTES = 512 << 20

_CGROUP = Path("/sys/fs/cgroup")


def default_parallel(cpus: int, memory_bytes: int | None, per_target: int = TARGET_MEMORY_BYTES) -> int:
    """One target per usable CPU, but no more than the available memory holds; at least 1."""
    by_memory = cpus if memory_bytes is None else memory_bytes // per_target
    return max(1, min(cpus, by_memory))


def machine_parallel() -> int:
    """``default_parallel`` for this process: its CPUs and memory, container limits included."""
    return default_parallel(usable_cpus(), available_memory())


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), capped by a cgroup CPU quota (a container's ``--cpus``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(_read(_CGROUP / "cpu.max")) or _cgroup_cpu_quota(_cgroup_v1_cpu())
    return max(1, min(cpus, quota) if quota is not None else cpus)


def available_memory() -> int | None:
    """Bytes this process can still use: /proc/meminfo's MemAvailable, capped by a cgroup
    memory limit (what remains under it, v2 or v1); None when none can be read."""
    known = [m for m in (_meminfo_available(_read(Path("/proc/meminfo"))),
                         _cgroup_memory_left(_read(_CGROUP / "memory.max"), _read(_CGROUP / "memory.current")),
                         _cgroup_memory_left(_read(_CGROUP / "memory" / "memory.limit_in_bytes"),
                                             _read(_CGROUP / "memory" / "memory.usage_in_bytes")))
             if m is not None]
    return min(known) if known else None


def _cgroup_cpu_quota(text: str | None) -> int | None:
    """``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") -> whole CPUs, rounded up; None without a quota."""
    parts = (text or "").split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit() or int(parts[1]) == 0:
        return None
    return max(1, math.ceil(int(parts[0]) / int(parts[1])))


def _cgroup_v1_cpu() -> str | None:
    """cgroup v1's quota and period in ``cpu.max``'s form ("-1 PERIOD" without a quota)."""
    quota, period = _read(_CGROUP / "cpu" / "cpu.cfs_quota_us"), _read(_CGROUP / "cpu" / "cpu.cfs_period_us")
    return f"{quota.strip()} {period.strip()}" if quota and period else None


def _cgroup_memory_left(limit: str | None, current: str | None) -> int | None:
    if not limit or not limit.strip().isdigit():
        return None  # "max": no limit
    used = int(current) if current and current.strip().isdigit() else 0
    return max(0, int(limit) - used)


def _meminfo_available(text: str | None) -> int | None:
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024  # kB
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
