"""List a replica once and decide which Litestream layout it holds.

A replica root may hold v0.3 generations, v0.5 LTX levels, both (an upgrade in
progress), or nothing. When both are present the one with the newest object wins,
as ``litestream restore`` 0.5 does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from typing import Protocol

from lib.litestream.layout import FORMAT_V3, FORMAT_V5
from lib.litestream.v3.layout import V3State, parse_v3_listing, v3_generations_prefix
from lib.litestream.v5.layout import V5State, level0_boundaries, level0_end, parse_v5_listing, v5_prefix
from lib.storage.base import ObjectInfo, ObjectStore, list_page_size
from lib.storage.ranges import list_ranges, split

# Key ranges of a big level 0 listed at once: enough to hide most round trips to a remote
# bucket, few enough that a bucket served from this machine is not outrun by its own client.
MOST_RANGES = 4


@dataclass
class ReplicaState:
    """One listing of a replica, parsed. ``format`` is None when it holds no backups."""

    format: str | None
    v3: V3State | None = None
    v5: V5State | None = None
    listed_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    ignored: list[str] = field(default_factory=list)

    def objects(self) -> list[ObjectInfo]:
        """Every Litestream object of the chosen format."""
        if self.format == FORMAT_V3 and self.v3:
            return [o for g in self.v3.generations for o in g.objects()]
        if self.format == FORMAT_V5 and self.v5 is not None:
            return [f.info for f in self.v5.files()]
        return []

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects())

    @property
    def newest(self) -> datetime | None:
        return max((o.last_modified for o in self.objects()), default=None)

    def fingerprint(self) -> frozenset[tuple[str, int, datetime]]:
        """Identity of the listing, to tell whether it changed between two reads."""
        return frozenset((o.key, o.size, o.last_modified) for o in self.objects())


def _list_prefixes(store: ObjectStore, prefixes: list[str], level0_root: str | None) -> list[ObjectInfo]:
    """List the fewest prefixes that cover all of ``prefixes``; deduplicate keys. A root equal
    to ``level0_root`` (an S3 v0.5 replica's prefix) has its level 0 listed in ranges."""
    roots: list[str] = []
    for prefix in sorted(set(prefixes), key=len):
        if not any(prefix.startswith(r) for r in roots):
            roots.append(prefix)
    seen: dict[str, ObjectInfo] = {}
    for root in roots:
        for obj in _list_root(store, root, split_level0=level0_root == root):
            seen[obj.key] = obj
    return sorted(seen.values(), key=lambda o: o.key)


def _list_root(store: ObjectStore, root: str, split_level0: bool) -> list[ObjectInfo]:
    """Every object under ``root``: one request when the first page holds them all; else the
    rest in key ranges at once (with ``split_level0``, ``root`` is an S3 v0.5 replica's and
    its level 0 is split by TXID)."""
    page = list_page_size(store)
    if not page:
        return store.list(root)
    first = store.list(root, limit=page)
    if len(first) < page:
        return first
    after, end = first[-1].key, level0_end(root)
    if not split_level0 or after >= end:  # no level 0 left to split
        return first + list_ranges(store, root, [(after, None)])
    higher = store.list(root, start_after=end, limit=page)  # levels 1-9 bound level 0's TXIDs
    ranges = split(after, level0_boundaries(root, first, higher, page, MOST_RANGES), end)
    if len(higher) == page:
        ranges.append((higher[-1].key, None))
    return first + list_ranges(store, root, ranges) + higher


class Replica(Protocol):
    """Where a replica is (``lib.config.model.ReplicaConfig``)."""

    type: str  # "s3" | "file"
    path: str


def discover(store: ObjectStore, replica: Replica) -> ReplicaState:
    """List the replica and parse it in both layouts; pick the layout that holds the newest object."""
    return list_replica(store, replica.type, replica.path)


def list_replica(store: ObjectStore, replica_type: str, path: str) -> ReplicaState:
    """``discover`` for a replica given by its type and path (as Litestream builds keys from them)."""
    v3_prefix = v3_generations_prefix(replica_type, path)
    v5_root = v5_prefix(replica_type, path)
    objects = _list_prefixes(store, [v3_prefix, v5_root], v5_root if replica_type != "file" else None)
    v3 = parse_v3_listing([o for o in objects if o.key.startswith(v3_prefix)], v3_prefix)
    v5 = parse_v5_listing([o for o in objects if o.key.startswith(v5_root)], v5_root, replica_type)
    newest_v3 = max((g.updated_at for g in v3.generations), default=None)
    newest_v5 = max((f.info.last_modified for f in v5.files()), default=None)
    if newest_v3 is None and newest_v5 is None:
        fmt = None
    elif newest_v5 is None or (newest_v3 is not None and newest_v3 >= newest_v5):
        fmt = FORMAT_V3
    else:
        fmt = FORMAT_V5
    recognised = {o.key for g in v3.generations for o in g.objects()} | {f.info.key for f in v5.files()}
    ignored = [o.key for o in objects if o.key not in recognised]
    return ReplicaState(format=fmt, v3=v3, v5=v5, ignored=ignored)
