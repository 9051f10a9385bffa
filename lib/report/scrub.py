"""Keep secrets out of everything restorable writes: logs, Sentry, email, reports, history.

Two rules, applied to every string:

1. Known secret values (from ``Config.secrets()`` and the environment, see
   ``secrets_from_environ``) are replaced by ``[redacted]``, in their raw and their
   URL-encoded form.
2. Credentials embedded in text are removed whatever their value: the ``user:pass@``
   part of any ``scheme://`` URL and the values of signing query parameters
   (``X-Amz-Signature=``, ``X-Amz-Credential=``, ``X-Amz-Security-Token=``,
   ``sentry_key=``, ``password=``, ``token=``...), and age identities
   (``AGE-SECRET-KEY-1...``) wherever they appear.

Values shorter than ``MIN_SECRET_LENGTH`` are ignored: redacting every "a" or "1" would
mangle all output while protecting nothing worth the name.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

REDACTED = "[redacted]"

MIN_SECRET_LENGTH = 4

# Environment variables whose whole value is a secret.
SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN",
    "LITESTREAM_ACCESS_KEY_ID",
    "LITESTREAM_SECRET_ACCESS_KEY",
    "SMTP_PASSWORD",
)

# Environment variables holding URLs whose user and password are secrets.
URL_ENV_VARS = ("SMTP_URL", "SENTRY_DSN", "LITESTREAM_URL", "DATABASE_URL")

# scheme://userinfo@ : the userinfo runs to the last "@" before the host's path, query or a space.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#\"'<>]*@")

_SECRET_PARAMS = re.compile(
    r"(?P<name>\b(?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|"
    r"AWSAccessKeyId|sentry_key|sentry_secret|access_token|password|passwd|secret|token))"
    r"=(?P<value>[^&\s\"'<>]+)",
    re.IGNORECASE,
)


# An age X25519 identity: the Bech32 of a secret key (age-keygen prints it upper case).
_AGE_IDENTITY = re.compile(r"AGE-SECRET-KEY-1[0-9A-Za-z]+", re.IGNORECASE)


def url_credentials(url: str) -> list[str]:
    """The user name and password of ``url`` (decoded), when it has them."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return []
    found = []
    for value in (parts.username, parts.password):
        if value:
            found.append(unquote(value))
    return found


def secrets_from_environ(environ: Mapping[str, str]) -> list[str]:
    """Every secret value the environment holds that restorable knows about."""
    found = [environ[name] for name in SECRET_ENV_VARS if environ.get(name)]
    for name in URL_ENV_VARS:
        if environ.get(name):
            found += url_credentials(environ[name])
    return found


class Scrubber:
    """Removes known secret values and embedded credentials from strings and JSON-like data."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        self._secrets: list[str] = []
        self.add(secrets)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], secrets: Iterable[str | None] = ()) -> "Scrubber":
        return cls([*secrets, *secrets_from_environ(environ)])

    def add(self, secrets: Iterable[str | None]) -> None:
        """Learn more secret values (and their URL-encoded forms)."""
        values = set(self._secrets)
        for secret in secrets:
            if not secret or len(secret) < MIN_SECRET_LENGTH:
                continue
            values.add(secret)
            values.add(quote(secret, safe=""))
            values.add(quote(secret, safe="/"))
        # Longest first, so a secret that contains another is removed whole.
        self._secrets = sorted(values, key=len, reverse=True)

    def without(self, value: str) -> "Scrubber":
        """A copy that leaves ``value`` alone (for identifiers a receiver issued itself)."""
        copy = Scrubber()
        copy._secrets = [s for s in self._secrets if s not in (value, quote(value, safe=""), quote(value, safe="/"))]
        return copy

    def text(self, value: str) -> str:
        """``value`` with every secret and embedded credential replaced by ``[redacted]``."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        value = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", value)
        value = _AGE_IDENTITY.sub(REDACTED, value)
        return _SECRET_PARAMS.sub(lambda m: f"{m['name']}={REDACTED}", value)

    def obj(self, value: Any) -> Any:
        """Scrub every string inside dicts, lists and tuples (keys too); other values unchanged."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.obj(k): self.obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.obj(v) for v in value)
        return value
