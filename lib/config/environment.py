"""Defaults that come from the environment: bucket, endpoint, region and credential variables (Railway's and AWS's names)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lib.config.parsing import YAML_FALSE_WORDS, YAML_TRUE_WORDS
from lib.config.urls import show
from lib.errors import ConfigError
from lib.units import parse_duration

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

# age identities for encrypted v0.3 replicas whose litestream.yml holds only the recipients.
AGE_IDENTITIES_VAR = "RESTORABLE_AGE_IDENTITIES"

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
    age_identities: str | None = field(default=None, repr=False)  # $RESTORABLE_AGE_IDENTITIES
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
    return _Defaults(**values, age_identities=(environ.get(AGE_IDENTITIES_VAR) or "").strip() or None,
                     origins=origins)


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
        if isinstance(value, str) and value in YAML_TRUE_WORDS | YAML_FALSE_WORDS:
            return value in YAML_TRUE_WORDS
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


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), f"a {type(value).__name__}")
