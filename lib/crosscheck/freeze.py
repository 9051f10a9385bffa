"""Freeze the exact objects of a restore plan into a local file replica.

Both restores of the cross-check read this copy, so Litestream (uploads, compaction,
retention) cannot change what one of them sees. The copy has the layout of a ``type: file``
replica of the same version, whatever the source (S3 keys are mapped), and each file's
modification time is the object's listed time: litestream 0.3 picks generations and
snapshots by it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lib.litestream.discover import ReplicaState
from lib.litestream.layout import FORMAT_V3
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v3.plan import plan_v3
from lib.litestream.v5.plan import plan_v5
from lib.storage.base import ObjectInfo, ObjectStore
from lib.storage.pool import ObjectChanged

READ_BYTES = 1 << 20


@dataclass(frozen=True)
class FrozenObject:
    info: ObjectInfo  # as listed at the source
    key: str  # its key in the frozen file replica


def plan_objects(state: ReplicaState, target: RestoreTarget) -> list[FrozenObject]:
    """The objects ``restore_state`` reads for ``target``, in plan order ([] when there is no plan)."""
    if state.format == FORMAT_V3:
        plan, _ = plan_v3(state.v3, target)
        if plan is None:
            return []
        infos = [plan.snapshot.info] + [s.info for s in plan.segments]
        prefix = state.v3.prefix
        return [FrozenObject(i, "generations/" + i.key[len(prefix):]) for i in infos]
    files, _ = plan_v5(state.v5, target)
    return [FrozenObject(f.info, f"ltx/{f.level}/{f.name}") for f in files]


def freeze(store: ObjectStore, objects: list[FrozenObject], dest: Path) -> int:
    """Copy ``objects`` from ``store`` into ``dest`` (created 0700); return the bytes copied.

    Raises ``ObjectNotFound`` when one has gone (Litestream's retention) and
    ``ObjectChanged`` when its size differs from the listing.
    """
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    total = 0
    for obj in objects:
        path = dest / obj.key
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        size = _copy(store, obj.info.key, path)
        if size != obj.info.size:
            raise ObjectChanged(obj.info.key, f"read {size} bytes, the listing said {obj.info.size}")
        stamp = obj.info.last_modified.timestamp()
        os.utime(path, (stamp, stamp))
        total += size
    return total


def _copy(store: ObjectStore, key: str, path: Path) -> int:
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as out, store.open(key) as reader:
        while chunk := reader.read(READ_BYTES):
            out.write(chunk)
            size += len(chunk)
    return size
