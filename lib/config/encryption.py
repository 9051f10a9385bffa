"""A replica's encryption and storage-class keys: age (v0.3), SSE-C and SSE-KMS (S3), storage-class.

Read as Litestream reads them (``cmd/litestream/main.go`` at v0.3.13 and 0.5.17,
``s3/replica_client.go``):

* ``age: {identities, recipients}``: 0.3.13 only (0.5 refuses to start with it). The app
  needs only ``recipients`` to write; restorable needs an identity to read, taken from
  ``age.identities`` or else from ``$RESTORABLE_AGE_IDENTITIES`` (identity-file text), so
  the secret key need not sit in the app's config. ``recipients`` without any identity is
  a config error here, before anything is downloaded.
* ``sse-customer-key`` (base64 of 32 bytes) or ``sse-customer-key-path`` (a file holding
  it, whitespace trimmed, ``~`` expanded), ``sse-customer-algorithm`` (only ``AES256``,
  the default): every GET must carry them, or S3 refuses the read.
* ``sse-kms-key-id``: S3 decrypts on GET by itself; nothing to send, shown only.
* ``storage-class``: the class Litestream uploads with; an archive class (``GLACIER``,
  ``DEEP_ARCHIVE``) cannot be read without a restore request first.

Secrets (identities, the SSE-C key) are never shown: ``secrets()`` feeds scrubbing.
"""
from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from lib.config.environment import _Context, _join
from lib.litestream.v3.age import IDENTITY_VAR, AgeKeys, parse_identities

SSE_ALGORITHM = "AES256"


@dataclass(frozen=True)
class ReplicaEncryption:
    """What reading a replica's objects needs beyond its credentials; every field has an origin."""

    age_keys: AgeKeys | None = field(default=None, repr=False)
    age_recipients: tuple[str, ...] = ()
    sse_customer_algorithm: str | None = None
    sse_customer_key: bytes | None = field(default=None, repr=False)  # the 32 raw key bytes
    sse_customer_key_text: str | None = field(default=None, repr=False)  # as configured (base64), for scrubbing
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def secrets(self) -> list[str]:
        out = list(self.age_keys.texts) if self.age_keys else []
        return out + [s for s in (self.sse_customer_key_text,) if s]

    def shown(self) -> dict[str, dict[str, Any]]:
        """The set keys as ``{"value": ..., "from": ...}``, secrets masked, for ``--print-config``."""
        origins = dict(self.origins)
        values = {
            "age.identities": "****" if self.age_keys else None,
            "age.recipients": list(self.age_recipients) or None,
            "sse-customer-algorithm": self.sse_customer_algorithm,
            "sse-customer-key": "****" if self.sse_customer_key else None,
            "sse-kms-key-id": self.sse_kms_key_id,
            "storage-class": self.storage_class,
        }
        return {key: {"value": value, "from": origins.get(key, "default")}
                for key, value in values.items() if value is not None}


def read_encryption(raw: Mapping, key: str, ctx: _Context) -> ReplicaEncryption:
    """The encryption keys of replica entry ``raw`` (at config key ``key``); ``ctx.env.age_identities``
    holds ``$RESTORABLE_AGE_IDENTITIES``.

    :raises ConfigError: an identity or SSE-C key that can't be used, or recipients with no
        identity anywhere; names the key (never the value) and what to set.
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    _read_age(raw, key, ctx, values, origins)
    _read_sse(raw, key, ctx, values, origins)
    storage_class = ctx.text(raw, "storage-class", key)
    if storage_class:
        values["storage_class"], origins["storage-class"] = storage_class, ctx.where(_join(key, "storage-class"))
    return ReplicaEncryption(**values, origins=tuple(origins.items()))


def _read_age(raw: Mapping, key: str, ctx: _Context, values: dict, origins: dict) -> None:
    block = raw.get("age") or {}
    age_key = _join(key, "age")
    block = ctx.mapping(block, age_key)
    identities = _text_list(block, "identities", age_key, ctx)
    recipients = _text_list(block, "recipients", age_key, ctx)
    if identities:
        origin = ctx.where(_join(age_key, "identities"))
        values["age_keys"], origins["age.identities"] = parse_identities(identities, origin), origin
    elif getattr(ctx.env, "age_identities", None):
        origin = f"${IDENTITY_VAR}"
        values["age_keys"], origins["age.identities"] = parse_identities([ctx.env.age_identities], origin), origin
    elif recipients:
        raise ctx.fail(_join(age_key, "identities"),
                       "the replica is age-encrypted (age.recipients is set) but no identity is configured; "
                       f"set age.identities or {IDENTITY_VAR} to the AGE-SECRET-KEY-1... line of that recipient")
    if recipients:
        values["age_recipients"], origins["age.recipients"] = tuple(recipients), ctx.where(_join(age_key, "recipients"))


def _text_list(block: Mapping, name: str, key: str, ctx: _Context) -> list[str]:
    value = block.get(name)
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        raise ctx.fail(_join(key, name), "expected a list of strings")
    return [str(item) for item in value if item not in (None, "")]


def _read_sse(raw: Mapping, key: str, ctx: _Context, values: dict, origins: dict) -> None:
    text, origin = ctx.text(raw, "sse-customer-key", key), ctx.where(_join(key, "sse-customer-key"))
    path = ctx.text(raw, "sse-customer-key-path", key)
    if path:
        origin = ctx.where(_join(key, "sse-customer-key-path"))
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ctx.fail(_join(key, "sse-customer-key-path"),
                           f"cannot read the SSE-C key file ({type(exc).__name__}); check the path") from None
    kms = ctx.text(raw, "sse-kms-key-id", key)
    if kms:
        values["sse_kms_key_id"], origins["sse-kms-key-id"] = kms, ctx.where(_join(key, "sse-kms-key-id"))
    if not text:
        return
    if kms:
        raise ctx.fail(key, "sse-customer-key and sse-kms-key-id are mutually exclusive (Litestream refuses both)")
    algorithm = ctx.text(raw, "sse-customer-algorithm", key) or SSE_ALGORITHM
    if algorithm != SSE_ALGORITHM:
        raise ctx.fail(_join(key, "sse-customer-algorithm"), f"must be {SSE_ALGORITHM} (S3 supports no other)")
    try:
        key_bytes = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key_bytes = b""
    if len(key_bytes) != 32:
        raise ctx.fail(origin.split(": ", 1)[-1], "must be the base64 of a 256-bit (32-byte) key")
    values.update(sse_customer_algorithm=algorithm, sse_customer_key=key_bytes, sse_customer_key_text=text)
    origins.update({"sse-customer-key": origin, "sse-customer-algorithm": origin})
