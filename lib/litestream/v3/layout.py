"""The v0.3 layout: object names (parse/format pairs), positions, and the listing of a replica.

v0.3 (``docs/formats/litestream-v0.3.md`` section 1)::

    <root>/generations/<gen>/snapshots/<IIIIIIII>.snapshot.lz4
    <root>/generations/<gen>/wal/<IIIIIIII>_<OOOOOOOO>.wal.lz4

For S3, ``<root>`` is Go's ``path.Join(<path>, "generations")`` on the replica path; for a
``file`` replica the store is rooted at the replica directory and ``<root>`` is empty.
v0.5 LTX keys are parsed in ``lib.litestream.v5.layout``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime

from lib.litestream.layout import go_path_join
from lib.storage.base import ObjectInfo

log = logging.getLogger(__name__)


GENERATION_RE = re.compile(r"^[0-9a-f]{16}$")

SNAPSHOT_RE = re.compile(r"^([0-9a-f]{8})\.snapshot\.lz4$")

WAL_SEGMENT_RE = re.compile(r"^([0-9a-f]{8})_([0-9a-f]{8})\.wal\.lz4$")

POSITION_RE = re.compile(r"^([0-9a-f]{16})/([0-9a-f]{8,}):(0|[1-9][0-9]*)$")


def v3_generations_prefix(replica_type: str, path: str) -> str:
    """The key prefix (with trailing slash) under which v0.3 generations live."""
    if replica_type == "file":
        return "generations/"
    root = go_path_join(path, "generations")
    return root + "/"


def format_snapshot_name(index: int) -> str:
    return f"{index:08x}.snapshot.lz4"


def parse_snapshot_name(name: str) -> int | None:
    """The index in ``<IIIIIIII>.snapshot.lz4``, or None for any other name."""
    match = SNAPSHOT_RE.match(name)
    return int(match.group(1), 16) if match else None


def format_wal_segment_name(index: int, offset: int) -> str:
    return f"{index:08x}_{offset:08x}.wal.lz4"


def parse_wal_segment_name(name: str) -> tuple[int, int] | None:
    """``(index, offset)`` from ``<IIIIIIII>_<OOOOOOOO>.wal.lz4``, or None for any other name."""
    match = WAL_SEGMENT_RE.match(name)
    return (int(match.group(1), 16), int(match.group(2), 16)) if match else None


def segment_order(key: str) -> tuple[int, int]:
    """``(index, offset)`` of the WAL segment a key (or bare name) names; ``(-1, -1)`` for any other key."""
    return parse_wal_segment_name(key.rsplit("/", 1)[-1]) or (-1, -1)


def wal_key(prefix: str, generation: str, index: int, offset: int) -> str:
    """The key a WAL segment has (or would have) in the store."""
    return f"{prefix}{generation}/wal/{format_wal_segment_name(index, offset)}"


def generation_of(key: str, prefix: str) -> str:
    """The generation a key under ``prefix`` belongs to ("" for a key outside it)."""
    return key[len(prefix):].split("/", 1)[0] if key.startswith(prefix) else ""


@dataclass(frozen=True)
class Position:
    """A place in a generation's WAL (Litestream's ``Pos``): WAL index and byte offset in it."""

    generation: str
    index: int
    offset: int

    def __str__(self) -> str:
        return format_position(self.generation, self.index, self.offset)


def format_position(generation: str, index: int, offset: int) -> str:
    """``<generation>/<IIIIIIII>:<offset>``, as reports and the history show a position."""
    return f"{generation}/{index:08x}:{offset}"


def parse_position(text: str) -> Position | None:
    """The :class:`Position` that :func:`format_position` wrote, or None for any other text."""
    match = POSITION_RE.match(text)
    return Position(match.group(1), int(match.group(2), 16), int(match.group(3))) if match else None


@dataclass(frozen=True)
class Snapshot:
    generation: str
    index: int
    info: ObjectInfo


@dataclass(frozen=True)
class WalSegment:
    generation: str
    index: int
    offset: int
    info: ObjectInfo


@dataclass
class Generation:
    """Everything listed for one v0.3 generation, snapshots and segments sorted."""

    id: str
    snapshots: list[Snapshot] = field(default_factory=list)
    segments: list[WalSegment] = field(default_factory=list)

    def objects(self) -> list[ObjectInfo]:
        return [s.info for s in self.snapshots] + [w.info for w in self.segments]

    @property
    def created_at(self) -> datetime | None:
        times = [o.last_modified for o in self.objects()]
        return min(times) if times else None

    @property
    def updated_at(self) -> datetime | None:
        times = [o.last_modified for o in self.objects()]
        return max(times) if times else None

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects())


@dataclass
class V3State:
    prefix: str
    generations: list[Generation]
    ignored: list[str] = field(default_factory=list)  # keys under the prefix that are not Litestream's


def parse_v3_listing(objects: list[ObjectInfo], prefix: str) -> V3State:
    """Group a listing of ``prefix`` into generations; unknown keys are kept in ``ignored``."""
    generations: dict[str, Generation] = {}
    ignored: list[str] = []
    for obj in objects:
        rest = obj.key[len(prefix):]
        parts = rest.split("/")
        if len(parts) != 3 or not GENERATION_RE.match(parts[0]):
            ignored.append(obj.key)
            continue
        gen_id, kind, name = parts
        gen = generations.setdefault(gen_id, Generation(gen_id))
        if kind == "snapshots" and (index := parse_snapshot_name(name)) is not None:
            gen.snapshots.append(Snapshot(gen_id, index, obj))
        elif kind == "wal" and (pos := parse_wal_segment_name(name)) is not None:
            gen.segments.append(WalSegment(gen_id, pos[0], pos[1], obj))
        else:
            ignored.append(obj.key)
    for gen in generations.values():
        gen.snapshots.sort(key=lambda s: s.index)
        gen.segments.sort(key=lambda w: (w.index, w.offset))
    if ignored:
        log.debug("ignored %d keys that are not Litestream v0.3 objects under %s", len(ignored), prefix)
    ordered = [generations[g] for g in sorted(generations)]
    return V3State(prefix=prefix, generations=[g for g in ordered if g.objects()], ignored=ignored)


# --------------------------------------------------------------------------- a snapshot ahead of its WAL

# Litestream 0.3.13 can upload a snapshot whose database file already holds transactions that
# are not in the replica yet: the snapshot copies the database file as its last checkpoint left
# it, and that checkpoint also backfilled frames written after Litestream's last copy of the WAL
# (db.go checkpoint, replica.go Snapshot). They reach the replica as the next segments of the
# snapshot's index, a sync or two later. Until then the snapshot plus the listed WAL mixes newer
# and older pages: integrity_check fails, or page 1 is older than the snapshot's. A finding that
# can come from that is judged on a listing taken once the snapshot is this old.
SNAPSHOT_SETTLE_SECONDS = 5.0
SNAPSHOT_SETTLE_SYNC_INTERVALS = 20


def snapshot_settle_seconds(sync_interval_seconds: float) -> float:
    """How long a new snapshot may stay ahead of its index's WAL in the replica (a few syncs)."""
    return max(SNAPSHOT_SETTLE_SECONDS, SNAPSHOT_SETTLE_SYNC_INTERVALS * sync_interval_seconds)
