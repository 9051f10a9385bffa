"""Which replicas to verify: the app's ``litestream.yml``, replica URLs, or the environment.

Three sources, strongest first (``load_effective``): replica URLs on the command line,
then ``--config``, then ``$RESTORABLE_REPLICAS`` (a file-free deployment), then
``$LITESTREAM_CONFIG``, ``./litestream.yml`` and ``/etc/litestream.yml``.

The file pipeline follows Litestream's ``ParseConfig``: expand ``$VAR`` and ``${VAR}``
over the whole text (Go ``os.ExpandEnv`` semantics, ``lib.envexpand``), load the YAML,
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

import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lib import envexpand
from lib.durations import format_duration, parse_duration
from lib.envexpand import format_key, printable
from lib.errors import ConfigError
from lib.s3url import (S3Url, looks_like_url, parse_file_url, parse_s3_url, redact_url, show, url_scheme,
                       userinfo)
from lib.storage import LocalStore, ObjectStore, S3Settings, S3Store

__all__ = [
    "Config", "DbConfig", "ReplicaConfig", "ConfigError", "S3Url", "config_from_env", "config_from_urls",
    "expand_env", "format_key", "load", "load_effective", "parse", "parse_file_url", "parse_replica_list",
    "parse_s3_url", "redact_url", "resolve_config_path", "select_dbs",
]

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("s3", "file")

# Where the config is looked for when neither --config nor $LITESTREAM_CONFIG is given.
# Litestream itself only looks at /etc/litestream.yml; ./litestream.yml comes first here
# because Railway services run from the repository root.
DEFAULT_CONFIG_PATHS = (Path("litestream.yml"), Path("/etc/litestream.yml"))
CONFIG_VAR = "LITESTREAM_CONFIG"
REPLICAS_VAR = "RESTORABLE_REPLICAS"

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
# Temporary credentials (STS, SSO): only with the AWS_ACCESS_KEY_ID pair it belongs to.
SESSION_TOKEN_VAR = "AWS_SESSION_TOKEN"

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

DEFAULT_ORIGIN = "default"
MASK = "****"


@dataclass(frozen=True)
class ReplicaConfig:
    """One replica of one database, normalised from YAML, URL and environment.

    ``path`` is kept exactly as Litestream would use it to build keys: for ``s3`` the
    configured ``path`` verbatim (may be ``""``), or for a URL the cleaned URL path
    without its leading slash (``"."`` when the URL has none); for ``file`` the absolute
    directory. ``origins`` maps a field name to where its value came from (a config key,
    a URL, ``$VARIABLE``); fields missing there are defaults.
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
    session_token: str | None = field(default=None, repr=False)
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def describe(self) -> str:
        """A human name for logs and reports, never containing a secret."""
        if self.type == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.path.lstrip('/')}"

    def origin(self, name: str) -> str:
        """Where field ``name`` came from, or ``"default"``."""
        return dict(self.origins).get(name, DEFAULT_ORIGIN)

    def s3_settings(self) -> S3Settings:
        return S3Settings(
            bucket=self.bucket or "",
            endpoint=self.endpoint,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            session_token=self.session_token,
            force_path_style=self.force_path_style,
            skip_verify=self.skip_verify,
        )

    def open_store(self) -> ObjectStore:
        if self.type == "file":
            return LocalStore(self.path)
        return S3Store(self.s3_settings())

    def effective(self) -> dict[str, dict[str, Any]]:
        """Every field as ``{"value": ..., "from": ...}`` with secrets masked, for ``--print-config``."""
        fields: dict[str, Any] = {"name": self.name, "type": self.type, "path": self.path}
        if self.type == "s3":
            fields.update({
                "bucket": self.bucket,
                "endpoint": redact_url(self.endpoint) if self.endpoint else None,
                "region": self.region,
                "force-path-style": _path_style_shown(self),
                "skip-verify": self.skip_verify,
                "access-key-id": _mask(self.access_key_id, keep=4),
                "secret-access-key": _mask(self.secret_access_key),
                "session-token": _mask(self.session_token),
            })
        fields["sync-interval"] = format_duration(self.sync_interval_seconds)
        fields["retention"] = format_duration(self.retention_seconds) if self.retention_seconds else None
        attributes = {"force-path-style": "force_path_style", "sync-interval": "sync_interval_seconds",
                      "retention": "retention_seconds"}
        return {key: {"value": value, "from": self.origin(attributes.get(key, key.replace("-", "_")))}
                for key, value in fields.items()}


