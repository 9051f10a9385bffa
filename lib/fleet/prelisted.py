"""A store that answers a tenant's first listing from the run's one recursive listing.

Discovery lists a ``dir:`` entry's replica once (about one request per 1,000 keys);
each tenant's own first ``discover`` is then served from that listing instead of costing
one more request per database. Anything after it (the re-listing before a backup is
called damaged, a retry after a vanished object) goes to the real store, and a listing
older than ``MAX_PRELISTING_AGE_SECONDS`` is not used at all.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, Sequence

from lib.storage.base import ObjectInfo, ObjectStore

# Past this age a tenant lists its own replica: the shared listing may miss a compaction.
MAX_PRELISTING_AGE_SECONDS = 600.0


class Prelisting:
    """One tenant's objects from the shared listing, handed out once (thread-safe)."""

    def __init__(self, objects: Sequence[ObjectInfo], server_now: datetime):
        self.objects = tuple(objects)
        self.server_now = server_now
        self._listed = time.monotonic()
        self._lock = threading.Lock()
        self._claimed = False

    def claim(self) -> bool:
        """True the first time only, and only while the listing is young enough to stand for a fresh one."""
        with self._lock:
            usable = not self._claimed and time.monotonic() - self._listed < MAX_PRELISTING_AGE_SECONDS
            self._claimed = True
            return usable


class PrelistedStore:
    """``store`` whose ``list`` calls (one per prefix) are answered from ``prelisting`` until
    a prefix is asked for twice; then, and for every later call, the real store answers.

    ``server_now`` is the shared listing's time while it is in use: the backup's age is
    judged as of the listing that was restored, not as of the moment it was restored.
    """

    def __init__(self, store: ObjectStore, prelisting: Prelisting):
        self._store = store
        self._prelisting = prelisting
        self._served: set[str] = set()
        self._cached = True
        self.description = store.description

    def list(self, prefix: str) -> list[ObjectInfo]:
        if self._cached and prefix not in self._served:
            self._served.add(prefix)
            return [o for o in self._prelisting.objects if o.key.startswith(prefix)]
        self._cached = False
        return self._store.list(prefix)

    def server_now(self) -> datetime | None:
        if self._cached:
            return self._prelisting.server_now
        return self._store.server_now()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
