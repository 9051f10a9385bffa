"""A vault entry: one day's verified copy of one database, and the manifest that describes it.

Layout below a database's vault prefix (one entry per UTC day)::

    <prefix><YYYY-MM-DD>/database.sqlite.lz4   the restored database, one LZ4 frame
    <prefix><YYYY-MM-DD>/manifest.json          written last: an entry exists once it does

The manifest (schema 1) holds ``sha256`` and ``bytes`` of the database itself (not of the
compressed object), ``page_size``, ``tables`` (row counts), ``restore_point`` (format,
generation, position, last_backup_at), ``verified_at``, ``verified_by`` and ``replica``.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from lib.errors import CorruptObject
from lib.units import parse_iso

SCHEMA = 1

DATA_NAME = "database.sqlite.lz4"

MANIFEST_NAME = "manifest.json"

DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Manifest:
    db: str
    day: str  # YYYY-MM-DD (UTC) of verified_at
    sha256: str
    bytes: int
    compressed_bytes: int
    page_size: int
    verified_at: str  # ISO 8601 UTC
    verified_by: str
    replica: str
    restore_point: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)

    def dumps(self) -> bytes:
        return (json.dumps({"schema": SCHEMA, **asdict(self)}, indent=2) + "\n").encode()

    @property
    def verified_time(self) -> datetime:
        return parse_iso(self.verified_at)


def parse_manifest(raw: bytes, key: str) -> Manifest:
    """Read a manifest; anything malformed is a ``CorruptObject`` naming ``key``."""
    try:
        doc = json.loads(raw)
        fields = {name: doc[name] for name in Manifest.__dataclass_fields__ if name in doc}
        manifest = Manifest(**fields)
        manifest.verified_time  # noqa: B018 (validates the time)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptObject(key, f"not a restorable vault manifest ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest.sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", manifest.sha256) \
            or not isinstance(manifest.bytes, int) or manifest.bytes < 0 or not DAY_RE.match(str(manifest.day)):
        raise CorruptObject(key, "vault manifest lacks a valid sha256, size or day")
    return manifest


def entry_prefix(prefix: str, day: str) -> str:
    return f"{prefix}{day}/"


def data_key(prefix: str, day: str) -> str:
    return f"{prefix}{day}/{DATA_NAME}"


def manifest_key(prefix: str, day: str) -> str:
    return f"{prefix}{day}/{MANIFEST_NAME}"


def day_of(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d")
