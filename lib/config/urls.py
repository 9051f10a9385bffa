"""Replica URLs as Litestream reads them: ``s3://BUCKET/PATH`` and ``file:///DIR``.

``parse_s3_url`` follows Litestream's ``s3.ParseHost`` provider table (0.3) plus the 0.5
additions (AWS virtual-host names, ``bucket.host:port`` for MinIO, query parameters
``endpoint``, ``region``, ``forcePathStyle``, ``skipVerify``). Every problem is a one-line
``ConfigError`` prefixed with ``where`` (source and key) that never shows credentials.
"""
from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from lib.config.parsing import GO_FALSE_WORDS, GO_TRUE_WORDS
from lib.errors import ConfigError

log = logging.getLogger(__name__)


URL_HINT = "use s3://BUCKET/PATH or file:///PATH"


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
    endpoint_from_query: bool = False  # endpoint came from ?endpoint= (else from the host)
    region_from_query: bool = False


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
    parts = split_url(url, where)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if userinfo:
        # debug, not warning: config is read before logging is set up, and a stray
        # unformatted stderr line would break the one-line error contract.
        log.debug("ignoring credentials in a replica url (Litestream ignores them too) key=%s", where)
    host, port = _split_host_port(hostport, url, where)
    provider = _detect_provider(host, port)
    query = parse_qs(parts.query, keep_blank_values=True)
    endpoint, region = _query_text(query, "endpoint"), _query_text(query, "region")
    return S3Url(
        bucket=provider.bucket,
        path=clean_url_path(unquote(parts.path)),
        endpoint=endpoint or provider.endpoint,
        region=region or provider.region,
        force_path_style=_query_flag(query, "forcePathStyle", where),
        skip_verify=_query_flag(query, "skipVerify", where),
        is_provider_path_style=provider.is_path_style,
        endpoint_from_query=endpoint is not None,
        region_from_query=region is not None,
    )


def parse_file_url(url: str, where: str) -> str:
    """The directory of a ``file:///abs/path`` URL (``file:/abs/path`` also accepted).

    :raises ConfigError: the URL has a host or a relative path.
    """
    parts = split_url(url, where)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not path.startswith("/") or "\x00" in path:
        raise ConfigError(
            f"{where}: {show(redact_url(url))} is not a file URL with an absolute path; use file:///ABSOLUTE/PATH",
        )
    return posixpath.normpath(path)


def url_scheme(url: str, where: str) -> str:
    """The scheme of ``url`` (``urlsplit`` lower-cases it).

    :raises ConfigError: ``url`` has no scheme (a bare path or ``bucket/path``).
    """
    scheme = split_url(url, where).scheme
    if not scheme:
        raise ConfigError(f"{where}: {show(redact_url(url))} is not a URL; {URL_HINT}")
    return scheme.lower()


def split_url(url: str, where: str) -> SplitResult:
    """``urlsplit`` whose ``ValueError`` (it quotes the URL) becomes a redacted ConfigError."""
    try:
        return urlsplit(url)
    except ValueError:  # e.g. unbalanced [ ] in the host
        raise ConfigError(f"{where}: {show(redact_url(url))} is not a valid URL; {URL_HINT}") from None


def _split_host_port(hostport: str, url: str, where: str) -> tuple[str, str]:
    match = _HOST_PORT.fullmatch(hostport)
    port = (match.group("port") or "") if match else ""
    if match is None or not (port.isascii() and port.isdigit() or port == ""):
        raise ConfigError(f"{where}: {show(redact_url(url))} has an invalid host or port; use s3://BUCKET/PATH")
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


def clean_url_path(path: str) -> str:
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
    if value in GO_TRUE_WORDS | GO_FALSE_WORDS:
        return value in GO_TRUE_WORDS
    raise ConfigError(f"{where}: query {name}={show(value)} is not a boolean; use {name}=true or {name}=false")


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


def userinfo(url: str | None) -> str | None:
    """The ``user:password`` before the host of ``url``, if any (to scrub it from logs)."""
    if not url or "@" not in url:
        return None
    rest = url.partition("://")[2] or url
    return rest.rpartition("@")[0] or None


def looks_like_url(text: str) -> bool:
    """Litestream's ``isURL``: a word, then ``://``."""
    return re.match(r"\w+://", text) is not None


def show(value: Any, limit: int = 80) -> str:
    """A one-line, length-limited rendering of a non-secret value for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
