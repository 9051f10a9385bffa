"""Read the same ``litestream.yml`` the app uses (v0.3 and v0.5 shapes).

SKELETON: the dataclasses below are the interface the rest of the code relies on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from lib.storage import LocalStore, ObjectStore, S3Settings, S3Store


@dataclass(frozen=True)
class ReplicaConfig:
    """One replica of one database, normalised from YAML, URL and environment.

    ``path`` is kept exactly as Litestream would use it to build keys: for ``s3`` the
    configured ``path`` verbatim (may be ``""``), or for a URL the cleaned URL path
    without its leading slash (``"."`` when the URL has none); for ``file`` the absolute
    directory.
    """

    name: str
    type: str  # "s3" | "file"
    path: str
    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    force_path_style: bool | None = None
    skip_verify: bool = False
    retention_seconds: float | None = None  # the replica's `retention`, if set
    sync_interval_seconds: float = 1.0

    def describe(self) -> str:
        """A human name for logs and reports, never containing a secret."""
        if self.type == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.path.lstrip('/')}"

    def s3_settings(self) -> S3Settings:
        return S3Settings(
            bucket=self.bucket or "",
            endpoint=self.endpoint,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            force_path_style=self.force_path_style,
            skip_verify=self.skip_verify,
        )

    def open_store(self) -> ObjectStore:
        if self.type == "file":
            return LocalStore(self.path)
        return S3Store(self.s3_settings())


@dataclass(frozen=True)
class DbConfig:
    path: str  # as written in the config (made absolute, like Litestream does)
    replicas: tuple[ReplicaConfig, ...]


@dataclass(frozen=True)
class Config:
    source: str  # the file it came from, or a description such as "RESTORABLE_REPLICAS"
    dbs: tuple[DbConfig, ...]

    def secrets(self) -> list[str]:
        """Every secret value in this config, for log and report scrubbing."""
        out = []
        for db in self.dbs:
            for r in db.replicas:
                out += [s for s in (r.access_key_id, r.secret_access_key) if s]
        return out


def load(path: str | None, environ: Mapping[str, str]) -> Config:
    raise NotImplementedError
