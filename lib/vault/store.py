"""Where a database's vault lives, and its entries there.

``RESTORABLE_VAULT_URL`` names another bucket, provider or directory (``s3://bucket/path``
or ``file:///dir``; the docs recommend another provider, for 3-2-1). Credentials for it:
``RESTORABLE_VAULT_ACCESS_KEY_ID`` / ``RESTORABLE_VAULT_SECRET_ACCESS_KEY`` (plus
``RESTORABLE_VAULT_ENDPOINT`` / ``RESTORABLE_VAULT_REGION``), else the AWS_* variables;
Railway's ``BUCKET_*`` variables describe the replica's bucket and are not used for it.
Without a URL the vault sits under the history root of the database's first replica
(``<history root>_vault/``, beside Litestream's objects, never inside them).

Below the root, each database has ``<db-slug>/`` and one entry per UTC day
(``lib.vault.manifest``). Only keys this module parses are ever deleted.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

from lib.config.model import DbConfig
from lib.errors import ConfigError, CorruptObject, ObjectNotFound
from lib.storage.base import ObjectStore, read_all
from lib.vault.manifest import DATA_NAME, DAY_RE, MANIFEST_NAME, Manifest, data_key, manifest_key, parse_manifest
from lib.vault.plan import KeepPolicy, parse_policy

ENV_URL = "RESTORABLE_VAULT_URL"

ENV_KEEP = "RESTORABLE_VAULT_KEEP"

# RESTORABLE_VAULT_* -> the variable config_from_urls reads for the vault's replica URL.
_VAULT_VARS = {
    "RESTORABLE_VAULT_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "RESTORABLE_VAULT_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "RESTORABLE_VAULT_ENDPOINT": "AWS_ENDPOINT_URL_S3",
    "RESTORABLE_VAULT_REGION": "AWS_REGION",
}

_PASSED_THROUGH = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                   "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

TMP_SUFFIX = ".restorable-tmp"  # lib.vault.upload's temporary files in a directory vault

CHECKS_NAME = "checks.json"  # {day: ISO time of its last re-read}, for the rotation


@dataclass(frozen=True)
class VaultSettings:
    url: str | None = None
    keep: KeepPolicy | None = None  # None: the vault is off

    @property
    def enabled(self) -> bool:
        return self.keep is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], keep_text: str | None = None) -> "VaultSettings":
        """``RESTORABLE_VAULT_KEEP`` (else ``keep_text`` from restorable.yml) and ``RESTORABLE_VAULT_URL``."""
        raw = (environ.get(ENV_KEEP) or "").strip()
        where = ENV_KEEP if raw else "restorable.yml vault-keep"
        raw = raw or (keep_text or "").strip()
        keep = parse_policy(raw, where) if raw else None
        return cls(url=(environ.get(ENV_URL) or "").strip() or None, keep=keep)


@dataclass(frozen=True)
class VaultLocation:
    store: ObjectStore
    prefix: str  # ends with "/"

    def describe(self) -> str:
        return f"{self.store.description}/{self.prefix}"


@dataclass(frozen=True)
class Entry:
    day: str
    manifest: Manifest
    size: int  # of the compressed object

    @property
    def key(self) -> str:
        return self.day  # what the planner sorts by name

    @property
    def at(self) -> datetime:
        return self.manifest.verified_time


def locate(db: DbConfig, settings: VaultSettings, environ: Mapping[str, str]) -> VaultLocation:
    """The vault prefix of ``db`` (see the module docstring).

    :raises ConfigError: an unusable ``RESTORABLE_VAULT_URL``.
    """
    from lib.report.history import slug

    if settings.url:
        store, root = _url_root(settings.url, environ)
        _refuse_inside_replicas(db, store, root, settings.url)
    else:
        store, root = _history_root(db, environ)
    return VaultLocation(store, f"{root}{slug(db.path)}/")


def _url_root(url: str, environ: Mapping[str, str]) -> tuple[ObjectStore, str]:
    from lib.config.sources import config_from_urls
    from lib.storage.local import LocalStore

    vault_env = {name: environ[name] for name in _PASSED_THROUGH if environ.get(name)}
    vault_env.update({target: environ[name] for name, target in _VAULT_VARS.items() if environ.get(name)})
    try:
        replica = config_from_urls([url], vault_env).dbs[0].replicas[0]
    except ConfigError as exc:
        raise ConfigError(f"{ENV_URL}: {exc}") from None
    if replica.type == "file":
        return LocalStore(replica.path), ""
    path = replica.path.strip("/")
    return replica.open_store(), (f"{path}/" if path not in ("", ".") else "")


def _refuse_inside_replicas(db: DbConfig, store: ObjectStore, root: str, url: str) -> None:
    """A vault inside a replica path would share Litestream's folders: refused, like the history."""
    from pathlib import Path

    for replica in db.replicas:
        if replica.type == "file" and hasattr(store, "root"):
            inside = Path(store.root).resolve().is_relative_to(Path(replica.path).resolve())
        else:
            base = replica.path.strip("/")
            inside = getattr(store, "bucket", None) == replica.bucket and (
                base in ("", ".") or root.startswith(base + "/"))
        if inside:
            raise ConfigError(f"{ENV_URL}={url} is inside the replica {replica.describe()}, where Litestream "
                              "manages and deletes objects; choose a prefix or folder beside it")


