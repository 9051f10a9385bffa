"""Read the same ``litestream.yml`` the app uses (v0.3 and v0.5 shapes).

The pipeline follows Litestream's ``ParseConfig``: find the file, expand ``$VAR`` and
``${VAR}`` over the whole text (Go ``os.ExpandEnv`` semantics), load the YAML, then
normalise each replica (``url:`` or ``bucket:``/``path:``, ``replica:`` or ``replicas:``)
and fill empty fields from top-level keys and then from Railway/AWS environment
variables. Every problem is a one-line ``ConfigError`` naming the key, the offending value
(never a secret) and the fix.

Deliberate differences from Litestream, all towards failing loudly:

* an unset ``$VAR`` that feeds a key restorable reads is an error, not an empty string;
* an s3 replica without a bucket, a half-set key pair and a ``type:`` that contradicts
  the ``url:`` scheme are errors here, not at the first request;
* replica types other than ``s3`` and ``file`` are refused by name.
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import yaml

from lib.durations import parse_duration
from lib.errors import ConfigError
from lib.storage import LocalStore, ObjectStore, S3Settings, S3Store

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("s3", "file")

# Where the config is looked for when neither --config nor $LITESTREAM_CONFIG is given.
# Litestream itself only looks at /etc/litestream.yml; ./litestream.yml comes first here
# because Railway services run from the repository root.
DEFAULT_CONFIG_PATHS = (Path("litestream.yml"), Path("/etc/litestream.yml"))

DEFAULT_SYNC_INTERVAL = 1.0  # seconds; Litestream's default `sync-interval`

# Environment fallbacks for fields the file leaves empty, first set (non-empty) wins.
# BUCKET_NAME / BUCKET_ENDPOINT: Railway's Litestream template; AWS_S3_BUCKET_NAME and
# AWS_S3_URL_STYLE: Railway's bucket "AWS" variable preset; the rest: AWS SDK names
# (the service-specific AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL, as in the SDKs).
BUCKET_VARS = ("BUCKET_NAME", "AWS_S3_BUCKET_NAME")
ENDPOINT_VARS = ("BUCKET_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARS = ("AWS_DEFAULT_REGION", "AWS_REGION")
URL_STYLE_VAR = "AWS_S3_URL_STYLE"
# Litestream copies LITESTREAM_* to AWS_* only when the AWS_ variable is unset.
ACCESS_KEY_VARS = ("AWS_ACCESS_KEY_ID", "LITESTREAM_ACCESS_KEY_ID")
SECRET_KEY_VARS = ("AWS_SECRET_ACCESS_KEY", "LITESTREAM_SECRET_ACCESS_KEY")

# Keys restorable reads. An unset variable anywhere else (exec:, logging:, addr:, ...)
# expands to "" exactly as in Litestream, because it cannot change what we verify.
TOP_KEYS_READ = frozenset(
    {"dbs", "access-key-id", "secret-access-key", "bucket", "endpoint", "region",
     "force-path-style", "skip-verify", "sync-interval"}
)
DB_KEYS_READ = frozenset({"path", "replica", "replicas"})
REPLICA_KEYS_READ = frozenset(
    {"type", "name", "url", "path", "bucket", "endpoint", "region", "access-key-id",
     "secret-access-key", "force-path-style", "skip-verify", "retention", "sync-interval"}
)


@dataclass(frozen=True)
class ReplicaConfig:
    """One replica of one database, normalised from YAML, URL and environment.

    ``path`` is kept exactly as Litestream would use it to build keys: for ``s3`` the
    configured ``path`` verbatim (may be ``""``), or for a URL the cleaned URL path
    without its leading slash (``"."`` when the URL has none); for ``file`` the absolute
    directory.
    """

    name: str
    type: str  # "s3" | "file"
    path: str
    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    force_path_style: bool | None = None
    skip_verify: bool = False
    retention_seconds: float | None = None  # the replica's `retention`, if set
    sync_interval_seconds: float = 1.0

    def describe(self) -> str:
        """A human name for logs and reports, never containing a secret."""
        if self.type == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.path.lstrip('/')}"

    def s3_settings(self) -> S3Settings:
        return S3Settings(
            bucket=self.bucket or "",
            endpoint=self.endpoint,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            force_path_style=self.force_path_style,
            skip_verify=self.skip_verify,
        )

    def open_store(self) -> ObjectStore:
        if self.type == "file":
            return LocalStore(self.path)
        return S3Store(self.s3_settings())


@dataclass(frozen=True)
class DbConfig:
    path: str  # as written in the config (made absolute, like Litestream does)
    replicas: tuple[ReplicaConfig, ...]
    written_path: str = ""  # the `path:` exactly as written (before ~ and CWD); "" if unknown


@dataclass(frozen=True)
class Config:
    source: str  # the file it came from, or a description such as "RESTORABLE_REPLICAS"
    dbs: tuple[DbConfig, ...]

    def secrets(self) -> list[str]:
        """Every secret value in this config, for log and report scrubbing.

        The key pairs, plus the ``user:password`` part of an endpoint that carries one.
        """
        out = []
        for db in self.dbs:
            for r in db.replicas:
                out += [s for s in (r.access_key_id, r.secret_access_key, _userinfo(r.endpoint)) if s]
        return out


# --------------------------------------------------------------------------- entry points


def resolve_config_path(
    cli_path: str | None,
    environ: Mapping[str, str],
    *,
    search: Sequence[Path] = DEFAULT_CONFIG_PATHS,
) -> Path:
    """Pick the config file: ``--config``, else ``$LITESTREAM_CONFIG``, else ``search``.

    An explicitly named file must exist; the search list is tried in order.

    :raises ConfigError: naming every place tried and how to point at the file.
    """
    if cli_path:
        return _existing_file(Path(cli_path).expanduser(), "--config")
    if environ.get("LITESTREAM_CONFIG"):
        return _existing_file(Path(environ["LITESTREAM_CONFIG"]).expanduser(), "LITESTREAM_CONFIG")
    for candidate in search:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(p) for p in search)
    raise ConfigError(
        f"no Litestream config found (tried --config, $LITESTREAM_CONFIG, {tried}); "
        "pass --config PATH or set LITESTREAM_CONFIG to the litestream.yml the app uses"
    )


def _existing_file(path: Path, origin: str) -> Path:
    if path.is_file():
        return path
    problem = "is not a file" if path.exists() else "does not exist"
    raise ConfigError(f"config file {path} (from {origin}) {problem}; fix {origin} to name the litestream.yml")


def load(path: str | None, environ: Mapping[str, str]) -> Config:
    """Load the Litestream config named by ``--config`` (``path``) or found as documented.

    :raises ConfigError: for any problem, with a one-line message.
    """
    config_path = resolve_config_path(path, environ)
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{config_path}: cannot read config ({reason}); check the file and its permissions") from None
    return parse(text, environ, source=str(config_path))


def parse(
    text: str,
    environ: Mapping[str, str],
    *,
    source: str = "litestream.yml",
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """Parse config ``text`` as if read from ``source``; relative paths resolve against ``cwd``."""
    expanded = expand_env(text, environ, source=source)
    document = _load_yaml(expanded, source)
    base = _Context(source=source, cwd=Path(cwd) if cwd is not None else Path.cwd())
    return _build_config(document, base, environ)


def select_dbs(
    config: Config, wanted: Sequence[str], *, cwd: str | os.PathLike[str] | None = None
) -> tuple[DbConfig, ...]:
    """The databases named by ``--db`` values, in the order given (all when none given).

    A value matches a database whose path equals it made absolute (``~`` expanded, against
    ``cwd``), or whose path is exactly the value as written in the config.

    :raises ConfigError: a value matches nothing; the message lists the known paths.
    """
    if not wanted:
        return config.dbs
    base = Path(cwd) if cwd is not None else Path.cwd()
    chosen: list[DbConfig] = []
    for value in wanted:
        db = _find_db(config.dbs, value, base)
        if db is None:
            known = ", ".join(db.path for db in config.dbs)
            raise ConfigError(
                f"--db {_printable(value)}: no such database in {config.source}; known databases: {known}",
            )
        if db not in chosen:
            chosen.append(db)
    return tuple(chosen)


def _find_db(dbs: Sequence[DbConfig], value: str, cwd: Path) -> DbConfig | None:
    absolute = value if _looks_like_url(value) else _absolute(value, cwd)
    for db in dbs:
        if value in (db.path, db.written_path) or absolute == db.path:
            return db
    return None


def config_from_urls(
    urls: Sequence[str],
    environ: Mapping[str, str],
    *,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """A config with one database per replica URL (``s3://bucket/path`` or ``file:///dir``).

    Each database's ``path`` is the URL itself (credentials in it redacted). Endpoint,
    region and path style come from the URL (host detection, query parameters) and then
    from the same environment fallbacks as the file.
    """
    if not urls:
        raise ConfigError("command line: no replica URL given; pass s3://BUCKET/PATH or file:///PATH")
    base = _Context(source="command line", cwd=Path(cwd) if cwd is not None else Path.cwd())
    base = replace(base, env=_env_defaults(environ))
    dbs = []
    for number, url in enumerate(urls, start=1):
        ctx = replace(base, source=f"command line (URL {number})")
        replica = _build_replica({"url": url}, "", ctx)
        shown = redact_url(url)
        dbs.append(DbConfig(path=shown, replicas=(replica,), written_path=shown))
    return Config(source="command line", dbs=tuple(dbs))


# --------------------------------------------------------------------- environment expansion

_SPECIAL_NAMES = frozenset("*#$@!?-0123456789")
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_")
_IDENTIFIER_START = frozenset(string.ascii_letters + "_")


@dataclass(frozen=True)
class _Reference:
    """An unset variable referenced in the config text."""

    name: str
    offset: int  # index of its "$" in the text


def expand_env(text: str, environ: Mapping[str, str], *, source: str = "config") -> str:
    """Expand ``$NAME`` and ``${NAME}`` like Go's ``os.ExpandEnv``, but strictly.

    Go's quirks are kept: a name is the longest ``[A-Za-z0-9_]`` run; ``$`` plus one of
    ``*#$@!?-`` or a digit is a special variable (so ``$$`` and ``$1`` vanish); ``${}``
    and an unclosed ``${`` are deleted; a ``$`` before anything else is kept.

    Unlike Go, an unset variable whose name starts like an identifier is an error when
    it feeds a key restorable reads. One set to ``""`` expands to ``""``. References in
    comments and in keys restorable ignores, and odd names such as ``${ x}``, expand to
    ``""`` as in Litestream.

    :raises ConfigError: naming the variable, the key it feeds and the fix.
    """
    missing: list[_Reference] = []

    def lookup(name: str, offset: int) -> str:
        if name in environ:
            return environ[name]
        if name[0] in _IDENTIFIER_START:
            missing.append(_Reference(name, offset))
        return ""

    expanded = _go_expand(text, lookup)
    if missing:
        _raise_for_missing(text, missing, source)
    return expanded


def _go_expand(text: str, lookup: Callable[[str, int], str]) -> str:
    """Go's ``os.Expand`` over ``text``; ``lookup(name, offset_of_dollar)`` gives values."""
    out: list[str] = []
    literal_start = 0
    pos = 0
    while pos < len(text):
        if text[pos] == "$" and pos + 1 < len(text):
            out.append(text[literal_start:pos])
            name, width = _shell_name(text, pos + 1)
            if name:
                out.append(lookup(name, pos))
            elif width == 0:
                out.append("$")  # valid syntax but no name: keep the dollar
            pos += width
            literal_start = pos + 1
        pos += 1
    out.append(text[literal_start:])
    return "".join(out)


def _shell_name(text: str, start: int) -> tuple[str, int]:
    """The variable name after a ``$`` at ``start - 1`` and how many characters it uses.

    ``("", n > 0)`` means bad syntax whose ``n`` characters are swallowed.
    """
    first = text[start]
    if first == "{":
        if start + 2 < len(text) and text[start + 1] in _SPECIAL_NAMES and text[start + 2] == "}":
            return text[start + 1], 3
        close = text.find("}", start + 1)
        if close == -1:
            return "", 1  # unclosed "${": eat it
        if close == start + 1:
            return "", 2  # "${}": eat it
        return text[start + 1 : close], close - start + 1
    if first in _SPECIAL_NAMES:
        return first, 1
    end = start
    while end < len(text) and text[end] in _NAME_CHARS:
        end += 1
    return text[start:end], end - start


def _raise_for_missing(text: str, missing: Sequence[_Reference], source: str) -> None:
    """Raise for the first unset variable that feeds a key restorable reads, if any."""
    tree = _compose_quietly(text)
    feeding: list[tuple[_Reference, str]] = []
    for ref in missing:
        key = _reference_key(tree, text, ref.offset)
        if key is None:
            log.debug("unset variable in an ignored part of the config name=%s", ref.name)
        else:
            feeding.append((ref, key))
    if not feeding:
        return
    ref, key = feeding[0]
    name = _printable(ref.name)
    others = sorted({other.name for other, _ in feeding} - {ref.name})
    also = f" (also unset: {', '.join(map(_printable, others))})" if others else ""
    hint = "" if ref.name.isidentifier() else " (Litestream has no ${VAR:-default} syntax)"
    raise ConfigError(
        f"{source}: {key} uses ${{{name}}}, which is not set{hint}; set {name} in the environment{also}"
    )


def _printable(text: str) -> str:
    """``text`` itself if it fits on one line, else its repr (messages are one line)."""
    return text if text.isprintable() else repr(text)


def _compose_quietly(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _reference_key(tree: yaml.Node | None, text: str, offset: int) -> str | None:
    """The dotted key a ``$`` at ``offset`` feeds, or None when it feeds nothing we read."""
    line = text.count("\n", 0, offset) + 1
    if tree is None:  # unparsable before expansion: fall back to the line
        return _line_key(text, offset, line)
    path = _node_path(tree, offset, set())
    if path is None or not _is_read_key(path):
        return None
    return format_key(path) or f"line {line}"


def _line_key(text: str, offset: int, line: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    match = re.match(r"\s*(?:-\s+)?([\w.-]+)\s*:", text[start:offset])
    return f"{match.group(1)} (line {line})" if match else f"line {line}"


def _node_path(node: yaml.Node, offset: int, seen: set[int]) -> list[str | int] | None:
    """Keys and indexes from the root to the scalar covering ``offset``; None if none does."""
    if isinstance(node, yaml.ScalarNode):
        return [] if node.start_mark.index <= offset < node.end_mark.index else None
    if id(node) in seen:  # aliases can make the node graph cyclic
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            label = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            if _node_path(key_node, offset, seen) is not None:
                return [label]
            below = _node_path(value_node, offset, seen)
            if below is not None:
                return [label, *below]
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            below = _node_path(item, offset, seen)
            if below is not None:
                return [index, *below]
    return None


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


def format_key(path: Sequence[str | int]) -> str:
    """``["dbs", 0, "replicas", 1, "bucket"]`` -> ``dbs[0].replicas[1].bucket``."""
    out = ""
    for part in path:
        name = _printable(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out


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

# YAML 1.1 booleans, as yaml.v2 reads them.
_TRUE_WORDS = frozenset("y Y yes Yes YES true True TRUE on On ON".split())
_FALSE_WORDS = frozenset("n N no No NO false False FALSE off Off OFF".split())
# Go's strconv.ParseBool, used for URL query values.
_GO_TRUE = frozenset("1 t T TRUE true True".split())
_GO_FALSE = frozenset("0 f F FALSE false False".split())


def _load_yaml(text: str, source: str) -> Any:
    """Load YAML; syntax errors become one line with the line number and no file excerpt.

    PyYAML's own message quotes the offending line, which may hold an expanded secret,
    so only its ``problem`` and position are used.
    """
    try:
        return yaml.load(text, Loader=_TextLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid syntax"
        raise ConfigError(f"{source}: {where}: invalid YAML ({problem}); fix the syntax there") from None
    except yaml.YAMLError:
        raise ConfigError(f"{source}: invalid YAML; check the file is a YAML mapping") from None
    except (ValueError, TypeError, IndexError, OverflowError):  # a constructor choking on a value
        raise ConfigError(f"{source}: invalid YAML value (a tagged scalar?); check tags such as !!set") from None


# ------------------------------------------------------------------------------ normalising


@dataclass(frozen=True)
class _Defaults:
    """Values a replica inherits for keys it leaves empty (top-level keys or environment)."""

    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    force_path_style: bool | None = None
    skip_verify: bool | None = None
    sync_interval: float | None = None


def _env_defaults(environ: Mapping[str, str]) -> _Defaults:
    """Railway/AWS conventions read from the environment (see the *_VARS constants).

    :raises ConfigError: ``AWS_S3_URL_STYLE`` is set to something other than path/virtual.
    """
    style = environ.get(URL_STYLE_VAR, "").strip().lower()
    styles = {"": None, "path": True, "virtual": False}
    if style not in styles:
        raise ConfigError(
            f"{URL_STYLE_VAR}={_show(environ[URL_STYLE_VAR])} is not a URL style; "
            "set it to 'path' or 'virtual', or unset it"
        )
    return _Defaults(
        bucket=_first_set(environ, BUCKET_VARS),
        endpoint=_first_set(environ, ENDPOINT_VARS),
        region=_first_set(environ, REGION_VARS),
        access_key_id=_first_set(environ, ACCESS_KEY_VARS),
        secret_access_key=_first_set(environ, SECRET_KEY_VARS),
        force_path_style=styles[style],
    )


def _first_set(environ: Mapping[str, str], names: Sequence[str]) -> str | None:
    for name in names:
        if environ.get(name):
            return environ[name]
    return None


@dataclass(frozen=True)
class _Context:
    """What every normalising step needs: where errors point, and the inherited values."""

    source: str
    cwd: Path
    top: _Defaults = _Defaults()
    env: _Defaults = _Defaults()

    def where(self, key: str) -> str:
        """The prefix of every message about ``key``: ``source: key``."""
        return f"{self.source}: {key}" if key else self.source

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {message}")

    def mapping(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping of keys, got {_kind(value)}")
        return value

    def text(self, raw: Mapping, name: str, key: str) -> str | None:
        """A string-valued key; empty and null mean unset."""
        value = raw.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise self.fail(_join(key, name), f"expected a string, got {_kind(value)}")

    def flag(self, raw: Mapping, name: str, key: str) -> bool | None:
        """A boolean key (YAML 1.1 words, as yaml.v2 reads them); empty and null mean unset."""
        value = raw.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in _TRUE_WORDS | _FALSE_WORDS:
            return value in _TRUE_WORDS
        raise self.fail(_join(key, name), f"expected true or false, got {_show(value)}")

    def duration(self, raw: Mapping, name: str, key: str) -> float | None:
        value = raw.get(name)
        if value is None or value == "":
            return None
        return parse_duration(value, self.where(_join(key, name)))


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
    return Config(source=base.source, dbs=tuple(_build_db(raw, i, ctx) for i, raw in enumerate(dbs)))


def _top_defaults(top: Mapping, ctx: _Context) -> _Defaults:
    """Top-level keys replicas inherit (v0.3 credentials; v0.5 global S3 settings)."""
    return _Defaults(
        bucket=ctx.text(top, "bucket", ""),
        endpoint=ctx.text(top, "endpoint", ""),
        region=ctx.text(top, "region", ""),
        access_key_id=ctx.text(top, "access-key-id", ""),
        secret_access_key=ctx.text(top, "secret-access-key", ""),
        force_path_style=ctx.flag(top, "force-path-style", ""),
        skip_verify=ctx.flag(top, "skip-verify", ""),
        sync_interval=ctx.duration(top, "sync-interval", ""),
    )


def _build_db(raw: Any, index: int, ctx: _Context) -> DbConfig:
    key = f"dbs[{index}]"
    raw = ctx.mapping(raw, key)
    path = ctx.text(raw, "path", key)
    if path is None:
        if raw.get("dir") is not None:
            raise ctx.fail(
                f"{key}.dir",
                "directory replication is not supported by restorable; list each database with path:",
            )
        raise ctx.fail(f"{key}.path", "the database has no path; set path: to the SQLite file, e.g. /data/app.db")
    replicas = tuple(_build_replica(entry, entry_key, ctx) for entry_key, entry in _replica_entries(raw, key, ctx))
    _check_unique_names(replicas, key, ctx)
    return DbConfig(path=_absolute(path, ctx.cwd), replicas=replicas, written_path=path)


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


def _build_replica(raw: Any, key: str, ctx: _Context) -> ReplicaConfig:
    raw = ctx.mapping(raw, key)
    url = ctx.text(raw, "url", key)
    kind = _replica_type(raw, url, key, ctx)
    if raw.get("age"):
        raise ctx.fail(
            _join(key, "age"),
            "age-encrypted replicas are not supported by restorable; verify an unencrypted replica",
        )
    sync_interval = ctx.duration(raw, "sync-interval", key)
    if sync_interval is None:
        sync_interval = ctx.top.sync_interval if ctx.top.sync_interval is not None else DEFAULT_SYNC_INTERVAL
    build = _file_replica if kind == "file" else _s3_replica
    return replace(
        build(raw, url, key, ctx),
        name=ctx.text(raw, "name", key) or kind,
        retention_seconds=ctx.duration(raw, "retention", key),
        sync_interval_seconds=sync_interval,
    )


def _replica_type(raw: Mapping, url: str | None, key: str, ctx: _Context) -> str:
    """The replica type: the URL scheme, else ``type:``, else ``file`` (Litestream's rule)."""
    explicit = ctx.text(raw, "type", key)
    scheme = _url_scheme(url, ctx.where(_join(key, "url"))) if url else None
    if scheme and explicit and scheme != explicit:
        raise ctx.fail(
            _join(key, "type"),
            f"type {explicit!r} contradicts the url scheme {scheme!r}; remove type: or fix url:",
        )
    kind = scheme or explicit or "file"
    if kind not in SUPPORTED_TYPES:
        origin = "url" if scheme else "type"
        raise ctx.fail(
            _join(key, origin),
            f"replica type {_show(kind)} is not supported by restorable (supported: {', '.join(SUPPORTED_TYPES)})",
        )
    return kind


def _file_replica(raw: Mapping, url: str | None, key: str, ctx: _Context) -> ReplicaConfig:
    path = ctx.text(raw, "path", key)
    if url is not None and path is not None:
        raise ctx.fail(key, "cannot specify url & path for file replica; keep one of them")
    if url is not None:
        path = parse_file_url(url, ctx.where(_join(key, "url")))
    elif path is None:
        raise ctx.fail(
            _join(key, "path"),
            "a file replica needs a directory; set path: /backups/app.db or url: file:///backups/app.db",
        )
    elif _looks_like_url(path):
        raise ctx.fail(_join(key, "path"), "replica path cannot be a url; move it to url:")
    return ReplicaConfig(name="file", type="file", path=_absolute(path, ctx.cwd))


def _s3_replica(raw: Mapping, url: str | None, key: str, ctx: _Context) -> ReplicaConfig:
    if url is not None:
        for conflicting in ("path", "bucket"):
            if ctx.text(raw, conflicting, key) is not None:
                raise ctx.fail(
                    key,
                    f"cannot specify url & {conflicting} for s3 replica; put them in the url or drop url:",
                )
        parsed = parse_s3_url(url, ctx.where(_join(key, "url")))
    else:
        path = ctx.text(raw, "path", key) or ""
        if _looks_like_url(path):
            raise ctx.fail(_join(key, "path"), "replica path cannot be a url; move it to url:")
        parsed = S3Url(bucket=ctx.text(raw, "bucket", key), path=path)
    bucket = _first(parsed.bucket, ctx.top.bucket, ctx.env.bucket)
    if not bucket:
        raise _missing_bucket(key, url is not None, ctx)
    access_key_id, secret_access_key = _credentials(raw, key, ctx)
    return ReplicaConfig(
        name="s3",
        type="s3",
        path=parsed.path,
        bucket=bucket,
        endpoint=_first(ctx.text(raw, "endpoint", key), parsed.endpoint, ctx.top.endpoint, ctx.env.endpoint),
        region=_first(ctx.text(raw, "region", key), parsed.region, ctx.top.region, ctx.env.region),
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        force_path_style=_path_style(ctx.flag(raw, "force-path-style", key), parsed, ctx),
        skip_verify=bool(_first(ctx.flag(raw, "skip-verify", key), parsed.skip_verify, ctx.top.skip_verify)),
    )


def _missing_bucket(key: str, from_url: bool, ctx: _Context) -> ConfigError:
    env = " or ".join(BUCKET_VARS)
    if from_url:
        return ctx.fail(
            _join(key, "url"),
            f"the s3 url names no bucket; use s3://BUCKET/PATH or set {env} in the environment",
        )
    return ctx.fail(
        _join(key, "bucket"),
        f"the s3 replica has no bucket; set bucket: (or url: s3://BUCKET/PATH) or set {env} in the environment",
    )


def _path_style(explicit: bool | None, parsed: S3Url, ctx: _Context) -> bool | None:
    """Path-style addressing: explicit setting, forced by a provider URL, then environment.

    Litestream applies a provider host's path style whenever the configured value is not
    true, so a provider URL wins even over ``force-path-style: false``. ``None`` leaves the
    choice to the storage layer (path style exactly when there is an endpoint).
    """
    style = _first(explicit, parsed.force_path_style, ctx.top.force_path_style)
    if parsed.is_provider_path_style and not style:
        style = True
    return style if style is not None else ctx.env.force_path_style


def _credentials(raw: Mapping, key: str, ctx: _Context) -> tuple[str | None, str | None]:
    """The key pair: replica keys, else top-level keys (per field), else the environment pair."""
    access = ctx.text(raw, "access-key-id", key) or ctx.top.access_key_id
    secret = ctx.text(raw, "secret-access-key", key) or ctx.top.secret_access_key
    if access or secret:
        if not (access and secret):
            pair = ("access-key-id", "secret-access-key")
            present, absent = pair if access else pair[::-1]
            raise ctx.fail(
                key,
                f"{present} is set but {absent} is empty; set both, or neither to use the environment's credentials",
            )
        return access, secret
    access, secret = ctx.env.access_key_id, ctx.env.secret_access_key
    if bool(access) != bool(secret):
        present, absent = (ACCESS_KEY_VARS, SECRET_KEY_VARS) if access else (SECRET_KEY_VARS, ACCESS_KEY_VARS)
        raise ctx.fail(key, f"{present[0]} is set but {absent[0]} is not; set both in the environment, or neither")
    return access, secret


# ------------------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class S3Url:
    """What an ``s3://`` URL says about a replica (query parameters included)."""

    bucket: str | None
    path: str
    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool | None = None  # from ?forcePathStyle=
    skip_verify: bool | None = None  # from ?skipVerify=
    is_provider_path_style: bool = False  # the host named a provider Litestream forces path style for


@dataclass(frozen=True)
class _Provider:
    bucket: str | None
    region: str | None
    endpoint: str | None
    is_path_style: bool


# Litestream 0.3's host detection (s3.ParseHost): (host pattern, endpoint, fixed region).
# The port, if any, is appended to the endpoint; localhost is plain http.
_PROVIDER_HOSTS = (
    (re.compile(r"(?:(?P<bucket>.+)\.)?localhost"), "http://localhost", "us-east-1"),
    (re.compile(r"(?:(?P<bucket>.+)\.)?s3\.(?P<region>[^.]+)\.backblazeb2\.com"),
     "https://s3.{region}.backblazeb2.com", None),
    (re.compile(r"(?:(?P<bucket>.+)\.)?s3\.filebase\.com"), "https://s3.filebase.com", None),
    (re.compile(r"(?:(?P<bucket>.+)\.)?(?P<region>[^.]+)\.digitaloceanspaces\.com"),
     "https://{region}.digitaloceanspaces.com", None),
    (re.compile(r"(?:(?P<bucket>.+)\.)?s3\.(?P<region>[^.]+)\.scw\.cloud"), "https://s3.{region}.scw.cloud", None),
    (re.compile(r"(?:(?P<bucket>.+)\.)?(?P<region>[^.]+)\.linodeobjects\.com"),
     "https://{region}.linodeobjects.com", None),
)
# Litestream 0.5 also reads AWS virtual-host names (bucket.s3[.region].amazonaws.com).
_AWS_HOST = re.compile(r"(?P<bucket>.+)\.s3(?:[.-](?P<region>[^.]+))?\.amazonaws\.com")
_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[^:]*))?")


def parse_s3_url(url: str, where: str) -> S3Url:
    """Read bucket, path, endpoint, region and flags from an ``s3://`` URL.

    The path is cleaned like Go's ``path.Clean`` minus its leading slash (``.`` when the
    URL has none). Query keys ``endpoint``, ``region``, ``forcePathStyle`` and
    ``skipVerify`` are honoured (Litestream 0.5); others are ignored. Credentials in the
    URL are ignored, as Litestream does.

    :param where: the source and key, prefixed to error messages.
    :raises ConfigError: the URL cannot be parsed; the message never shows credentials.
    """
    parts = _split_url(url, where)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if userinfo:
        log.warning("ignoring credentials in a replica url (Litestream ignores them too) key=%s", where)
    host, port = _split_host_port(hostport, url, where)
    provider = _detect_provider(host, port)
    query = parse_qs(parts.query, keep_blank_values=True)
    return S3Url(
        bucket=provider.bucket,
        path=_clean_url_path(unquote(parts.path)),
        endpoint=_query_text(query, "endpoint") or provider.endpoint,
        region=_query_text(query, "region") or provider.region,
        force_path_style=_query_flag(query, "forcePathStyle", where),
        skip_verify=_query_flag(query, "skipVerify", where),
        is_provider_path_style=provider.is_path_style,
    )


def parse_file_url(url: str, where: str) -> str:
    """The directory of a ``file:///abs/path`` URL (``file:/abs/path`` also accepted).

    :raises ConfigError: the URL has a host or a relative path.
    """
    parts = _split_url(url, where)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/"):
        raise ConfigError(
            f"{where}: {_show(redact_url(url))} is not a file URL with an absolute path; use file:///ABSOLUTE/PATH",
        )
    return posixpath.normpath(path)


def _url_scheme(url: str, where: str) -> str:
    scheme = _split_url(url, where).scheme
    if not scheme:
        raise ConfigError(f"{where}: {_show(redact_url(url))} is not a URL; use s3://BUCKET/PATH or file:///PATH")
    return scheme


def _split_url(url: str, where: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:  # e.g. unbalanced [ ] in the host; the exception text quotes the URL
        raise ConfigError(
            f"{where}: {_show(redact_url(url))} is not a valid URL; use s3://BUCKET/PATH or file:///PATH",
        ) from None


def _split_host_port(hostport: str, url: str, where: str) -> tuple[str, str]:
    match = _HOST_PORT.fullmatch(hostport)
    port = (match.group("port") or "") if match else ""
    if match is None or not (port.isascii() and port.isdigit() or port == ""):
        raise ConfigError(f"{where}: {_show(redact_url(url))} has an invalid host or port; use s3://BUCKET/PATH")
    return match.group("host"), port


def _detect_provider(host: str, port: str) -> _Provider:
    """Bucket, region and endpoint implied by an ``s3://`` URL's host (Litestream's table)."""
    suffix = f":{port}" if port else ""
    for pattern, endpoint, fixed_region in _PROVIDER_HOSTS:
        match = pattern.fullmatch(host)
        if match:
            region = fixed_region or match.groupdict().get("region")
            return _Provider(match.group("bucket") or None, region, endpoint.format(region=region) + suffix, True)
    match = _AWS_HOST.fullmatch(host)
    if match:
        return _Provider(match.group("bucket"), match.group("region"), None, False)
    if port and "." in host and not host.endswith(".com"):
        # Litestream 0.5's MinIO form bucket.host:port (0.3 dropped the port and used AWS).
        bucket, _, server = host.partition(".")
        return _Provider(bucket, "us-east-1", f"http://{server}{suffix}", True)
    return _Provider(host or None, None, None, False)


def _clean_url_path(path: str) -> str:
    """Go's ``strings.TrimPrefix(path.Clean(p), "/")``: ``""`` -> ``.``, ``/`` -> ``""``."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):  # POSIX keeps a double leading slash; Go does not
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned[1:] if cleaned.startswith("/") else cleaned


def _query_text(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values and values[0] else None


def _query_flag(query: Mapping[str, list[str]], name: str, where: str) -> bool | None:
    value = _query_text(query, name)
    if value is None:
        return None
    if value in _GO_TRUE | _GO_FALSE:
        return value in _GO_TRUE
    raise ConfigError(f"{where}: query {name}={_show(value)} is not a boolean; use {name}=true or {name}=false")


def redact_url(url: str) -> str:
    """``url`` with anything that could be ``user:password@`` replaced by ``***@``.

    Everything between ``://`` and the last ``@`` goes, even if that over-redacts a path
    containing ``@``: a password may itself contain ``/`` or ``@``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"


# ------------------------------------------------------------------------------------ small


def _userinfo(url: str | None) -> str | None:
    """The ``user:password`` before the host of ``url``, if any."""
    if not url or "@" not in url:
        return None
    rest = url.partition("://")[2] or url
    return rest.rpartition("@")[0] or None


def _absolute(path: str, cwd: Path) -> str:
    """``path`` with ``~`` expanded, made absolute against ``cwd`` and cleaned."""
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(path)))


def _looks_like_url(text: str) -> bool:
    """Litestream's ``isURL``: a word, then ``://``."""
    return re.match(r"\w+://", text) is not None


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next((value for value in values if value is not None), None)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), f"a {type(value).__name__}")


def _show(value: Any, limit: int = 80) -> str:
    """A one-line, length-limited rendering of a non-secret value for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
