"""Readers for the values of restorable.yml: each checks one key's type and range and names the key when it is wrong."""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from lib.config.parsing import printable
from lib.config.settings_model import Freshness, Probe, _mapping, _reject_unknown
from lib.errors import ConfigError
from lib.units import parse_duration
from lib.vault.plan import parse_policy

DRILL_MODES = ("rotate", "oldest", "random", "generation", "none")  # lib.recovery.drill.MODES


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


def _read_drill(value: Any, key: str) -> str:
    if value not in DRILL_MODES:
        raise ConfigError(f"{key}: expected one of {', '.join(DRILL_MODES)}, got {value!r}")
    return value


def _read_vault_keep(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected text such as \"daily=7 weekly=4 monthly=12\", got {value!r}")
    parse_policy(value, key)
    return value


def _read_archive_after(value: Any, key: str) -> float:
    """A duration, or ``off`` (0: never archive these tenants, whatever the run's --archive-after).
    YAML reads a bare ``off`` as false."""
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "never")):
        return 0.0
    return _read_duration(value, key)


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
    "cross-check": ("cross_check", _read_bool),
    "max-restore-time": ("max_restore_seconds", _read_duration),
    "min-window": ("min_window_seconds", _read_duration),
    "drill": ("drill", _read_drill),
    "vault-keep": ("vault_keep", _read_vault_keep),
    "archive-after": ("archive_after_seconds", _read_archive_after),
}
