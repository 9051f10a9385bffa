"""The v0.5 LTX layout: levels, file names, the listing of a replica, and header times."""
from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Iterable, Sequence

from lib.errors import CorruptObject
from lib.litestream.v5.header import HEADER_SIZE, parse_header
from lib.storage.base import ObjectInfo, ObjectStore
from lib.storage.pool import map_sliced

log = logging.getLogger(__name__)


SNAPSHOT_LEVEL = 9  # litestream compaction_level.go SnapshotLevel

LEVELS = range(SNAPSHOT_LEVEL + 1)  # restore scans 0..9 whatever the config says

LTX_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")

_S3_LEVEL_RE = re.compile(r"^[0-9a-f]{4}$")  # "%04x" (s3 and oss clients)

_FILE_LEVEL_RE = re.compile(r"^[0-9]+$")  # "%d" (file, gs, abs, sftp, ... clients)

_PAGE_FILL = 0.98  # how full level0_boundaries plans a range's pages: room for a wrong guess

# --------------------------------------------------------------------------- layout


def v5_prefix(replica_type: str, path: str) -> str:
    """The key prefix (with trailing slash) under which a replica's LTX levels live.

    S3 keys are Litestream's plain concatenation ``path + "/" + "%04x"`` with no
    normalisation, so ``""`` gives ``"/"`` and ``"."`` gives ``"./"``. A ``file`` store is
    rooted at the replica directory, whose LTX files sit under ``ltx/<level>/``.
    """
    if replica_type == "file":
        return "ltx/"
    return path + "/"


def format_ltx_name(min_txid: int, max_txid: int) -> str:
    return f"{min_txid:016x}-{max_txid:016x}.ltx"


def parse_ltx_name(name: str) -> tuple[int, int] | None:
    """``(min, max)`` from ``<min16hex>-<max16hex>.ltx``, or None for any other name."""
    m = LTX_NAME_RE.match(name)
    if not m:
        return None
    return int(m.group(1), 16), int(m.group(2), 16)


def parse_level_dir(name: str, replica_type: str | None = None) -> int | None:
    """The level a directory name stands for (``0000``..``0009`` on S3, ``0``..``9`` for
    file replicas), or None. Without ``replica_type`` both spellings are accepted."""
    if replica_type != "file" and _S3_LEVEL_RE.match(name):
        level = int(name, 16)
    elif replica_type != "s3" and _FILE_LEVEL_RE.match(name) and len(name) == 1:
        level = int(name)
    else:
        return None
    return level if level in LEVELS else None


@dataclass(frozen=True)
class LtxFile:
    """One listed LTX file."""

    level: int
    min_txid: int
    max_txid: int
    info: ObjectInfo
    created_at: datetime | None = None  # the LTX header timestamp, once read (with_header_times)

    @property
    def key(self) -> str:
        return self.info.key

    @property
    def name(self) -> str:
        return format_ltx_name(self.min_txid, self.max_txid)

    @property
    def time(self) -> datetime:
        """The time ``-timestamp`` restores compare with: the header time when it has been
        read, else the listing time (see :func:`plan_v5`)."""
        return self.created_at or self.info.last_modified


@dataclass
class V5State:
    """Every LTX file listed under ``prefix``, by level (each sorted by TXID range)."""

    prefix: str
    levels: dict[int, list[LtxFile]] = field(default_factory=lambda: {lvl: [] for lvl in LEVELS})
    ignored: list[str] = field(default_factory=list)  # keys that are not LTX files

    def files(self) -> list[LtxFile]:
        return [f for level in LEVELS for f in self.levels.get(level, [])]

    @property
    def snapshots(self) -> list[LtxFile]:
        return self.levels.get(SNAPSHOT_LEVEL, [])

    @property
    def max_txid(self) -> int:
        return max((f.max_txid for f in self.files()), default=0)

    @property
    def last_modified(self) -> datetime | None:
        """The newest upload among all listed LTX files (what staleness is measured by)."""
        return max((f.info.last_modified for f in self.files()), default=None)


