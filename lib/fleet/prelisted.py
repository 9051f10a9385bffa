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
    """One tenant's Litestream objects from the shared listing, and the prefixes they answer.

    ``prefixes`` are those ``lib.litestream.discover`` lists for the tenant's replica; any
    other prefix (history, vault, site) is never answered from here. Each prefix is handed
    out once per run (thread-safe): a second listing of it is a re-listing and must be fresh.
    """

    def __init__(self, objects: Sequence[ObjectInfo], server_now: datetime, prefixes: Sequence[str]):
        self.objects = tuple(objects)
        self.server_now = server_now
        self.prefixes = frozenset(prefixes)
        self._listed = time.monotonic()
        self._lock = threading.Lock()
        self._claimed: set[str] = set()

    def claim(self, prefix: str) -> bool:
        """True the first time ``prefix`` (one of ``prefixes``) is asked for while the listing is young."""
        with self._lock:
            if prefix not in self.prefixes or prefix in self._claimed:
                return False
            self._claimed.add(prefix)
            return time.monotonic() - self._listed < MAX_PRELISTING_AGE_SECONDS


class PrelistedStore:
    """``store`` whose first listing of each of the tenant's Litestream prefixes is answered
    from ``prelisting``; every other call goes to the real store.

    ``server_now`` is the shared listing's time while it is in use: the backup's age is
    judged as of the listing that was restored, not as of the moment it was restored.
    """

    def __init__(self, store: ObjectStore, prelisting: Prelisting):
        self._store = store
        self._prelisting = prelisting
        self._cached = False  # True once this store answered a listing from the prelisting
        self._real = False  # True once it listed for real: its clock is the store's again
        self.description = store.description

    def list(self, prefix: str) -> list[ObjectInfo]:
        if not self._real and self._prelisting.claim(prefix):
            self._cached = True
            return [o for o in self._prelisting.objects if o.key.startswith(prefix)]
        self._real = True
        return self._store.list(prefix)

    def server_now(self) -> datetime | None:
        if self._cached and not self._real:
            return self._prelisting.server_now
        return self._store.server_now()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
