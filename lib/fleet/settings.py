"""restorable.yml blocks for many tenants: a block keyed by a ``dir:`` entry's folder or by a glob.

A tenant (``lib.fleet.tenants.TenantDb``) takes, strongest first: a block keyed by its
own relative path or file name (as any database), then the first block whose key is a
glob matching its relative path or file name (in file order), then a block keyed by the
``dir:`` of its entry, then ``defaults:``. The chosen block is recorded under the
tenant's own path, so ``Settings.for_db`` needs no change.

A glob or folder block that matches no tenant this run is not an error (tenants come
and go); it is logged.
"""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import replace
from types import MappingProxyType

from lib.config.directories import has_glob
from lib.config.model import Config
from lib.config.settings_model import Settings, _basename, _normalise_key

log = logging.getLogger(__name__)


def for_tenants(settings: Settings, config: Config) -> tuple[Settings, list[str]]:
    """``settings`` with each tenant's block resolved, and the fleet keys (as written) that
    ``check_blocks_match`` must treat as used."""
    tenants = [db for db in config.dbs if getattr(db, "parent", None) is not None]
    dir_keys = {_normalise_key(db.parent.dir): db.parent.dir for db in tenants}
    glob_keys = [key for key in settings.per_db if has_glob(settings.written_keys.get(key, key))]
    fleet_keys = [key for key in settings.per_db if key in dir_keys or key in glob_keys]
    if not tenants or not fleet_keys:
        return settings, [settings.written_keys.get(k, k) for k in fleet_keys]
    per_db = dict(settings.per_db)
    used: set[str] = set()
    for db in tenants:
        own = _normalise_key(db.path)
        if own in per_db or _basename(db.path) in per_db:
            continue
        chosen = _glob_block(settings, glob_keys, db.path) or _dir_block(settings, db.parent.dir)
        if chosen is not None:
            per_db[own] = settings.per_db[chosen]
            used.add(chosen)
    for key in fleet_keys:
        if key not in used:
            log.info("settings block %s matches no tenant found this run", settings.written_keys.get(key, key))
    written = [settings.written_keys.get(k, k) for k in fleet_keys]
    return replace(settings, per_db=MappingProxyType(per_db)), written


def _glob_block(settings: Settings, glob_keys: list[str], rel: str) -> str | None:
    for key in glob_keys:
        pattern = settings.written_keys.get(key, key)
        if fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(_basename(rel), pattern):
            return key
    return None


def _dir_block(settings: Settings, directory: str) -> str | None:
    key = _normalise_key(directory)
    return key if key in settings.per_db else None
