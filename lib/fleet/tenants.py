"""Find the tenants of Litestream ``dir:`` entries in the bucket, one recursive listing per replica.

A ``dir:`` entry (``lib.config.directories``) is a template. Its tenants are the
databases whose LTX files sit under the replica path: ``<path>/<rel>/ltx/<level>/<ltx>``
for a file replica, ``<path>/<rel>/<level %04x>/<ltx>`` for S3, where ``<rel>`` is the
database's path relative to ``dir``. ``pattern`` and ``recursive`` filter ``rel`` as
Litestream filters the files it replicates. Each tenant becomes an ordinary ``DbConfig``
named by ``rel``, so everything a ``path:`` database gets applies to it unchanged.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Iterable

from lib.config.directories import DirSpec, clean_posix, tenant_replica_path
from lib.config.model import Config, DbConfig, ReplicaConfig
from lib.fleet.prelisted import Prelisting, PrelistedStore
from lib.litestream.v3.layout import v3_generations_prefix
from lib.litestream.v5.layout import v5_prefix
from lib.storage.base import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

_LTX = r"[0-9a-f]{16}-[0-9a-f]{16}\.ltx"

# Greedy ``rel``: the key ends with the level folder and the LTX name, whatever ``rel`` holds.
_TENANT_KEY = {
    "file": re.compile(rf"^(?P<rel>.+)/ltx/[0-9]+/{_LTX}$"),
    "s3": re.compile(rf"^(?P<rel>.+)/[0-9a-f]{{4}}/{_LTX}$"),
}


@dataclass(frozen=True)
class TenantReplica(ReplicaConfig):
    """A tenant's replica; its first listing comes from the shared one (``lib.fleet.prelisted``)."""

    prelisting: Any = field(default=None, compare=False, repr=False)

    def open_store(self) -> ObjectStore:
        store = super().open_store()
        return store if self.prelisting is None else PrelistedStore(store, self.prelisting)


@dataclass(frozen=True)
class TenantDb(DbConfig):
    """A database found under a ``dir:`` entry; ``path`` is its path relative to ``dir``."""

    parent: DirSpec | None = field(default=None, compare=False)


@dataclass
class Listing:
    """What one replica of one ``dir:`` entry holds, by tenant."""

    tenants: dict[str, list[ObjectInfo]]
    excluded: list[str]  # tenants the pattern or recursive: false leave out
    server_now: datetime


def expand(config: Config) -> Config:
    """``config`` with every ``dir:`` entry replaced by its tenants, in path order.

    An entry whose replicas hold no tenant stays as one database named by its ``dir``,
    rooted at the replica path, so the run reports "no backups" there instead of
    silently verifying nothing.

    :raises StorageUnavailable: a replica could not be listed (the run cannot tell).
    """
    if not any(db.directory is not None for db in config.dbs):
        return config
    dbs: list[DbConfig] = []
    taken = {db.path for db in config.dbs if db.directory is None}
    for db in config.dbs:
        if db.directory is None:
            dbs.append(db)
            continue
        tenants = tenants_of(db)
        if not tenants:
            log.warning("no databases matching %s found under %s", db.directory.pattern,
                        ", ".join(r.describe() for r in db.replicas))
            dbs.append(replace(db, directory=None))
            continue
        for tenant in tenants:
            if tenant.path in taken:  # two dir: entries (or a path:) with the same relative path
                tenant = replace(tenant, path=f"{db.directory.dir}/{tenant.path}")
            taken.add(tenant.path)
            dbs.append(tenant)
    return replace(config, dbs=tuple(dbs))


def tenants_of(db: DbConfig) -> list[TenantDb]:
    """The tenants of one ``dir:`` entry: the union over its replicas, each tenant with every replica."""
    spec: DirSpec = db.directory
    listings = [list_tenants(replica, spec) for replica in db.replicas]
    names = sorted(set().union(*(listing.tenants for listing in listings)))
    for replica, listing in zip(db.replicas, listings):
        if listing.excluded:
            log.info("%d database(s) under %s do not match pattern %r (recursive: %s), e.g. %s",
                     len(listing.excluded), replica.describe(), spec.pattern, spec.recursive, listing.excluded[0])
    return [TenantDb(path=rel, written_path=rel, parent=spec,
                     replicas=tuple(_tenant_replica(r, rel, listing) for r, listing in zip(db.replicas, listings)))
            for rel in names]


def list_tenants(replica: ReplicaConfig, spec: DirSpec) -> Listing:
    """One recursive listing of ``replica``'s root, grouped by tenant and filtered like Litestream."""
    store = replica.open_store()
    prefix = root_prefix(replica)
    objects = store.list(prefix)
    server_now = store.server_now() or datetime.now(timezone.utc)
    tenants: dict[str, list[ObjectInfo]] = {}
    excluded: set[str] = set()
    for rel, obj in _by_tenant(objects, prefix, replica.type):
        if spec.matches(rel):
            tenants.setdefault(rel, []).append(obj)
        else:
            excluded.add(rel)
    return Listing(tenants=tenants, excluded=sorted(excluded), server_now=server_now)


def root_prefix(replica: ReplicaConfig) -> str:
    """The key prefix below which every tenant's objects live ("" for a file store's root)."""
    if replica.type == "file" or replica.path in ("", "."):
        return ""
    return clean_posix(replica.path).rstrip("/") + "/"


def _by_tenant(objects: Iterable[ObjectInfo], prefix: str, replica_type: str) -> Iterable[tuple[str, ObjectInfo]]:
    pattern = _TENANT_KEY["file" if replica_type == "file" else "s3"]
    for obj in objects:
        match = pattern.match(obj.key[len(prefix):])
        if match:
            yield match.group("rel"), obj


def _tenant_replica(replica: ReplicaConfig, rel: str, listing: Listing) -> TenantReplica:
    """``replica`` as Litestream configures it for the tenant at ``rel``, with its prelisted objects."""
    objects = listing.tenants.get(rel)
    if objects is not None and replica.type == "file":  # a file store is rooted at the tenant's folder
        strip = len(rel) + 1
        objects = [ObjectInfo(o.key[strip:], o.size, o.last_modified) for o in objects]
    return replica_for(replica, rel, objects, listing.server_now)


def replica_for(replica: ReplicaConfig, rel: str, objects: list[ObjectInfo] | None,
                server_now: datetime) -> TenantReplica:
    """The tenant's replica; ``objects`` (keys as the tenant's own store names them) answer its first
    listing, or None to list for itself."""
    fields = {name: getattr(replica, name) for name in replica.__dataclass_fields__}
    fields["path"] = tenant_replica_path(replica, rel)
    prelisting = None
    if objects is not None:
        prefixes = (v3_generations_prefix(replica.type, fields["path"]), v5_prefix(replica.type, fields["path"]))
        prelisting = Prelisting(objects, server_now, prefixes)
    return TenantReplica(**fields, prelisting=prelisting)


def tenant_of(template: DbConfig, rel: str, objects: dict[str, list[ObjectInfo]] | None = None,
              server_now: datetime | None = None) -> TenantDb:
    """The tenant at ``rel`` of the ``dir:`` entry ``template``, without listing (a worker's view).

    ``objects`` maps a replica name to the tenant's prelisted objects (as ``replica_for``
    takes them), from the enqueuer's listing; a replica missing there lists for itself.
    """
    now = server_now or datetime.now(timezone.utc)
    replicas = tuple(replica_for(r, rel, (objects or {}).get(r.name), now) for r in template.replicas)
    return TenantDb(path=rel, written_path=rel, parent=template.directory, replicas=replicas)
