"""Litestream 0.5 directory replication entries (``dbs: - dir: ... pattern: ... recursive: ...``).

Litestream (``cmd/litestream/main.go``, ``NewDBsFromDirectoryConfig``) scans ``dir`` for
files whose base name matches ``pattern`` (Go ``filepath.Match``) and that start with the
SQLite header, descending into sub-folders only when ``recursive`` is true. Each database
found gets a copy of the entry's replica whose path is the replica path joined with the
database's path relative to ``dir`` (``cloneReplicaConfigWithRelativePath``): a file
replica keeps ``<path>/<rel>/ltx/<level>/...``, an S3 one ``<path>/<rel>/<level %04x>/...``.
``watch`` only changes when Litestream notices new files; it changes nothing here.

restorable never sees the application's disk, so an entry parsed here is a template
(``DbConfig.directory`` set, replicas rooted at the entry's replica path); the tenants
are found in the bucket at run time by ``lib.fleet.tenants``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from lib.config.environment import _Context
from lib.config.model import DbConfig, ReplicaConfig

DIR_KEYS_READ = frozenset({"dir", "pattern", "recursive", "watch"})


@dataclass(frozen=True)
class DirSpec:
    """One ``dir:`` entry: which databases Litestream replicates from it."""

    dir: str  # absolute, cleaned (as Litestream's expand + filepath.Rel see it)
    pattern: str  # a base-name glob, Go filepath.Match syntax
    recursive: bool = False
    watch: bool = False
    written_dir: str = ""  # the `dir:` exactly as written

    def matches(self, rel: str) -> bool:
        """Whether Litestream would replicate the database at ``rel`` (relative to ``dir``)."""
        if not self.recursive and "/" in rel:
            return False
        return go_match(self.pattern, rel.rsplit("/", 1)[-1])


def build_dir_entry(raw: Mapping, key: str, ctx: _Context,
                    build_replicas: Callable[[Mapping, str, _Context], tuple[ReplicaConfig, ...]]) -> DbConfig:
    """The template ``DbConfig`` for the ``dir:`` entry ``raw`` at ``key`` (``dbs[i]``).

    :raises ConfigError: ``path`` and ``dir`` both set, no ``pattern`` (Litestream requires
        one), or a pattern Go would reject.
    """
    written = ctx.text(raw, "dir", key)
    if ctx.text(raw, "path", key) is not None:
        raise ctx.fail(key, "has both path: and dir:; keep one (dir: replicates every database in a folder)")
    pattern = ctx.text(raw, "pattern", key)
    if pattern is None:
        raise ctx.fail(f"{key}.pattern", "is required with dir: (as in Litestream); set a base-name glob, "
                       "e.g. pattern: \"*.db\"")
    if _go_pattern(pattern) is None:
        raise ctx.fail(f"{key}.pattern", f"{pattern!r} is not a valid glob; use e.g. \"*.db\"")
    spec = DirSpec(
        dir=os.path.normpath(os.path.join(ctx.cwd, os.path.expanduser(written))),
        pattern=pattern,
        recursive=bool(ctx.flag(raw, "recursive", key)),
        watch=bool(ctx.flag(raw, "watch", key)),
        written_dir=written,
    )
    return DbConfig(path=spec.dir, replicas=build_replicas(raw, key, ctx), written_path=written, directory=spec)


def tenant_replica_path(replica: ReplicaConfig, rel: str) -> str:
    """The replica path Litestream gives the tenant at ``rel`` (``cloneReplicaConfigWithRelativePath``).

    A file replica joins OS paths; an S3 one joins with ``path.Join`` (cleaned), and a
    URL without a path (kept here as ``"."``) becomes ``rel`` itself.
    """
    if replica.type == "file":
        return os.path.join(replica.path, rel)
    if replica.path in ("", "."):
        return rel
    return clean_posix(replica.path + "/" + rel)


def clean_posix(path: str) -> str:
    """Go's ``path.Clean`` for the joined, non-empty paths built here."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    joined = "/".join(parts)
    return ("/" + joined) if rooted else (joined or ".")

# ------------------------------------------------------------------------- Go filepath.Match


def go_match(pattern: str, name: str) -> bool:
    """Go ``filepath.Match`` on a base name: ``*``, ``?``, ``[...]`` with ``^`` negation, ``\\`` escapes."""
    compiled = _go_pattern(pattern)
    return bool(compiled and compiled.fullmatch(name))


def _go_pattern(pattern: str) -> re.Pattern | None:
    """The regular expression for a Go glob, or None when Go would return ErrBadPattern."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\":
            if i + 1 >= len(pattern):
                return None
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            end = _class_end(pattern, i)
            if end is None:
                return None
            body = pattern[i + 1:end]
            negate = body[:1] == "^"
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:
        return None


def _class_end(pattern: str, start: int) -> int | None:
    """Index of the ``]`` closing the class opened at ``start``; None when unclosed or empty."""
    i = start + 1
    if pattern[i:i + 1] == "^":
        i += 1
    first = i
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]" and i > first:
            return i
        i += 1
    return None


def has_glob(key: Any) -> bool:
    return isinstance(key, str) and any(c in key for c in "*?[")
