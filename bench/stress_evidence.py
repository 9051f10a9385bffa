"""Evidence for the stress harness: every listing and every object a verification read,
captured at the moment it was read (before Litestream's retention can delete it), and what
to keep when a verification of a healthy live replica says "failed".

The kept directory holds ``listings.json`` (every list call, in order), ``objects/`` (each
object read, by its key), ``frozen/`` (the objects of the last attempt as a file replica),
``restorable.db`` and ``litestream.db`` (both restores of ``frozen/``), ``result.json``
(the verdict, findings and both restores' checks) and ``litestream.log``.
"""
from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.crosscheck.compare import Side
from lib.crosscheck.run import restore_ours, restore_theirs
from lib.crosscheck.binary import Binary
from lib.storage.base import ObjectInfo


@dataclass
class Recording:
    """What one attempt (one ``open_store``) listed and read."""

    listings: list[dict[str, Any]] = field(default_factory=list)
    objects: dict[str, bytes] = field(default_factory=dict)
    infos: dict[str, ObjectInfo] = field(default_factory=dict)  # as last listed


class RecordingStore:
    """An object store that records every listing and keeps a copy of every object read.

    The copy is taken in ``open`` (whole object), which is what a file descriptor or a GET
    pins anyway, so what is kept is exactly what the verification read.
    """

    def __init__(self, inner, recording: Recording):
        self._inner = inner
        self._rec = recording
        self._lock = threading.Lock()
        self.description = inner.description

    list_page_size = 0  # each discover listing recorded whole, as one list call

    def list(self, prefix: str, start_after: str | None = None, stop_after: str | None = None,
             limit: int | None = None) -> list[ObjectInfo]:
        objects = self._inner.list(prefix, start_after, stop_after, limit)
        with self._lock:
            self._rec.listings.append({"prefix": prefix, "objects": [_info_json(o) for o in objects]})
            self._rec.infos.update({o.key: o for o in objects})
        return objects

    def open(self, key: str):
        with self._inner.open(key) as reader:
            data = reader.read()
        with self._lock:
            self._rec.objects[key] = data
        return io.BytesIO(data)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class RecordingReplica:
    """A ``ReplicaConfig`` whose stores record (one ``Recording`` per attempt)."""

    def __init__(self, replica):
        self._replica = replica
        self.recordings: list[Recording] = []

    def open_store(self):
        rec = Recording()
        self.recordings.append(rec)
        return RecordingStore(self._replica.open_store(), rec)

    def __getattr__(self, name: str):
        return getattr(self._replica, name)


def _info_json(o: ObjectInfo) -> list:
    return [o.key, o.size, o.last_modified.isoformat()]


def frozen_key(key: str, replica) -> str:
    """The key of a read object in a ``type: file`` replica of the same layout."""
    if replica.type == "file":
        return key
    rel = key[len(replica.path.rstrip("/")) + 1:]
    if rel.startswith("generations/"):
        return rel
    level, name = rel.split("/", 1)
    return f"ltx/{int(level, 16)}/{name}"


def write_frozen(rec: Recording, replica, dest: Path) -> None:
    """The objects one attempt read, as a file replica (mtimes as listed)."""
    for key, data in rec.objects.items():
        path = dest / frozen_key(key, replica)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        info = rec.infos.get(key)
        if info is not None:
            stamp = info.last_modified.timestamp()
            os.utime(path, (stamp, stamp))


def keep_failure(dest: Path, replica: RecordingReplica, result, fmt: str, binary: Binary | None,
                 log_text: str) -> dict[str, Any]:
    """Write the evidence of one failed verification into ``dest``; return its summary.

    Both restores of the frozen objects are redone here: restorable's must give the same
    findings as the verification, and ``litestream restore`` of the same objects says
    whether the damage is in the objects (it gets the same malformed database) or ours.
    """
    dest.mkdir(parents=True, exist_ok=True)
    objects = dest / "objects"
    for i, rec in enumerate(replica.recordings):
        for key, data in rec.objects.items():
            path = objects / f"attempt{i + 1}" / key.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    (dest / "listings.json").write_text(json.dumps([r.listings for r in replica.recordings], indent=1))
    (dest / "litestream.log").write_text(log_text)
    last = replica.recordings[-1] if replica.recordings else Recording()
    write_frozen(last, replica, dest / "frozen")
    ours = _safe(lambda: restore_ours(dest / "frozen", fmt, dest / "restorable.db"), "restorable")
    theirs = (_safe(lambda: restore_theirs(binary, dest / "frozen", dest / "litestream.db", dict(os.environ)),
                    "litestream") if binary else Side("litestream", failed="no binary"))
    summary = {"status": result.status, "position": result.position, "generation": result.generation,
               "findings": [f.to_json() for f in result.findings], "attempts": len(replica.recordings),
               "frozen_restorable": ours.to_json(), "frozen_litestream": theirs.to_json(),
               "litestream_restore_also_unsound": not ours.sound and not theirs.sound}
    (dest / "result.json").write_text(json.dumps(summary, indent=1))
    return summary


def _safe(fn, name: str) -> Side:
    try:
        return fn()
    except Exception as exc:  # evidence keeping must not end the run
        return Side(name, failed=f"{type(exc).__name__}: {exc}")
