"""restorable's own settings: what Litestream's config has no words for.

An optional YAML file (``--settings PATH``, else ``$RESTORABLE_SETTINGS``, else
``./restorable.yml`` when it exists, else built-in defaults) with a ``defaults:`` block
and per-database blocks under ``dbs:``, plus ``RESTORABLE_*`` environment overrides.
Precedence, strongest first: command-line flags, environment, per-database block,
``defaults:`` block, built-in defaults. The file is ours, so unknown keys are errors.
See docs/configuration.md for the file format.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from lib.config.overrides import _apply_environment
from lib.config.parsing import load_yaml, printable
from lib.config.settings_model import (
    DEFAULT_SETTINGS_PATH,
    ENV_SETTINGS,
    DbSettings,
    Settings,
    _mapping,
    _normalise_key,
    _reject_unknown,
)
from lib.config.settings_values import _READERS
from lib.errors import ConfigError

# ------------------------------------------------------------------------------ loading


def load_settings(
    path: str | None,
    environ: Mapping[str, str],
    *,
    default_path: Path = DEFAULT_SETTINGS_PATH,
) -> Settings:
    """Load ``--settings`` (``path``), ``$RESTORABLE_SETTINGS`` or ``./restorable.yml``.

    With none of them, built-in defaults. ``RESTORABLE_*`` overrides are applied last.

    :raises ConfigError: unreadable or invalid file, unknown key, bad override.
    """
    settings_path = _resolve_path(path, environ, default_path)
    settings = Settings(source=None) if settings_path is None else _read_file(settings_path)
    return _apply_environment(settings, environ)


def _resolve_path(cli_path: str | None, environ: Mapping[str, str], default_path: Path) -> Path | None:
    for value, origin in ((cli_path, "--settings"), (environ.get(ENV_SETTINGS), ENV_SETTINGS)):
        if value:
            explicit = Path(value).expanduser()
            if not explicit.is_file():
                raise ConfigError(
                    f"settings file {explicit} (from {origin}) does not exist; fix {origin} or create the file",
                )
            return explicit
    return default_path if default_path.is_file() else None


def _read_file(path: Path) -> Settings:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{source}: cannot read settings ({reason}); check the file and its permissions") from None
    return parse_settings(load_yaml(text, source, yaml.SafeLoader, "a settings file"), source)


def parse_settings(document: Any, source: str) -> Settings:
    """Build ``Settings`` from a loaded YAML document (``None`` for an empty file)."""
    if document is None:
        return Settings(source=source)
    top = _mapping(document, source)
    _reject_unknown(top, {"defaults", "dbs"}, source, is_top=True)
    defaults = _merge(DbSettings(), top.get("defaults") or {}, source, "defaults")
    blocks = _mapping(top.get("dbs") or {}, f"{source}: dbs")
    per_db: dict[str, DbSettings] = {}
    written: dict[str, str] = {}
    for raw_key, block in blocks.items():
        key = _normalise_key(str(raw_key))
        label = f"dbs.{printable(str(raw_key))}"
        if key in per_db:
            raise ConfigError(f"{source}: {label}: names the same database as another entry; merge them")
        per_db[key] = _merge(defaults, block or {}, source, label)
        written[key] = str(raw_key)
    return Settings(source=source, defaults=defaults, per_db=MappingProxyType(per_db),
                    written_keys=MappingProxyType(written))


def check_blocks_match(settings: Settings, db_paths: list[str]) -> None:
    """Refuse a per-database block that names none of ``db_paths``.

    Such a block is never applied, so its expect-tables, min-rows and probes would
    silently go unchecked while runs pass (a block keyed ``/data/app.db`` while the
    replica comes from ``RESTORABLE_REPLICAS=app=...``, whose database is called ``app``).

    :raises ConfigError: naming the first such block and the databases that exist.
    """
    unmatched = settings.unmatched(db_paths)
    if not unmatched:
        return
    names = [printable(settings.written_keys.get(key, key)) for key in unmatched]
    others = f" (also {', '.join(names[1:])})" if len(names) > 1 else ""
    raise ConfigError(
        f"{settings.source}: dbs.{names[0]}: names no database of this config{others}, so its settings would "
        f"never apply; key it by one of: {', '.join(map(printable, db_paths))} (a path or its file name)"
    )

# ------------------------------------------------------------------------ one block's keys


def _merge(base: DbSettings, block: Any, source: str, where: str) -> DbSettings:
    """``base`` with the keys present in ``block`` replaced (lists and maps replace whole)."""
    block = _mapping(block, f"{source}: {where}")
    _reject_unknown(block, set(_READERS), f"{source}: {where}")
    changes: dict[str, Any] = {}
    origins = dict(base.origins)
    for name, value in block.items():
        attribute, reader = _READERS[name]
        changes[attribute] = reader(value, f"{source}: {where}.{name}")
        origins[attribute] = f"{source}: {where}.{printable(str(name))}"
    merged = replace(base, **changes, origins=tuple(origins.items()))
    _check_thresholds(merged, source, where)
    return merged


def _check_thresholds(settings: DbSettings, source: str, where: str) -> None:
    if settings.row_drop_warning > settings.row_drop_error:
        raise ConfigError(
            f"{source}: {where}: row-drop-warning ({settings.row_drop_warning}) is above "
            f"row-drop-error ({settings.row_drop_error}); make the warning threshold the smaller one"
        )