def _path_style_shown(replica: ReplicaConfig) -> bool | str:
    if replica.force_path_style is not None:
        return replica.force_path_style
    return "auto (path style when an endpoint is set)"


def _mask(secret: str | None, *, keep: int = 0) -> str | None:
    """``****`` for a secret; with ``keep``, a long value keeps that many leading characters."""
    if not secret:
        return None
    if keep and len(secret) >= 16:
        return secret[:keep] + MASK
    return MASK


@dataclass(frozen=True)
class DbConfig:
    path: str  # as written in the config (made absolute, like Litestream does), a URL, or a name
    replicas: tuple[ReplicaConfig, ...]
    written_path: str = ""  # the `path:` exactly as written (before ~ and CWD); "" if unknown


@dataclass(frozen=True)
class Config:
    source: str  # the file it came from, "command line" or "RESTORABLE_REPLICAS"
    dbs: tuple[DbConfig, ...]
    # Lower-precedence sources that were also set and are therefore not used.
    overridden: tuple[str, ...] = field(default=(), compare=False)

    def secrets(self) -> list[str]:
        """Every secret value in this config, for log and report scrubbing.

        The key pairs and session tokens, plus the ``user:password`` part of an endpoint
        that carries one.
        """
        out = []
        for db in self.dbs:
            for r in db.replicas:
                candidates = (r.access_key_id, r.secret_access_key, r.session_token, userinfo(r.endpoint))
                out += [s for s in candidates if s]
        return out


# --------------------------------------------------------------------------- entry points