def parse_v5_listing(objects: Iterable[ObjectInfo], prefix: str,
                     replica_type: str | None = None) -> V5State:
    """Group a listing of ``prefix`` into levels; other keys go to ``ignored``.

    A key counts when it is ``prefix + <level dir> + "/" + <min>-<max>.ltx``, exactly what
    Litestream would list; ``replica_type`` ("s3" | "file") restricts the level spelling.
    """
    state = V5State(prefix=prefix)
    for obj in objects:
        parsed = _parse_key(obj.key, prefix, replica_type)
        if parsed is None:
            state.ignored.append(obj.key)
            continue
        level, min_txid, max_txid = parsed
        state.levels[level].append(LtxFile(level, min_txid, max_txid, obj))
    for files in state.levels.values():
        files.sort(key=lambda f: (f.min_txid, f.max_txid))
    if state.ignored:
        log.debug("ignored %d keys that are not LTX files under %s", len(state.ignored), prefix)
    return state


def _parse_key(key: str, prefix: str, replica_type: str | None) -> tuple[int, int, int] | None:
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix):].split("/")
    if len(parts) != 2:
        return None
    level = parse_level_dir(parts[0], replica_type)
    txids = parse_ltx_name(parts[1])
    if level is None or txids is None:
        return None
    return level, txids[0], txids[1]


def level0_end(prefix: str) -> str:
    """The key range bound just past every S3 level-0 key: ``prefix + "0000/..."`` all sort
    below ``prefix + "00000"`` ("/" sorts just below "0"); nothing else of the layout does."""
    return prefix + "0000" + chr(ord("/") + 1)


def level0_boundaries(prefix: str, first: Sequence[ObjectInfo], higher: Sequence[ObjectInfo],
                      page: int, most: int) -> list[str]:
    """Keys that split the rest of an S3 replica's level 0 into at most ``most`` ranges of
    whole pages (``page`` files), for :func:`lib.storage.ranges.split`.

    ``first`` is the listing's first page (it ends inside level 0) and ``higher`` keys past
    level 0: levels 1-9 end near the newest TXID (each compaction reads level 0 up to its
    newest file), and level-0 files run about as densely by TXID as in the first page. Each
    range but the last is cut a little short of its pages, so that a slightly wrong guess
    does not cost a request for a handful of files. A guess only: any boundaries give the
    exact listing. [] when there is nothing to go by.
    """
    level0 = prefix + "0000/"
    mins = [t[0] for o in first if o.key.startswith(level0) and (t := parse_ltx_name(o.key[len(level0):]))]
    parsed = (_parse_key(o.key, prefix, "s3") for o in higher)
    top = max((p[2] for p in parsed if p is not None and p[0] > 0), default=None)
    if len(mins) < 2 or top is None or top <= max(mins):
        return []
    last = max(mins)
    density = len(mins) / (last - min(mins) + 1)  # level-0 files per TXID
    pages = math.ceil((top - last) * density / page)
    count = min(most, pages)
    shares = [pages // count + (i < pages % count) for i in range(count)]  # pages per range
    cuts = itertools.accumulate(shares[:-1])
    return [f"{level0}{last + round(done * page * _PAGE_FILL / density):016x}" for done in cuts]


def with_header_times(store: ObjectStore, state: V5State, workers: int = 8) -> V5State:
    """A copy of ``state`` whose files carry their LTX header timestamps.

    Litestream's ``-timestamp`` compares the header time: a file replica's mtime is set
    to it, and S3 objects carry it as ``litestream-timestamp`` metadata (read with one HEAD
    per object), while S3 ``LastModified`` is the later upload time. Our storage seam has
    no HEAD, so this reads the first 100 bytes of every file (``workers`` at a time). A
    file whose header can't be read keeps its listing time; the apply reports it if the
    plan needs it. ``ObjectNotFound`` propagates (re-list and retry).
    """
    files = state.files()
    times = map_sliced(lambda f: _header_time(store, f.key), files, workers)
    timed = V5State(prefix=state.prefix, ignored=list(state.ignored))
    for f, moment in zip(files, times):
        timed.levels[f.level].append(replace(f, created_at=moment))
    return timed


def _header_time(store: ObjectStore, key: str) -> datetime | None:
    with store.open(key) as reader:
        head = b""
        while len(head) < HEADER_SIZE:
            chunk = reader.read(HEADER_SIZE - len(head))
            if not chunk:
                return None
            head += chunk
    try:
        header = parse_header(head, key)
    except CorruptObject:
        return None
    return datetime.fromtimestamp(header.timestamp_ms / 1000, tz=timezone.utc)
