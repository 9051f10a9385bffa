"""Settings overridden by RESTORABLE_* environment variables and command-line flags, each remembering where it came from."""
from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any, Mapping

from lib.config.parsing import env_bool
from lib.config.settings_model import (
    ENV_ALLOW_EMPTY,
    ENV_ENFORCE_RETENTION,
    ENV_MAX_AGE,
    ENV_RETENTION,
    DbSettings,
    Settings,
)
from lib.config.settings_values import _read_duration

# ----------------------------------------------------------------------------- overrides


def with_overrides(
    settings: Settings,
    *,
    max_age: float | str | None = None,
    allow_empty: bool | None = None,
    retention: float | str | None = None,
    enforce: bool | None = None,
) -> Settings:
    """``settings`` with command-line values applied to the defaults and every database.

    Durations may be seconds or duration text (``"2h"``); ``None`` leaves a value alone.
    Flags are applied after the environment, so they win over it and over the file.
    """
    changes: dict[str, tuple[Any, str]] = {}
    if max_age is not None:
        changes["max_age_seconds"] = (_read_duration(max_age, "--max-age"), "--max-age")
    if allow_empty is not None:
        changes["allow_empty"] = (allow_empty, "--allow-empty")
    if retention is not None:
        changes["retention_seconds"] = (_read_duration(retention, "--retention"), "--retention")
    if enforce is not None:
        changes["enforce_retention"] = (enforce, "--enforce")
    return _override_all(settings, changes)


def _apply_environment(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Apply ``RESTORABLE_*`` overrides; empty variables count as unset."""
    readers = {
        ENV_MAX_AGE: ("max_age_seconds", _read_duration),
        ENV_ALLOW_EMPTY: ("allow_empty", env_bool),
        ENV_RETENTION: ("retention_seconds", _read_duration),
        ENV_ENFORCE_RETENTION: ("enforce_retention", env_bool),
    }
    changes = {attribute: (read(environ[name], name), f"${name}")
               for name, (attribute, read) in readers.items() if environ.get(name)}
    return _override_all(settings, changes)


def _override_all(settings: Settings, changes: Mapping[str, tuple[Any, str]]) -> Settings:
    """Apply ``{attribute: (value, origin)}`` to the defaults and to every database block."""
    if not changes:
        return settings

    def apply(db: DbSettings) -> DbSettings:
        origins = dict(db.origins, **{attribute: origin for attribute, (_, origin) in changes.items()})
        return replace(db, **{a: value for a, (value, _) in changes.items()}, origins=tuple(origins.items()))

    per_db = {key: apply(db) for key, db in settings.per_db.items()}
    return replace(settings, defaults=apply(settings.defaults), per_db=MappingProxyType(per_db))
