"""The one place that turns a replica's configuration into an ObjectStore."""
from __future__ import annotations

from typing import Protocol

from lib.storage.base import ObjectStore
from lib.storage.local import LocalStore
from lib.storage.s3_settings import S3Settings


class StoreConfig(Protocol):
    """What the factory reads from a replica (``lib.config.model.ReplicaConfig``)."""

    type: str
    path: str

    def s3_settings(self) -> S3Settings: ...


def open_store(replica: StoreConfig) -> ObjectStore:
    """A ``LocalStore`` for a ``file`` replica, else an ``S3Store``."""
    if replica.type == "file":
        return LocalStore(replica.path)
    # Deferred: lib.storage.s3 imports boto3 (~0.2 s of start-up), which a file replica never needs.
    from lib.storage.s3 import S3Store

    return S3Store(replica.s3_settings())
