"""Every key Litestream 0.3.13 or 0.5.17 reads from litestream.yml, and the ones it would ignore.

Litestream unmarshals its config with yaml.v2 in non-strict mode, so a misspelt key
(``retension:``, ``snapshot-intervall:``) is dropped without a word and the default
silently applies. restorable names such keys in a warning instead.

The sets are the ``yaml:"..."`` struct tags of ``cmd/litestream/main.go`` at v0.3.13 and
of the 0.5.17 binary (``strings litestream | grep yaml:``), grouped by the struct that
holds them. A key known to either release is not reported: the config may be shared by
an app still on 0.3.
"""
from __future__ import annotations

from typing import Any, Iterator

# ReplicaSettings (0.5: inline at the top level and in every replica) and the 0.3 replica keys.
REPLICA_SETTINGS = frozenset({
    "sync-interval", "validation-interval", "max-sync-ltx-files", "auto-recover",
    "access-key-id", "secret-access-key", "region", "bucket", "endpoint", "force-path-style",
    "sign-payload", "require-content-md5", "sign-accept-encoding", "skip-verify", "storage-class",
    "part-size", "concurrency",
    "sse-customer-algorithm", "sse-customer-key", "sse-customer-key-path", "sse-kms-key-id",
    "account-name", "account-key", "sas-token",
    "host", "user", "password", "key-path", "concurrent-writes", "host-key",
    "webdav-url", "webdav-username", "webdav-password",
    "jwt", "seed", "creds", "nkey", "username", "token", "tls", "root-cas", "client-cert", "client-key",
    "max-reconnects", "reconnect-wait", "timeout",
    "age",
})

REPLICA_V3_ONLY = frozenset({"retention", "retention-check-interval", "snapshot-interval"})

REPLICA_KEYS = REPLICA_SETTINGS | REPLICA_V3_ONLY | {"type", "name", "path", "url"}

TOP_KEYS = REPLICA_SETTINGS | {
    "addr", "socket", "levels", "snapshot", "validation", "l0-retention", "l0-retention-check-interval",
    "verify-compaction", "retention", "heartbeat-url", "heartbeat-interval", "dbs", "exec", "logging",
    "mcp-addr", "shutdown-sync-timeout", "shutdown-sync-interval",
}

DB_KEYS = frozenset({
    "path", "dir", "pattern", "recursive", "watch", "snapshot", "meta-path", "meta-dir", "monitor-interval",
    "checkpoint-interval", "busy-timeout", "min-checkpoint-page-count", "max-checkpoint-page-count",
    "truncate-page-n", "max-sync-wal-bytes", "restore-if-db-not-exists", "replica", "replicas",
})

# Nested mappings: the keys each one holds.
NESTED = {
    "logging": frozenset({"level", "type", "stderr", "source"}),
    "socket": frozenset({"enabled", "path", "permissions"}),
    "snapshot": frozenset({"interval", "retention"}),
    "validation": frozenset({"interval"}),
    "retention": frozenset({"enabled"}),
    "age": frozenset({"identities", "recipients"}),
}

LEVEL_KEYS = frozenset({"interval"})


def unknown_keys(document: Any) -> list[str]:
    """Dotted paths (``dbs[0].replica.retension``) of keys neither release reads, in file order.

    Values of the wrong shape are skipped here: the readers report those as errors.
    """
    if not isinstance(document, dict):
        return []
    return list(_walk_mapping(document, TOP_KEYS, ""))


def _walk_mapping(raw: dict, known: frozenset, where: str) -> Iterator[str]:
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            yield path
            continue
        yield from _walk_value(key, value, path, top_level=not where)


def _walk_value(key: Any, value: Any, path: str, *, top_level: bool) -> Iterator[str]:
    if key == "dbs" and isinstance(value, list):
        for i, db in enumerate(value):
            if isinstance(db, dict):
                yield from _walk_db(db, f"{path}[{i}]")
    elif key == "levels" and isinstance(value, list):
        for i, level in enumerate(value):
            if isinstance(level, dict):
                yield from _walk_mapping(level, LEVEL_KEYS, f"{path}[{i}]")
    elif key == "retention" and not top_level:
        return  # a 0.3 replica's retention is a duration, not a mapping
    elif key in NESTED and isinstance(value, dict):
        yield from _walk_mapping(value, NESTED[key], path)


def _walk_db(db: dict, where: str) -> Iterator[str]:
    for key, value in db.items():
        path = f"{where}.{key}"
        if key not in DB_KEYS:
            yield path
        elif key == "replica" and isinstance(value, dict):
            yield from _walk_mapping(value, REPLICA_KEYS, path)
        elif key == "replicas" and isinstance(value, list):
            for i, replica in enumerate(value):
                if isinstance(replica, dict):
                    yield from _walk_mapping(replica, REPLICA_KEYS, f"{path}[{i}]")
        elif key == "snapshot" and isinstance(value, dict):
            yield from _walk_mapping(value, NESTED["snapshot"], path)
