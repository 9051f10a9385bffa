"""The storage contract: ObjectInfo, the ObjectStore protocol, delete failures, whole-object reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Protocol, Sequence

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

    def list(self, prefix: str) -> list[ObjectInfo]: ...

    def open(self, key: str) -> BinaryIO: ...

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None: ...

    def delete(self, keys: Sequence[str]) -> list[DeleteFailure]: ...

    def server_now(self) -> datetime | None:
        """The store's clock as of its last response, if it told us; else None."""
        ...


def read_all(store: ObjectStore, key: str) -> bytes:
    """Read a (small) object whole; for history documents and tests, not for backups."""
    with store.open(key) as reader:
        return reader.read()
