"""The configuration model: databases, their replicas, and how each replica is shown with secrets masked."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from lib.config.encryption import ReplicaEncryption
from lib.config.litestream_v5 import V5Settings
from lib.config.urls import redact_url, userinfo
from lib.storage.base import ObjectStore
from lib.storage.factory import open_store
from lib.storage.s3_settings import S3Settings
from lib.units import format_duration

log = logging.getLogger(__name__)


SUPPORTED_TYPES = ("s3", "file")

DEFAULT_SYNC_INTERVAL = 1.0  # seconds; Litestream's default `sync-interval`

DEFAULT_ORIGIN = "default"

MASK = "****"


@dataclass(frozen=True)
class ReplicaConfig:
    """One replica of one database, normalised from YAML, URL and environment.

    ``path`` is kept exactly as Litestream would use it to build keys: for ``s3`` the
    configured ``path`` verbatim (may be ``""``), or for a URL the cleaned URL path
    without its leading slash (``"."`` when the URL has none); for ``file`` the absolute
    directory. ``origins`` maps a field name to where its value came from (a config key,
    a URL, ``$VARIABLE``); fields missing there are defaults.
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
    session_token: str | None = field(default=None, repr=False)
    # age identities, SSE-C key, storage class (lib.config.encryption); secrets inside
    encryption: ReplicaEncryption = field(default=ReplicaEncryption(), repr=False)
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def describe(self) -> str:
        """A human name for logs and reports, never containing a secret."""
        if self.type == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.path.lstrip('/')}"

    def origin(self, name: str) -> str:
        """Where field ``name`` came from, or ``"default"``."""
        return dict(self.origins).get(name, DEFAULT_ORIGIN)

    def s3_settings(self) -> S3Settings:
        return S3Settings(
            bucket=self.bucket or "",
            endpoint=self.endpoint,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            session_token=self.session_token,
            force_path_style=self.force_path_style,
            skip_verify=self.skip_verify,
            sse_customer_algorithm=self.encryption.sse_customer_algorithm,
            sse_customer_key=self.encryption.sse_customer_key,
        )

    def open_store(self) -> ObjectStore:
        store = open_store(self)
        store.age_keys = self.encryption.age_keys  # read by lib.litestream.v3.age.keys_of
        return store

    def effective(self) -> dict[str, dict[str, Any]]:
        """Every field as ``{"value": ..., "from": ...}`` with secrets masked, for ``--print-config``."""
        fields: dict[str, Any] = {"name": self.name, "type": self.type, "path": self.path}
        if self.type == "s3":
            fields.update({
                "bucket": self.bucket,
                "endpoint": redact_url(self.endpoint) if self.endpoint else None,
                "region": self.region,
                "force-path-style": _path_style_shown(self),
                "skip-verify": self.skip_verify,
                "access-key-id": _mask(self.access_key_id, keep=4),
                "secret-access-key": _mask(self.secret_access_key),
                "session-token": _mask(self.session_token),
            })
        fields["sync-interval"] = format_duration(self.sync_interval_seconds)
        fields["retention"] = format_duration(self.retention_seconds) if self.retention_seconds else None
        attributes = {"force-path-style": "force_path_style", "sync-interval": "sync_interval_seconds",
                      "retention": "retention_seconds"}
        shown = {key: {"value": value, "from": self.origin(attributes.get(key, key.replace("-", "_")))}
                 for key, value in fields.items()}
        return shown | self.encryption.shown()


def _path_style_shown(replica: ReplicaConfig) -> bool | str:
    if replica.force_path_style is not None:
        return replica.force_path_style
    return "auto (path style when an endpoint is set)"


def _mask(secret: str | None, *, keep: int = 0) -> str | None:
    """``****`` for a secret; with ``keep``, a long value keeps that many leading characters."""
    if not secret:
        return None
    if keep and len(secret) >= 16:
        return secret[:keep] + MASK
    return MASK


@dataclass(frozen=True)
class DbConfig:
    path: str  # as written in the config (made absolute, like Litestream does), a URL, or a name
    replicas: tuple[ReplicaConfig, ...]
    written_path: str = ""  # the `path:` exactly as written (before ~ and CWD); "" if unknown
    v5: V5Settings = V5Settings()  # what Litestream 0.5 does with this database's backups
    warnings: tuple[str, ...] = ()  # litestream.yml keys Litestream would silently ignore, in words
    # A Litestream 0.5 `dir:` entry (lib.config.directories.DirSpec): a template whose
    # tenants lib.fleet.tenants finds in the bucket; None for a `path:` database.
    directory: Any = None


@dataclass(frozen=True)
class Config:
    source: str  # the file it came from, "command line" or "RESTORABLE_REPLICAS"
    dbs: tuple[DbConfig, ...]
    # Lower-precedence sources that were also set and are therefore not used.
    overridden: tuple[str, ...] = field(default=(), compare=False)

    def secrets(self) -> list[str]:
        """Every secret value in this config, for log and report scrubbing.

        The key pairs and session tokens, plus the ``user:password`` part of an endpoint
        that carries one.
        """
        out = []
        for db in self.dbs:
            for r in db.replicas:
                candidates = (r.access_key_id, r.secret_access_key, r.session_token, userinfo(r.endpoint))
                out += [s for s in candidates if s] + r.encryption.secrets()
            out += db.v5.secrets()
        return out