def _history_root(db: DbConfig, environ: Mapping[str, str]) -> tuple[ObjectStore, str]:
    from lib.report.history import HistorySettings
    from lib.report.history import locate as history_locate

    location = history_locate(db, db.replicas[0], HistorySettings.from_environ(environ))
    root = location.prefix.rstrip("/").rsplit("/", 2)[0] + "/"  # drop <db-slug>/<replica-slug>/
    return location.store, root + "_vault/"


def entries(location: VaultLocation) -> tuple[list[Entry], list[str]]:
    """The complete entries, oldest first, and the keys of incomplete ones (no manifest, or
    a temporary file a killed run left in a directory vault).

    A manifest that cannot be parsed is raised as ``CorruptObject``.
    """
    by_day: dict[str, dict[str, int]] = {}
    leftovers: list[str] = []
    for info in location.store.list(location.prefix):
        parts = info.key[len(location.prefix):].split("/")
        if len(parts) != 2 or not DAY_RE.match(parts[0]):
            continue
        if parts[1] in (DATA_NAME, MANIFEST_NAME):
            by_day.setdefault(parts[0], {})[parts[1]] = info.size
        elif parts[1].removesuffix(TMP_SUFFIX) in (DATA_NAME, MANIFEST_NAME):
            leftovers.append(info.key)
    found = []
    for day, names in sorted(by_day.items()):
        if MANIFEST_NAME in names and DATA_NAME in names:
            key = manifest_key(location.prefix, day)
            found.append(Entry(day, parse_manifest(read_all(location.store, key), key), names[DATA_NAME]))
        else:
            leftovers += [f"{location.prefix}{day}/{name}" for name in names]
    return found, leftovers


def find(location: VaultLocation, which: str) -> Entry:
    """The entry ``which`` names: ``latest`` or a day ``YYYY-MM-DD``.

    :raises ConfigError: no such entry; the message lists the days there are.
    """
    found, _ = entries(location)
    if which != "latest" and not DAY_RE.match(which):
        raise ConfigError(f"--from-vault {which!r}: use latest or a day as YYYY-MM-DD")
    chosen = found[-1:] if which == "latest" else [e for e in found if e.day == which]
    if not chosen:
        days = ", ".join(e.day for e in found) or "none"
        raise ConfigError(f"--from-vault {which}: no vault entry at {location.describe()} (entries: {days}); "
                          f"runs keep verified copies when {ENV_KEEP} is set, in {ENV_URL} if that is set")
    return chosen[0]


def entry_keys(location: VaultLocation, day: str) -> list[str]:
    """Both keys of an entry, the manifest first (so a half-deleted entry is incomplete, not misread)."""
    return [manifest_key(location.prefix, day), data_key(location.prefix, day)]


def read_checks(location: VaultLocation) -> dict[str, str]:
    import json

    try:
        doc = json.loads(read_all(location.store, location.prefix + CHECKS_NAME))
    except (ObjectNotFound, ValueError):
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def write_checks(location: VaultLocation, checks: dict[str, str]) -> None:
    import json

    location.store.put(location.prefix + CHECKS_NAME, (json.dumps(checks, indent=2, sort_keys=True) + "\n").encode())


def status_of(db: DbConfig, environ: Mapping[str, str], keep_text: str | None = None) -> dict | None:
    """The vault's entries for ``jobs.status``; None when the vault is off."""
    from lib.errors import StorageError

    settings = VaultSettings.from_environ(environ, keep_text)
    if not settings.enabled:
        return None
    location = locate(db, settings, environ)
    try:
        found, _ = entries(location)
        checks = read_checks(location)
    except (StorageError, CorruptObject) as exc:
        return {"location": location.describe(), "entries": [], "error": str(exc)}
    return {"location": location.describe(), "entries": [
        {"day": e.day, "bytes": e.manifest.bytes, "compressed_bytes": e.size, "sha256": e.manifest.sha256,
         "verified_at": e.manifest.verified_at, "restore_point": e.manifest.restore_point,
         "last_check": checks.get(e.day)} for e in found]}
