"""restorable.yml's model: per-database settings (probes, freshness, limits), each value remembering its origin."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from lib.config.parsing import printable
from lib.errors import ConfigError
from lib.units import format_duration, parse_duration

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

ENV_MAX_RUNTIME = "RESTORABLE_MAX_RUNTIME"

DEFAULT_MAX_RUNTIME = "30m"  # every job, the scheduler's child runs and the Sentry monitor

# A five-field crontab in UTC: when jobs.schedule starts runs and when the Sentry monitor expects them.
ENV_SCHEDULE = "VERIFY_SCHEDULE"

DEFAULT_SCHEDULE = "0 * * * *"  # hourly, on the hour

BUILT_IN = "built-in default"


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
    cross_check: bool = False  # also restore with `litestream restore` and compare (lib/crosscheck)
    max_restore_seconds: float | None = None  # max-restore-time: a slower restore is an error (lib/recovery)
    min_window_seconds: float | None = None  # min-window: a shorter recovery window is a warning
    drill: str = "rotate"  # which older restore point each run drills (lib/recovery/drill.py)
    vault_keep: str | None = None  # "daily=7 weekly=4 monthly=12": keep verified copies (lib/vault)
    # archive-after of dir: tenants (lib/fleet/archived): None = the run's --archive-after, 0 = never
    archive_after_seconds: float | None = None
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


@dataclass(frozen=True)
class Settings:
    """The loaded settings: where from, the defaults, and per-database blocks merged over them."""

    source: str | None  # the file read, or None for built-in defaults
    defaults: DbSettings = DbSettings()
    per_db: Mapping[str, DbSettings] = field(default_factory=lambda: MappingProxyType({}))
    # per_db's keys as written in the file (they are compared normalised), for messages.
    written_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False)

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


def _normalise_key(db_path: str) -> str:
    """A per-database key as compared: file paths made absolute; basenames and URLs as is."""
    if "://" in db_path or "/" not in db_path and not db_path.startswith("~"):
        return db_path
    return os.path.normpath(os.path.join(os.getcwd(), os.path.expanduser(db_path)))


def _basename(db_path: str) -> str:
    return db_path.rstrip("/").rsplit("/", 1)[-1]


_DURATIONS = frozenset({"max_age_seconds", "retention_seconds", "max_restore_seconds", "min_window_seconds",
                        "archive_after_seconds"})


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


def max_runtime_seconds(flag: str | None, environ: Mapping[str, str]) -> float:
    """``--max-runtime``, else ``$RESTORABLE_MAX_RUNTIME``, else 30m, in seconds.

    :raises ConfigError: the value is not a duration.
    """
    raw = flag or environ.get(ENV_MAX_RUNTIME) or DEFAULT_MAX_RUNTIME
    return parse_duration(raw, f"--max-runtime / {ENV_MAX_RUNTIME}")
