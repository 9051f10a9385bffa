"""litestream.yml read as Litestream reads it: ``$VAR`` expansion, YAML, then one ReplicaConfig per replica.

The file pipeline follows Litestream's ``ParseConfig``: expand ``$VAR`` and ``${VAR}``
over the whole text (Go ``os.ExpandEnv`` semantics, ``lib.config.envexpand``), load the YAML,
then normalise each replica (``url:`` or ``bucket:``/``path:``, ``replica:`` or
``replicas:``) and fill empty fields from top-level keys and then from Railway/AWS
environment variables. Every problem is a one-line ``ConfigError`` naming the key, the
offending value (never a secret) and the fix. Every field remembers where it came from
(``ReplicaConfig.origin``), which ``--print-config`` shows.

Deliberate differences from Litestream, all towards failing loudly:

* an unset ``$VAR`` that feeds a key restorable reads is an error, not an empty string;
* an s3 replica without a bucket, a half-set key pair and a ``type:`` that contradicts
  the ``url:`` scheme are errors here, not at the first request;
* replica types other than ``s3`` and ``file`` are refused by name.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lib.config import envexpand
from lib.config.directories import DIR_KEYS_READ, build_dir_entry
from lib.config.environment import _Context, _Defaults, _env_defaults, _kind
from lib.config.known_keys import unknown_keys
from lib.config.litestream_v5 import read_v5_settings, strip_sqlite_prefix
from lib.config.model import Config, DbConfig, ReplicaConfig
from lib.config.parsing import load_yaml
from lib.config.replicas import _absolute, _build_replica

# Keys restorable reads. An unset variable anywhere else (exec:, logging:, addr:, ...)
# expands to "" exactly as in Litestream, because it cannot change what we verify.
TOP_KEYS_READ = frozenset(
    {"dbs", "access-key-id", "secret-access-key", "bucket", "endpoint", "region",
     "force-path-style", "skip-verify", "sync-interval",
     "snapshot", "retention", "l0-retention", "l0-retention-check-interval", "levels", "auto-recover"}
)

DB_KEYS_READ = frozenset({"path", "replica", "replicas", "snapshot"}) | DIR_KEYS_READ

REPLICA_KEYS_READ = frozenset(
    {"type", "name", "url", "path", "bucket", "endpoint", "region", "access-key-id",
     "secret-access-key", "force-path-style", "skip-verify", "retention", "sync-interval",
     "age", "sse-customer-algorithm", "sse-customer-key", "sse-customer-key-path", "auto-recover"}
)


def parse(
    text: str,
    environ: Mapping[str, str],
    *,
    source: str = "litestream.yml",
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """Parse config ``text`` as if read from ``source``; relative paths resolve against ``cwd``."""
    expanded = expand_env(text, environ, source=source)
    document = load_yaml(expanded, source, _TextLoader, "a Litestream config")
    base = _Context(source=source, cwd=Path(cwd) if cwd is not None else Path.cwd())
    return _build_config(document, base, environ)


def expand_env(text: str, environ: Mapping[str, str], *, source: str = "config") -> str:
    """Go's ``os.ExpandEnv`` over ``text``, strict for keys restorable reads (see ``lib.config.envexpand``).

    :raises ConfigError: an unset variable feeds a key restorable reads; names both.
    """
    return envexpand.expand_env(text, environ, source=source, is_read_key=_is_read_key)


def _is_read_key(path: Sequence[str | int]) -> bool:
    """Whether a key path (indexes included) is one restorable reads."""
    names = [part for part in path if isinstance(part, str)]
    if not names:
        return True
    if names[0] != "dbs":
        return names[0] in TOP_KEYS_READ
    if len(names) == 1:
        return True
    if names[1] in ("replica", "replicas"):
        return len(names) == 2 or names[2] in REPLICA_KEYS_READ
    return names[1] in DB_KEYS_READ

# ------------------------------------------------------------------------------------- YAML


class _TextLoader(yaml.SafeLoader):
    """A safe loader that leaves plain scalars as text (only ``null`` is resolved).

    Go's yaml.v2 fills a string field with the scalar's source text, so a secret such as
    ``0123e5`` or a bucket ``yes`` must not become a number or a boolean here.
    """


_KEPT_TAGS = {"tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"}

_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _KEPT_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

# Explicitly tagged scalars (`!!int 5`) are text too; PyYAML's own constructors raise
# IndexError/ValueError on bad input such as an empty `!!int`.
for _tag in ("bool", "int", "float", "binary", "timestamp"):
    _TextLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", yaml.SafeLoader.construct_scalar)


def _build_config(document: Any, base: _Context, environ: Mapping[str, str]) -> Config:
    if document is None:
        raise base.fail("dbs", "the config is empty; list the databases under dbs:")
    top = base.mapping(document, "")
    ctx = replace(base, top=_top_defaults(top, base), env=_env_defaults(environ))
    dbs = top.get("dbs")
    if dbs is None:
        raise ctx.fail("dbs", "no databases configured; add dbs: with a path and a replica for each")
    if not isinstance(dbs, list):
        raise ctx.fail("dbs", f"expected a list of databases, got {_kind(dbs)}")
    if not dbs:
        raise ctx.fail("dbs", "is empty; add at least one database with a path and a replica")
    unknown = unknown_keys(top)
    built = (_build_db(raw, i, ctx) for i, raw in enumerate(dbs))
    return Config(source=base.source, dbs=tuple(_with_v5(db, i, top, unknown, ctx) for i, db in enumerate(built)))


def _with_v5(db: DbConfig, index: int, top: Mapping, unknown: Sequence[str], ctx: _Context) -> DbConfig:
    """``db`` with the Litestream 0.5 settings that apply to it and the unknown keys that concern it."""
    key = f"dbs[{index}]"
    warnings = tuple(f"{ctx.where(k)}: unknown key; Litestream ignores it without a word (a misspelling?)"
                     for k in unknown if not k.startswith("dbs[") or k.startswith(f"{key}."))
    return replace(db, v5=read_v5_settings(top, index, ctx), warnings=warnings)


def _top_defaults(top: Mapping, ctx: _Context) -> _Defaults:
    """Top-level keys replicas inherit (v0.3 credentials; v0.5 global S3 settings)."""
    readers = {
        "bucket": ("bucket", ctx.text), "endpoint": ("endpoint", ctx.text), "region": ("region", ctx.text),
        "access_key_id": ("access-key-id", ctx.text), "secret_access_key": ("secret-access-key", ctx.text),
        "force_path_style": ("force-path-style", ctx.flag), "skip_verify": ("skip-verify", ctx.flag),
        "sync_interval": ("sync-interval", ctx.duration),
    }
    values = {attr: read(top, key, "") for attr, (key, read) in readers.items()}
    origins = tuple((attr, f"{ctx.where(readers[attr][0])} (top level)")
                    for attr, value in values.items() if value is not None)
    return _Defaults(**values, origins=origins)


def _build_db(raw: Any, index: int, ctx: _Context) -> DbConfig:
    key = f"dbs[{index}]"
    raw = ctx.mapping(raw, key)
    if ctx.text(raw, "dir", key) is not None:
        return build_dir_entry(raw, key, ctx, _build_replicas)
    path = ctx.text(raw, "path", key)
    if path is None:
        raise ctx.fail(f"{key}.path", "the database has no path; set path: to the SQLite file, e.g. /data/app.db")
    return DbConfig(path=_absolute(strip_sqlite_prefix(path), ctx.cwd), replicas=_build_replicas(raw, key, ctx),
                    written_path=path)


def _build_replicas(raw: Mapping, key: str, ctx: _Context) -> tuple[ReplicaConfig, ...]:
    replicas = tuple(_build_replica(entry, entry_key, ctx) for entry_key, entry in _replica_entries(raw, key, ctx))
    _check_unique_names(replicas, key, ctx)
    return replicas


def _replica_entries(raw: Mapping, key: str, ctx: _Context) -> list[tuple[str, Any]]:
    """``(key, entry)`` for each replica, from v0.5 ``replica:`` or v0.3 ``replicas:``."""
    single, many = raw.get("replica"), raw.get("replicas")
    if single is not None and many is not None:
        raise ctx.fail(
            key,
            "has both replica: and replicas:; keep one (replica: for Litestream 0.5, replicas: for 0.3)",
        )
    if single is not None:
        return [(f"{key}.replica", single)]
    if many is None:
        raise ctx.fail(key, "the database has no replica; add replica: (Litestream 0.5) or replicas: (0.3)")
    if not isinstance(many, list):
        raise ctx.fail(f"{key}.replicas", f"expected a list of replicas, got {_kind(many)}")
    if not many:
        raise ctx.fail(f"{key}.replicas", "is empty; add at least one replica")
    return [(f"{key}.replicas[{i}]", entry) for i, entry in enumerate(many)]


def _check_unique_names(replicas: Sequence[ReplicaConfig], key: str, ctx: _Context) -> None:
    seen: dict[str, int] = {}
    for index, replica in enumerate(replicas):
        if replica.name in seen:
            why = "; the name defaults to the type" if replica.name == replica.type else ""
            raise ctx.fail(
                f"{key}.replicas[{index}].name",
                f"duplicate replica name {replica.name!r} (replicas[{seen[replica.name]}] has it too{why}); "
                "give each replica a distinct name:",
            )
        seen[replica.name] = index
