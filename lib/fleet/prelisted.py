"""A store that answers a tenant's listings from the run's one recursive listing.

Discovery lists a ``dir:`` entry's replica once (about one request per 1,000 keys);
each tenant's ``discover`` (the verification, the drill, the retention report: each
opens its own store) is then served from that listing instead of costing one more
request per database each. A re-listing within one store (before a backup is called
damaged, to see whether it changed meanwhile) goes to the real store; when it shows the
replica changed, or an object of the listing is found gone, every later listing is real
too (the retries that follow), as is every listing older than ``MAX_PRELISTING_AGE_SECONDS``.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, BinaryIO, Sequence

from lib.errors import ObjectNotFound
from lib.storage.base import ObjectInfo, ObjectStore

# Past this age a tenant lists its own replica: the shared listing may miss a compaction.
MAX_PRELISTING_AGE_SECONDS = 600.0


class Prelisting:
    """One tenant's Litestream objects from the shared listing, and the prefixes they answer.

    ``prefixes`` are those ``lib.litestream.discover`` lists for the tenant's replica; any
    other prefix (history, vault, site) is never answered from here, and nothing is once
    the listing was ``invalidate``d or grew too old (thread-safe).
    """

    def __init__(self, objects: Sequence[ObjectInfo], server_now: datetime, prefixes: Sequence[str]):
        self.objects = tuple(objects)
        self.server_now = server_now
        self.prefixes = frozenset(prefixes)
        self._listed = time.monotonic()
        self._lock = threading.Lock()
        self._keys = frozenset(o.key for o in self.objects)
        self._valid = True

    def claim(self, prefix: str) -> bool:
        """True when ``prefix`` (one of ``prefixes``) may be answered from the listing."""
        with self._lock:
            return (self._valid and prefix in self.prefixes
                    and time.monotonic() - self._listed < MAX_PRELISTING_AGE_SECONDS)

    def holds(self, key: str) -> bool:
        return key in self._keys

    def invalidate(self) -> None:
        """An object of the listing is gone: every later listing is a real one."""
        with self._lock:
            self._valid = False


class PrelistedStore:
    """``store`` whose first listing of each of the tenant's Litestream prefixes is answered
    from ``prelisting``; every other call goes to the real store.

    ``server_now`` is the shared listing's time while it is in use: the backup's age is
    judged as of the listing that was restored, not as of the moment it was restored.
    """

    def __init__(self, store: ObjectStore, prelisting: Prelisting):
        self._store = store
        self._prelisting = prelisting
        self._served: set[str] = set()  # prefixes this store answered from the prelisting
        self._cached = False  # True once this store answered a listing from the prelisting
        self._real = False  # True once it listed for real: its clock is the store's again
        self.description = store.description

    list_page_size = 0  # answered whole from the prelisting: discover asks for no key ranges

    def list(self, prefix: str, start_after: str | None = None, stop_after: str | None = None,
             limit: int | None = None) -> list[ObjectInfo]:
        if (start_after, stop_after, limit) != (None, None, None):  # a key range: always the real store's
            self._real = True
            return self._store.list(prefix, start_after, stop_after, limit)
        if not self._real and prefix not in self._served and self._prelisting.claim(prefix):
            self._served.add(prefix)
            self._cached = True
            return self._from_prelisting(prefix)
        self._real = True
        fresh = self._store.list(prefix)
        if prefix in self._prelisting.prefixes and set(fresh) != set(self._from_prelisting(prefix)):
            self._prelisting.invalidate()  # the replica changed since: every later listing must be real
        return fresh

    def _from_prelisting(self, prefix: str) -> list[ObjectInfo]:
        return [o for o in self._prelisting.objects if o.key.startswith(prefix)]

    def open(self, key: str) -> BinaryIO:
        try:
            return self._store.open(key)
        except ObjectNotFound:
            if self._prelisting.holds(key):  # the listing said it was there: the listing is stale
                self._prelisting.invalidate()
            raise

    def server_now(self) -> datetime | None:
        if self._cached and not self._real:
            return self._prelisting.server_now
        return self._store.server_now()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
