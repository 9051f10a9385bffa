"""Where the configuration comes from, strongest first: replica URLs, --config, RESTORABLE_REPLICAS, LITESTREAM_CONFIG, ./litestream.yml, /etc/litestream.yml."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

from lib.config.environment import _Context, _env_defaults
from lib.config.litestream_yml import parse
from lib.config.model import Config, DbConfig
from lib.config.parsing import printable
from lib.config.replicas import _absolute, _build_replica
from lib.config.urls import looks_like_url, redact_url, show
from lib.errors import ConfigError

# Where the config is looked for when neither --config nor $LITESTREAM_CONFIG is given.
# Litestream itself only looks at /etc/litestream.yml; ./litestream.yml comes first here
# because Railway services run from the repository root.
DEFAULT_CONFIG_PATHS = (Path("litestream.yml"), Path("/etc/litestream.yml"))

CONFIG_VAR = "LITESTREAM_CONFIG"

REPLICAS_VAR = "RESTORABLE_REPLICAS"

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