def load_effective(
    urls: Sequence[str],
    cli_path: str | None,
    environ: Mapping[str, str],
    *,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """The replicas to verify, from the strongest source that is set.

    Order: replica ``urls`` (command line), ``--config`` (``cli_path``),
    ``$RESTORABLE_REPLICAS``, then ``$LITESTREAM_CONFIG`` and the default files. Weaker
    sources that are set too are listed in ``Config.overridden``.

    :raises ConfigError: for any problem in the chosen source, with a one-line message.
    """
    present = _sources_present(urls, cli_path, environ)
    chosen = present[0] if present else "file"
    if chosen == "urls":
        config = config_from_urls(urls, environ, cwd=cwd)
    elif chosen == REPLICAS_VAR:
        config = config_from_env(environ, cwd=cwd)
    else:
        config = load(cli_path, environ)
    overridden = tuple(_describe_source(name, cli_path, environ) for name in present[1:])
    return replace(config, overridden=overridden)


def _sources_present(urls: Sequence[str], cli_path: str | None, environ: Mapping[str, str]) -> list[str]:
    present = []
    if urls:
        present.append("urls")
    if cli_path:
        present.append("--config")
    if environ.get(REPLICAS_VAR, "").strip():
        present.append(REPLICAS_VAR)
    if environ.get(CONFIG_VAR):
        present.append(CONFIG_VAR)
    return present


def _describe_source(name: str, cli_path: str | None, environ: Mapping[str, str]) -> str:
    if name == "--config":
        return f"--config {cli_path}"
    if name == CONFIG_VAR:
        return f"${CONFIG_VAR} ({environ[CONFIG_VAR]})"
    if name == REPLICAS_VAR:
        return f"${REPLICAS_VAR}"
    return "replica URL arguments"


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
    if environ.get(CONFIG_VAR):
        return _existing_file(Path(environ[CONFIG_VAR]).expanduser(), CONFIG_VAR)
    for candidate in search:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(p) for p in search)
    raise ConfigError(
        f"no Litestream config found (tried --config, ${CONFIG_VAR}, ${REPLICAS_VAR}, {tried}); "
        f"pass --config PATH, set {CONFIG_VAR} to the litestream.yml the app uses, "
        f"or set {REPLICAS_VAR}=s3://BUCKET/PATH"
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


def expand_env(text: str, environ: Mapping[str, str], *, source: str = "config") -> str:
    """Go's ``os.ExpandEnv`` over ``text``, strict for keys restorable reads (see ``lib.envexpand``).

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
                f"--db {printable(value)}: no such database in {config.source}; known databases: {known}",
            )
        if db not in chosen:
            chosen.append(db)
    return tuple(chosen)


def _find_db(dbs: Sequence[DbConfig], value: str, cwd: Path) -> DbConfig | None:
    absolute = value if looks_like_url(value) else _absolute(value, cwd)
    for db in dbs:
        if value in (db.path, db.written_path) or absolute == db.path:
            return db
    return None


# ------------------------------------------------------------------------ replicas by URL


def config_from_urls(
    urls: Sequence[str],
    environ: Mapping[str, str],
    *,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """A config with one database per replica URL (``s3://bucket/path`` or ``file:///dir``).

    Each database's ``path`` is the URL itself (credentials in it redacted). Endpoint,
    region and path style come from the URL (host detection, query parameters) and then
    from the same environment fallbacks as the file; credentials from the environment.

    :raises ConfigError: no URL, or a URL that names no usable replica.
    """
    if not urls:
        raise ConfigError("command line: no replica URL given; pass s3://BUCKET/PATH or file:///PATH")
    entries = [_ReplicaEntry(f"command line (URL {n})", None, url) for n, url in enumerate(urls, start=1)]
    return _config_from_entries(entries, environ, "command line", cwd)


# Optional "NAME=" before a URL: no ":" or "/" before the "=", so a URL's own query
# ("s3://b/p?region=auto") is never taken for a name.
_NAMED_ENTRY = re.compile(r"(?P<name>[^=:/]*)=(?P<url>.*)", re.DOTALL)
_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LIST_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class _ReplicaEntry:
    """One replica URL from the command line or ``$RESTORABLE_REPLICAS``."""

    where: str  # prefix of error messages, e.g. "RESTORABLE_REPLICAS entry 2 (app)"
    name: str | None
    url: str


def parse_replica_list(text: str) -> list[tuple[str | None, str]]:
    """Split ``$RESTORABLE_REPLICAS`` into ``(name or None, url)`` pairs, in order.

    Entries are separated by whitespace and/or commas (percent-encode either inside a
    URL); each is ``URL`` or ``NAME=URL`` with NAME made of letters, digits, ``.``, ``_``
    and ``-`` (at most 64, starting with a letter or digit).

    :raises ConfigError: an empty list, a bad name, or a name or URL listed twice.
    """
    pairs: list[tuple[str | None, str]] = []
    for number, entry in enumerate((e for e in _LIST_SEPARATORS.split(text) if e), start=1):
        match = _NAMED_ENTRY.fullmatch(entry)
        name, url = (match.group("name"), match.group("url")) if match else (None, entry)
        if name is not None and not _VALID_NAME.fullmatch(name):
            raise ConfigError(
                f"{REPLICAS_VAR} entry {number}: name {show(name)} is not valid; use letters, digits, '.', '_' "
                "or '-' (at most 64), as in app=s3://BUCKET/app.db"
            )
        if not url:
            raise ConfigError(f"{REPLICAS_VAR} entry {number} ({name}): no URL after '='; write {name}=s3://BUCKET/PATH")
        pairs.append((name, url))
    if not pairs:
        raise ConfigError(f"{REPLICAS_VAR} holds no replica URL; set it to e.g. app=s3://BUCKET/app.db")
    _check_unique_entries(pairs)
    return pairs


def _check_unique_entries(pairs: Sequence[tuple[str | None, str]]) -> None:
    seen: dict[str, int] = {}
    for number, (name, url) in enumerate(pairs, start=1):
        label = name if name is not None else redact_url(url)
        if label in seen:
            what = f"name {name!r}" if name is not None else f"URL {show(label)}"
            raise ConfigError(
                f"{REPLICAS_VAR} entry {number}: {what} is already used by entry {seen[label]}; "
                "give each replica a distinct name (NAME=URL)"
            )
        seen[label] = number


def config_from_env(environ: Mapping[str, str], *, cwd: str | os.PathLike[str] | None = None) -> Config:
    """A config from ``$RESTORABLE_REPLICAS`` alone: one database per listed replica URL.

    A named entry (``app=s3://bucket/app.db``) gives a database called ``app`` with one
    replica called ``app``; an unnamed one is labelled by its URL (credentials redacted)
    and its replica by its type. Connection details come from the URL and the same
    environment fallbacks as the file (endpoint, region, URL style, credentials).

    :raises ConfigError: the variable is unset or malformed, or an entry is unusable.
    """
    entries = []
    for number, (name, url) in enumerate(parse_replica_list(environ.get(REPLICAS_VAR, "")), start=1):
        where = f"{REPLICAS_VAR} entry {number}" + (f" ({name})" if name else "")
        entries.append(_ReplicaEntry(where, name, url))
    return _config_from_entries(entries, environ, REPLICAS_VAR, cwd)


def _config_from_entries(
    entries: Sequence[_ReplicaEntry], environ: Mapping[str, str], source: str, cwd: str | os.PathLike[str] | None
) -> Config:
    base = _Context(source=source, cwd=Path(cwd) if cwd is not None else Path.cwd(), env=_env_defaults(environ))
    dbs = []
    for entry in entries:
        ctx = replace(base, source=entry.where)
        if not isinstance(entry.url, str) or "\x00" in entry.url:
            raise ctx.fail("url", "contains a NUL byte; use s3://BUCKET/PATH or file:///PATH")
        replica = _build_replica({"url": entry.url}, "", ctx)
        if entry.name is not None:
            replica = replace(replica, name=entry.name, origins=replica.origins + (("name", entry.where),))
        label = entry.name if entry.name is not None else redact_url(entry.url)
        dbs.append(DbConfig(path=label, replicas=(replica,), written_path=label))
    return Config(source=source, dbs=tuple(dbs))


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
    except RecursionError:  # PyYAML recurses once per nesting level
        raise ConfigError(f"{source}: YAML nested too deeply; a Litestream config needs a few levels") from None




# ------------------------------------------------------------------------------ normalising


@dataclass(frozen=True)
class _Defaults:
    """Values a replica inherits for keys it leaves empty (top-level keys or environment).

    ``origins`` maps a field to where its value came from (``$VAR`` or a key).
    """

    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    force_path_style: bool | None = None
    skip_verify: bool | None = None
    sync_interval: float | None = None
    origins: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> tuple[Any, str]:
        """``(value, origin)`` of field ``name``."""
        return getattr(self, name), dict(self.origins).get(name, "")


def _env_defaults(environ: Mapping[str, str]) -> _Defaults:
    """Railway/AWS conventions read from the environment (see the *_VARS constants).

    :raises ConfigError: ``AWS_S3_URL_STYLE`` is set to something other than path/virtual.
    """
    raw_style = environ.get(URL_STYLE_VAR) or ""
    style = raw_style.strip().lower()
    styles = {"": None, "path": True, "virtual": False}
    if style not in styles:
        raise ConfigError(
            f"{URL_STYLE_VAR}={show(raw_style)} is not a URL style; set it to 'path' or 'virtual', or unset it"
        )
    found = {
        "bucket": _first_set(environ, BUCKET_VARS),
        "endpoint": _first_set(environ, ENDPOINT_VARS),
        "region": _first_set(environ, REGION_VARS),
        "access_key_id": _first_set(environ, ACCESS_KEY_VARS),
        "secret_access_key": _first_set(environ, SECRET_KEY_VARS),
    }
    if found["access_key_id"][1] == f"${ACCESS_KEY_VARS[0]}":
        found["session_token"] = _first_set(environ, (SESSION_TOKEN_VAR,))
    if style:
        found["force_path_style"] = (styles[style], f"${URL_STYLE_VAR}")
    values = {name: value for name, (value, _) in found.items()}
    origins = tuple((name, origin) for name, (value, origin) in found.items() if value is not None)
    return _Defaults(**values, origins=origins)


def _first_set(environ: Mapping[str, str], names: Sequence[str]) -> tuple[str | None, str]:
    """The first non-empty variable of ``names`` as ``(value, "$NAME")``; ``(None, "")`` if none."""
    for name in names:
        if environ.get(name):
            return environ[name], f"${name}"
    return None, ""


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
        raise self.fail(_join(key, name), f"expected true or false, got {show(value)}")

    def duration(self, raw: Mapping, name: str, key: str) -> float | None:
        value = raw.get(name)
        if value is None or value == "":
            return None
        return parse_duration(value, self.where(_join(key, name)))

    def keyed(self, raw: Mapping, name: str, key: str, read=None) -> tuple[Any, str]:
        """``(value, origin)`` of key ``name`` read with ``read`` (default: ``text``)."""
        value = (read or self.text)(raw, name, key)
        return value, self.where(_join(key, name))


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
    sync_interval, sync_origin = _pick(
        ctx.keyed(raw, "sync-interval", key, ctx.duration), ctx.top.get("sync_interval"),
        (DEFAULT_SYNC_INTERVAL, DEFAULT_ORIGIN))
    name, name_origin = ctx.keyed(raw, "name", key)
    retention, retention_origin = ctx.keyed(raw, "retention", key, ctx.duration)
    built = (_file_replica if kind == "file" else _s3_replica)(raw, url, key, ctx)
    type_origin = ctx.where(_join(key, "url" if url else "type")) if url or raw.get("type") else DEFAULT_ORIGIN
    origins = dict(built.origins, type=type_origin, sync_interval_seconds=sync_origin)
    if name is not None:
        origins["name"] = name_origin
    if retention is not None:
        origins["retention_seconds"] = retention_origin
    return replace(built, name=name or kind, retention_seconds=retention, sync_interval_seconds=sync_interval,
                   origins=tuple(origins.items()))


def _replica_type(raw: Mapping, url: str | None, key: str, ctx: _Context) -> str:
    """The replica type: the URL scheme, else ``type:``, else ``file`` (Litestream's rule)."""
    explicit = ctx.text(raw, "type", key)
    scheme = url_scheme(url, ctx.where(_join(key, "url"))) if url else None
    if scheme and explicit and scheme != explicit:
        raise ctx.fail(
            _join(key, "type"),
            f"type {show(explicit)} contradicts the url scheme {show(scheme)}; remove type: or fix url:",
        )
    kind = scheme or explicit or "file"
    if kind not in SUPPORTED_TYPES:
        origin = "url" if scheme else "type"
        raise ctx.fail(
            _join(key, origin),
            f"replica type {show(kind)} is not supported by restorable (supported: {', '.join(SUPPORTED_TYPES)})",
        )
    return kind


def _file_replica(raw: Mapping, url: str | None, key: str, ctx: _Context) -> ReplicaConfig:
    path = ctx.text(raw, "path", key)
    if url is not None and path is not None:
        raise ctx.fail(key, "cannot specify url & path for file replica; keep one of them")
    if url is not None:
        path = parse_file_url(url, ctx.where(_join(key, "url")))
        origin = ctx.where(_join(key, "url"))
    elif path is None:
        raise ctx.fail(
            _join(key, "path"),
            "a file replica needs a directory; set path: /backups/app.db or url: file:///backups/app.db",
        )
    elif looks_like_url(path):
        raise ctx.fail(_join(key, "path"), "replica path cannot be a url; move it to url:")
    else:
        origin = ctx.where(_join(key, "path"))
    if "\x00" in path:
        raise ctx.fail(_join(key, "path"), "contains a NUL byte; name the replica directory")
    return ReplicaConfig(name="file", type="file", path=_absolute(path, ctx.cwd), origins=(("path", origin),))


def _s3_replica(raw: Mapping, url: str | None, key: str, ctx: _Context) -> ReplicaConfig:
    url_origin = ctx.where(_join(key, "url"))
    if url is not None:
        for conflicting in ("path", "bucket"):
            if ctx.text(raw, conflicting, key) is not None:
                raise ctx.fail(
                    key,
                    f"cannot specify url & {conflicting} for s3 replica; put them in the url or drop url:",
                )
        parsed = parse_s3_url(url, url_origin)
        path_origin = url_origin
    else:
        path = ctx.text(raw, "path", key) or ""
        if looks_like_url(path):
            raise ctx.fail(_join(key, "path"), "replica path cannot be a url; move it to url:")
        parsed = S3Url(bucket=ctx.text(raw, "bucket", key), path=path)
        path_origin = ctx.where(_join(key, "path")) if path else DEFAULT_ORIGIN
    fields = {
        "bucket": _pick((parsed.bucket, url_origin if url else ctx.where(_join(key, "bucket"))),
                        ctx.top.get("bucket"), ctx.env.get("bucket")),
        "endpoint": _pick(ctx.keyed(raw, "endpoint", key),
                          (parsed.endpoint, _url_part(url_origin, parsed.endpoint_from_query, "endpoint")),
                          ctx.top.get("endpoint"), ctx.env.get("endpoint")),
        "region": _pick(ctx.keyed(raw, "region", key),
                        (parsed.region, _url_part(url_origin, parsed.region_from_query, "region")),
                        ctx.top.get("region"), ctx.env.get("region")),
        "force_path_style": _path_style(ctx.keyed(raw, "force-path-style", key, ctx.flag), parsed, url_origin, ctx),
        "skip_verify": _pick(ctx.keyed(raw, "skip-verify", key, ctx.flag), (parsed.skip_verify, url_origin),
                             ctx.top.get("skip_verify"), (False, DEFAULT_ORIGIN)),
        **_credentials(raw, key, ctx),
    }
    if not fields["bucket"][0]:
        raise _missing_bucket(key, url is not None, ctx)
    _check_bucket(*fields["bucket"])
    origins = {name: origin for name, (value, origin) in fields.items() if value is not None and origin}
    origins["path"] = path_origin
    return ReplicaConfig(name="s3", type="s3", path=parsed.path, origins=tuple(origins.items()),
                         **{name: value for name, (value, _) in fields.items()})


def _url_part(url_origin: str, from_query: bool, name: str) -> str:
    return f"{url_origin} (?{name}=)" if from_query else f"{url_origin} (host)"


# What botocore itself accepts as a Bucket parameter (anything else fails before any
# request is sent), plus access point and Outposts ARNs, which it also takes.
_VALID_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")


def _check_bucket(bucket: str, origin: str) -> None:
    """Refuse a bucket name no S3 client can send, naming where it came from.

    :raises ConfigError: the name has characters outside ``[A-Za-z0-9._-]``; an
        unresolved ``${...}`` or ``${{...}}`` reference gets its own hint.
    """
    if _VALID_BUCKET.fullmatch(bucket) or bucket.startswith("arn:"):
        return
    hint = ("use letters, digits, '.', '-' and '_'" if not set(bucket) & set("${}") else
            "it looks like an unresolved variable reference: Railway fills ${{Service.VARIABLE}} only when "
            "that service and variable exist, and litestream.yml needs ${VARIABLE}")
    raise ConfigError(f"{origin}: bucket {show(bucket)} is not a valid bucket name; {hint}")


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


def _path_style(explicit: tuple[bool | None, str], parsed: S3Url, url_origin: str, ctx: _Context
                ) -> tuple[bool | None, str]:
    """Path-style addressing: explicit setting, forced by a provider URL, then environment.

    Litestream applies a provider host's path style whenever the configured value is not
    true, so a provider URL wins even over ``force-path-style: false``. ``None`` leaves the
    choice to the storage layer (path style exactly when there is an endpoint).
    """
    style, origin = _pick(explicit, (parsed.force_path_style, f"{url_origin} (?forcePathStyle=)"),
                          ctx.top.get("force_path_style"))
    if parsed.is_provider_path_style and not style:
        return True, f"{url_origin} (provider host)"
    if style is not None:
        return style, origin
    return ctx.env.get("force_path_style")


def _credentials(raw: Mapping, key: str, ctx: _Context) -> dict[str, tuple[str | None, str]]:
    """The key pair (and session token): replica keys, else top-level keys (per field), else the environment."""
    access = _pick(ctx.keyed(raw, "access-key-id", key), ctx.top.get("access_key_id"))
    secret = _pick(ctx.keyed(raw, "secret-access-key", key), ctx.top.get("secret_access_key"))
    if access[0] or secret[0]:
        if not (access[0] and secret[0]):
            pair = ("access-key-id", "secret-access-key")
            present, absent = pair if access[0] else pair[::-1]
            raise ctx.fail(
                key,
                f"{present} is set but {absent} is empty; set both, or neither to use the environment's credentials",
            )
        return {"access_key_id": access, "secret_access_key": secret}
    access, secret = ctx.env.get("access_key_id"), ctx.env.get("secret_access_key")
    if bool(access[0]) != bool(secret[0]):
        present, absent = (ACCESS_KEY_VARS, SECRET_KEY_VARS) if access[0] else (SECRET_KEY_VARS, ACCESS_KEY_VARS)
        raise ctx.fail(key, f"{present[0]} is set but {absent[0]} is not; set both in the environment, or neither")
    return {"access_key_id": access, "secret_access_key": secret, "session_token": ctx.env.get("session_token")}


# ------------------------------------------------------------------------------------ small


def _pick(*candidates: tuple[Any, str]) -> tuple[Any, str]:
    """The first ``(value, origin)`` whose value is not None; ``(None, "")`` when none is."""
    return next(((value, origin) for value, origin in candidates if value is not None), (None, ""))


def _absolute(path: str, cwd: Path) -> str:
    """``path`` with ``~`` expanded, made absolute against ``cwd`` and cleaned."""
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(path)))


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), f"a {type(value).__name__}")
