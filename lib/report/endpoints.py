"""The environment variables of the optional outputs, and the secrets their URLs carry.

A heartbeat URL or a chat webhook is itself a credential: whoever knows a
healthchecks.io check UUID, a Slack token path or an Uptime Kuma push token can send
fake "all good" signals. So every output URL contributes its token-like parts (user,
password, query values, path segments that are not plain words) to the scrubber that
guards logs, reports, Sentry, email and the status page.
"""
from __future__ import annotations

import re
from typing import Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

PING_URL_VAR = "RESTORABLE_PING_URL"

PING_KIND_VAR = "RESTORABLE_PING_KIND"

NOTIFY_URLS_VAR = "RESTORABLE_NOTIFY_URLS"

METRICS_FILE_VAR = "RESTORABLE_METRICS_FILE"

PUSHGATEWAY_VAR = "RESTORABLE_PUSHGATEWAY_URL"

STATUS_SITE_VAR = "RESTORABLE_STATUS_SITE"

STATUS_AUTH_VAR = "RESTORABLE_STATUS_AUTH"

# Set by jobs.schedule for its child runs: a folder where each run also leaves its metrics
# textfile and status page, which the worker serves on $PORT.
WORKER_OUTPUT_VAR = "RESTORABLE_WORKER_OUTPUT_DIR"

# Schemes whose host part is a network host; in Apprise's other schemes the "host" is
# often a token (tgram://BOT_TOKEN/CHAT, discord://WEBHOOK_ID/TOKEN).
_NETWORK_SCHEMES = frozenset({"http", "https", "json", "jsons", "xml", "xmls", "form", "forms"})

_PLAIN_WORD = re.compile(r"[a-z][a-z_.-]*")

_MIN_TOKEN = 6

# URLs are separated by whitespace, or by a comma that starts the next URL (a comma
# inside a query string, e.g. mailto://...?to=a@x.com,b@y.com, stays part of its URL).
_URL_SEPARATOR = re.compile(r"\s+|,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def split_urls(text: str | None) -> list[str]:
    """The URLs in a list variable, in order, without blanks."""
    return [part.strip().strip(",") for part in _URL_SEPARATOR.split(text or "") if part.strip().strip(",")]


def _is_token(value: str) -> bool:
    return len(value) >= _MIN_TOKEN and not _PLAIN_WORD.fullmatch(value)


def url_secrets(url: str, *, path_tokens: bool = True) -> list[str]:
    """The parts of ``url`` that act as credentials (see the module docstring)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return [url]
    found = [url.strip()] if path_tokens else []
    found += [unquote(v) for v in (parts.username, parts.password) if v]
    found += [value for _, value in parse_qsl(parts.query) if _is_token(value)]
    if path_tokens:
        found += [unquote(seg) for seg in parts.path.split("/") if _is_token(unquote(seg))]
        if parts.scheme.lower() not in _NETWORK_SCHEMES and parts.hostname and _is_token(parts.hostname):
            found.append(parts.hostname)
    return found


def output_secrets(environ: Mapping[str, str]) -> list[str]:
    """Every secret the output settings hold: for the scrubber next to ``Config.secrets()``."""
    found: list[str] = []
    if environ.get(PING_URL_VAR):
        found += url_secrets(environ[PING_URL_VAR])
    for url in split_urls(environ.get(NOTIFY_URLS_VAR)):
        found += url_secrets(url)
    if environ.get(PUSHGATEWAY_VAR):
        found += url_secrets(environ[PUSHGATEWAY_VAR], path_tokens=False)
    auth = environ.get(STATUS_AUTH_VAR) or ""
    if ":" in auth:
        found.append(auth.split(":", 1)[1])
    return [value for value in found if value]
