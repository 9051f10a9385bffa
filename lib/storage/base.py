"""The storage contract: ObjectInfo, the ObjectStore protocol (ranged listings), delete failures, whole reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Iterable, Protocol, Sequence

# S3 DeleteObjects accepts at most 1,000 keys per request (AWS S3 API reference, DeleteObjects).
DELETE_BATCH_LIMIT = 1000


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as a listing reports it."""

    key: str
    size: int
    last_modified: datetime  # timezone-aware UTC
    storage_class: str | None = field(default=None, compare=False)  # S3's, when the listing names one


@dataclass(frozen=True)
class DeleteFailure:
    key: str
    error: str


class ObjectStore(Protocol):
    """What the rest of restorable needs from a bucket or a directory."""

    description: str  # e.g. "s3://bucket (endpoint https://...)"; never holds a secret

    # Objects one listing request returns at most; 0 for a store that lists whole (a folder),
    # where listing key ranges separately gains nothing. Read it with :func:`list_page_size`.
    list_page_size: int

    def list(self, prefix: str, start_after: str | None = None, stop_after: str | None = None,
             limit: int | None = None) -> list[ObjectInfo]:
        """The objects whose keys start with ``prefix`` and lie in the key range
        ``start_after < key <= stop_after`` (a bound that is None is open), sorted by key;
        with ``limit``, only the first ``limit`` of them. Keys compare as S3 orders them
        (by code point, which is UTF-8 byte order)."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None: ...

    def delete(self, keys: Sequence[str]) -> list[DeleteFailure]: ...

    def server_now(self) -> datetime | None:
        """The store's clock as of its last response, if it told us; else None."""
        ...


def list_page_size(store: ObjectStore) -> int:
    """``store.list_page_size``; 0 (lists whole) for a store that does not say."""
    return getattr(store, "list_page_size", 0) or 0


def in_range(key: str, start_after: str | None, stop_after: str | None) -> bool:
    """Whether ``key`` lies in ``(start_after, stop_after]`` (None: that side open)."""
    return (start_after is None or key > start_after) and (stop_after is None or key <= stop_after)


def empty_range(start_after: str | None, stop_after: str | None) -> bool:
    """Whether ``(start_after, stop_after]`` can hold no key at all."""
    return start_after is not None and stop_after is not None and stop_after <= start_after


def select(objects: Iterable[ObjectInfo], start_after: str | None = None, stop_after: str | None = None,
           limit: int | None = None) -> list[ObjectInfo]:
    """The objects of a whole listing that one ranged ``list`` call returns: those in the
    range, sorted by key, the first ``limit`` of them (for stores that list whole)."""
    chosen = sorted((o for o in objects if in_range(o.key, start_after, stop_after)), key=lambda o: o.key)
    return chosen if limit is None else chosen[:limit]


def read_all(store: ObjectStore, key: str) -> bytes:
    """Read a (small) object whole; for history documents and tests, not for backups."""
    with store.open(key) as reader:
        return reader.read()
