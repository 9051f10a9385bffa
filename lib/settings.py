"""restorable's own settings: what Litestream's config has no words for.

An optional YAML file (``--settings PATH``, else ``$RESTORABLE_SETTINGS``, else
``./restorable.yml`` when it exists, else built-in defaults) with a ``defaults:`` block
and per-database blocks under ``dbs:``, plus ``RESTORABLE_*`` environment overrides.
Precedence, strongest first: command-line flags, environment, per-database block,
``defaults:`` block, built-in defaults. The file is ours, so unknown keys are errors.
See docs/configuration.md for the file format.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from lib.durations import format_duration, parse_duration
from lib.errors import ConfigError

DEFAULT_SETTINGS_PATH = Path("restorable.yml")

# The derived max-age: a database that writes at least hourly has a new object in the
# replica well within an hour; the floor keeps short sync intervals from alarming on
# a brief write lull. Idle databases need an explicit max-age (see docs).
MAX_AGE_FLOOR_SECONDS = 3600.0
MAX_AGE_SYNC_INTERVALS = 60

ENV_MAX_AGE = "RESTORABLE_MAX_AGE"
ENV_ALLOW_EMPTY = "RESTORABLE_ALLOW_EMPTY"
ENV_RETENTION = "RESTORABLE_RETENTION"
ENV_ENFORCE_RETENTION = "RESTORABLE_ENFORCE_RETENTION"
ENV_SETTINGS = "RESTORABLE_SETTINGS"
BUILT_IN = "built-in default"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Probe:
    """A SQL query that should return a truthy single value on a healthy restore."""

    name: str
    sql: str


@dataclass(frozen=True)
class Freshness:
    """A query returning the newest application timestamp, and how old it may be."""

    sql: str
    max_age_seconds: float


@dataclass(frozen=True)
class DbSettings:
    """Expectations and policy for one database (all fields have built-in defaults)."""

    max_age_seconds: float | None = None  # None: derived from the sync interval
    allow_empty: bool = False
    retention_seconds: float | None = None  # None: the replica's retention, else 24h
    enforce_retention: bool = False
    keep_snapshots: int = 1
    row_drop_warning: float = 0.1
    row_drop_error: float = 0.5
    expect_tables: tuple[str, ...] = ()
    min_rows: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    freshness: Freshness | None = None
    probes: tuple[Probe, ...] = ()
    # (attribute, where its value came from) for values that are not built-in defaults.
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    @staticmethod
    def default_max_age(sync_interval_seconds: float) -> float:
        """The max-age used when none is configured: ``max(60 x sync-interval, 1h)``."""
        return max(MAX_AGE_SYNC_INTERVALS * sync_interval_seconds, MAX_AGE_FLOOR_SECONDS)

    def effective_max_age(self, sync_interval_seconds: float) -> float:
        """The configured max-age, else the default derived from the replica's sync interval."""
        if self.max_age_seconds is not None:
            return self.max_age_seconds
        return self.default_max_age(sync_interval_seconds)

    def origin(self, attribute: str) -> str:
        """Where ``attribute``'s value came from: a flag, ``$VARIABLE``, a settings key, or the default."""
        return dict(self.origins).get(attribute, BUILT_IN)

    def effective(self) -> dict[str, dict[str, Any]]:
        """Every setting as ``{"value": ..., "from": ...}`` in file syntax, for ``--print-config``."""
        out = {}
        for key, (attribute, _) in _READERS.items():
            value = _shown(getattr(self, attribute), is_duration=attribute in _DURATIONS)
            if attribute == "max_age_seconds" and value is None:
                value = "derived per replica: max(60 x sync-interval, 1h)"
            out[key] = {"value": value, "from": self.origin(attribute)}
        return out


@dataclass(frozen=True)
class Settings:
    """The loaded settings: where from, the defaults, and per-database blocks merged over them."""

    source: str | None  # the file read, or None for built-in defaults
    defaults: DbSettings = DbSettings()
    per_db: Mapping[str, DbSettings] = field(default_factory=lambda: MappingProxyType({}))

    def for_db(self, db_path: str) -> DbSettings:
        """Settings for ``db_path``: its block by exact path, else by basename, else defaults.

        Both sides are compared after making file paths absolute against the CWD, so a
        block keyed ``data/app.db`` matches the config's ``path: data/app.db``.
        """
        exact = self.per_db.get(_normalise_key(db_path))
        if exact is not None:
            return exact
        return self.per_db.get(_basename(db_path), self.defaults)

    def unmatched(self, db_paths: list[str]) -> list[str]:
        """Per-database keys that match none of ``db_paths`` (likely typos), sorted."""
        used = {_normalise_key(p) for p in db_paths} | {_basename(p) for p in db_paths}
        return sorted(key for key in self.per_db if key not in used)


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
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{source}: cannot read settings ({reason}); check the file and its permissions") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(
            f"{source}: {where}: invalid YAML ({exc.problem or exc.context}); fix the syntax there",
        ) from None
    except yaml.YAMLError:
        raise ConfigError(f"{source}: invalid YAML; check the file is a YAML mapping") from None
    except (ValueError, TypeError, IndexError, OverflowError):  # e.g. an empty `!!int`
        raise ConfigError(f"{source}: invalid YAML value; check explicit tags such as !!int") from None
    except RecursionError:  # PyYAML recurses once per nesting level
        raise ConfigError(f"{source}: YAML nested too deeply; settings need a few levels") from None
    return parse_settings(document, source)


