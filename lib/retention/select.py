"""Which planned deletions may really go: still planned after a re-list, unchanged, whole WAL indexes. Pure."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from lib.litestream.discover import ReplicaState
from lib.litestream.layout import FORMAT_V3
from lib.litestream.v3.layout import WAL_SEGMENT_RE
from lib.retention.policy import Decision, RetentionPlan


def select_deletions(planned: RetentionPlan, fresh: RetentionPlan, fresh_state: ReplicaState) -> list[Decision]:
    """What may really be deleted: planned, still planned by ``fresh`` (made from a new
    listing with ``now - margin``), same size and time, and whole WAL indexes only.

    An index left with later segments but no offset-0 segment makes ``litestream restore``
    refuse its generation (``docs/formats/litestream-v0.3.md`` section 9, P3), so a WAL
    index goes all or nothing.
    """
    if planned.format != FORMAT_V3 or fresh.format != FORMAT_V3:
        return []
    still = {(d.key, d.size, d.last_modified) for d in fresh.delete}
    chosen = [d for d in planned.delete if (d.key, d.size, d.last_modified) in still]
    chosen_keys = {d.key for d in chosen}
    partial: set[tuple[str, int]] = set()
    for group, keys in _wal_groups(o.key for o in fresh_state.objects()).items():
        if not keys <= chosen_keys and keys & chosen_keys:
            partial.add(group)
    return [d for d in chosen if wal_group(d.key) not in partial]


def delete_passes(selected: Sequence[Decision]) -> tuple[list[Decision], list[Decision]]:
    """Split deletions into two passes, each oldest first: everything but offset-0 WAL
    segments, then those. If the first pass fails for part of an index, its offset-0
    segment stays, and Litestream can still restore the generation."""
    order = sorted(selected, key=lambda d: (d.last_modified, d.key))
    return ([d for d in order if not _is_initial_segment(d.key)], [d for d in order if _is_initial_segment(d.key)])


def wal_group(key: str) -> tuple[str, int] | None:
    """``(wal directory, index)`` for a v0.3 WAL segment key, else None."""
    directory, _, name = key.rpartition("/")
    m = WAL_SEGMENT_RE.match(name)
    return (directory, int(m.group(1), 16)) if m else None


def _is_initial_segment(key: str) -> bool:
    m = WAL_SEGMENT_RE.match(key.rpartition("/")[2])
    return bool(m) and int(m.group(2), 16) == 0


def _wal_groups(keys: Iterable[str]) -> dict[tuple[str, int], set[str]]:
    groups: dict[tuple[str, int], set[str]] = defaultdict(set)
    for key in keys:
        group = wal_group(key)
        if group is not None:
            groups[group].add(key)
    return groups