def parse_settings(document: Any, source: str) -> Settings:
    """Build ``Settings`` from a loaded YAML document (``None`` for an empty file)."""
    if document is None:
        return Settings(source=source)
    top = _mapping(document, source)
    _reject_unknown(top, {"defaults", "dbs"}, source, is_top=True)
    defaults = _merge(DbSettings(), top.get("defaults") or {}, source, "defaults")
    blocks = _mapping(top.get("dbs") or {}, f"{source}: dbs")
    per_db: dict[str, DbSettings] = {}
    for raw_key, block in blocks.items():
        key = _normalise_key(str(raw_key))
        label = f"dbs.{printable(str(raw_key))}"
        if key in per_db:
            raise ConfigError(f"{source}: {label}: names the same database as another entry; merge them")
        per_db[key] = _merge(defaults, block or {}, source, label)
    return Settings(source=source, defaults=defaults, per_db=MappingProxyType(per_db))


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


def _read_duration(value: Any, key: str) -> float:
    seconds = parse_duration(value, key)
    if seconds <= 0:
        raise ConfigError(f"{key}: must be longer than zero, got {value!r}; use e.g. 1h")
    return seconds


def _read_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _read_count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: expected a whole number of at least 1, got {value!r}")
    return value


def _read_share(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{key}: expected a share between 0 and 1 (0.1 = 10 %), got {value!r}")
    return float(value)


def _read_tables(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise ConfigError(f"{key}: expected a list of table names, e.g. [users, orders]")
    return tuple(value)


def _read_min_rows(value: Any, key: str) -> Mapping[str, int]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of table to row count, e.g. {{users: 1}}")
    for table, count in value.items():
        if not isinstance(table, str) or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"{key}.{printable(str(table))}: expected a row count of 0 or more, got {count!r}")
    return MappingProxyType(dict(value))


def _read_freshness(value: Any, key: str) -> Freshness:
    block = _mapping(value, key)
    _reject_unknown(block, {"sql", "max-age"}, key)
    if "sql" not in block or "max-age" not in block:
        raise ConfigError(
            f"{key}: needs both sql: and max-age:, e.g. {{sql: \"SELECT max(ts) FROM heartbeat\", max-age: 10m}}",
        )
    return Freshness(
        sql=_read_sql(block["sql"], f"{key}.sql"),
        max_age_seconds=_read_duration(block["max-age"], f"{key}.max-age"),
    )


def _read_probes(value: Any, key: str) -> tuple[Probe, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of {{name: ..., sql: ...}}")
    probes = []
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        block = _mapping(item, where)
        _reject_unknown(block, {"name", "sql"}, where)
        name = block.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name: every probe needs a name for reports")
        if any(p.name == name for p in probes):
            raise ConfigError(f"{where}.name: duplicate probe name {name!r}; names must be distinct")
        probes.append(Probe(name=name, sql=_read_sql(block.get("sql"), f"{where}.sql")))
    return tuple(probes)


def _read_sql(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected an SQL query, e.g. \"SELECT count(*) > 0 FROM users\"")
    return value


# Settings file key -> (DbSettings attribute, reader(value, key_for_errors)).
_READERS = {
    "max-age": ("max_age_seconds", _read_duration),
    "allow-empty": ("allow_empty", _read_bool),
    "retention": ("retention_seconds", _read_duration),
    "enforce-retention": ("enforce_retention", _read_bool),
    "keep-snapshots": ("keep_snapshots", _read_count),
    "row-drop-warning": ("row_drop_warning", _read_share),
    "row-drop-error": ("row_drop_error", _read_share),
    "expect-tables": ("expect_tables", _read_tables),
    "min-rows": ("min_rows", _read_min_rows),
    "freshness": ("freshness", _read_freshness),
    "probes": ("probes", _read_probes),
}


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
        ENV_ALLOW_EMPTY: ("allow_empty", _env_bool),
        ENV_RETENTION: ("retention_seconds", _read_duration),
        ENV_ENFORCE_RETENTION: ("enforce_retention", _env_bool),
    }
    changes = {attribute: (read(environ[name], name), f"${name}")
               for name, (attribute, read) in readers.items() if environ.get(name)}
    return _override_all(settings, changes)


def _env_bool(value: str, name: str) -> bool:
    word = value.strip().lower()
    if word not in _TRUE_WORDS | _FALSE_WORDS:
        raise ConfigError(f"{name}={value!r} is not a boolean; set it to true or false (or 1/0, yes/no, on/off)")
    return word in _TRUE_WORDS


def _override_all(settings: Settings, changes: Mapping[str, tuple[Any, str]]) -> Settings:
    """Apply ``{attribute: (value, origin)}`` to the defaults and to every database block."""
    if not changes:
        return settings

    def apply(db: DbSettings) -> DbSettings:
        origins = dict(db.origins, **{attribute: origin for attribute, (_, origin) in changes.items()})
        return replace(db, **{a: value for a, (value, _) in changes.items()}, origins=tuple(origins.items()))

    per_db = {key: apply(db) for key, db in settings.per_db.items()}
    return replace(settings, defaults=apply(settings.defaults), per_db=MappingProxyType(per_db))


# --------------------------------------------------------------------------------- small


def _mapping(value: Any, label: str) -> dict:
    """``value`` if it is a mapping; ``label`` is ``source: key`` for the error."""
    if not isinstance(value, dict):
        raise ConfigError(f"{label}: expected a mapping of keys, got {type(value).__name__}")
    return value


def _reject_unknown(block: Mapping, known: set[str], label: str, *, is_top: bool = False) -> None:
    """Refuse keys outside ``known``; ``label`` is the block's ``source: key``."""
    for name in block:
        if name not in known:
            shown = printable(str(name))
            key = f"{label}: {shown}" if is_top else f"{label}.{shown}"
            raise ConfigError(f"{key}: unknown key; known keys here: {', '.join(sorted(known))}")


def printable(text: str) -> str:
    """``text`` itself if it fits on one line, else its repr (messages are one line)."""
    return text if text.isprintable() else repr(text)


def _normalise_key(db_path: str) -> str:
    """A per-database key as compared: file paths made absolute; basenames and URLs as is."""
    if "://" in db_path or "/" not in db_path and not db_path.startswith("~"):
        return db_path
    return os.path.normpath(os.path.join(os.getcwd(), os.path.expanduser(db_path)))


def _basename(db_path: str) -> str:
    return db_path.rstrip("/").rsplit("/", 1)[-1]


_DURATIONS = frozenset({"max_age_seconds", "retention_seconds"})


def _shown(value: Any, *, is_duration: bool = False) -> Any:
    """A setting's value in file syntax: durations as text, records as mappings."""
    if is_duration and value is not None:
        return format_duration(value)
    if isinstance(value, Freshness):
        return {"sql": value.sql, "max-age": format_duration(value.max_age_seconds)}
    if isinstance(value, tuple):
        return [_shown(item) for item in value]
    if isinstance(value, Probe):
        return {"name": value.name, "sql": value.sql}
    if isinstance(value, Mapping):
        return dict(value)
    return value


# --------------------------------------------------------------------- --print-config


def effective_config(config: Any, settings: Settings) -> dict[str, Any]:
    """What a run would use, as JSON-able data with secrets masked and every value's source.

    :param config: a ``lib.config.Config``; each replica gets the max-age that applies to it.
    """
    from lib.config import CONFIG_VAR, REPLICAS_VAR

    dbs = []
    for db in config.dbs:
        db_settings = settings.for_db(db.path)
        replicas = []
        for replica in db.replicas:
            fields = replica.effective()
            max_age = db_settings.effective_max_age(replica.sync_interval_seconds)
            origin = db_settings.origin("max_age_seconds")
            if db_settings.max_age_seconds is None:
                origin = "derived: max(60 x sync-interval, 1h)"
            fields["max-age"] = {"value": format_duration(max_age), "from": origin}
            replicas.append(fields)
        dbs.append({"path": db.path, "replicas": replicas, "settings": db_settings.effective()})
    return {
        "source": config.source,
        "precedence": ["replica URL arguments", "--config", f"${REPLICAS_VAR}", f"${CONFIG_VAR}",
                       "./litestream.yml", "/etc/litestream.yml"],
        "overridden": list(config.overridden),
        "settings_source": settings.source or "built-in defaults",
        "dbs": dbs,
    }
