"""Heartbeat pings: a dead-man's switch without Sentry (``RESTORABLE_PING_URL``).

Three conventions, chosen from the URL (``RESTORABLE_PING_KIND`` overrides):

* **healthchecks.io** (the default, also self-hosted Healthchecks and compatible
  services): ``POST <url>/start`` when a run starts, then ``POST <url>/<exit code>`` when
  it ends (``0`` is success, anything else a failure; ``<url>/fail`` when the run was
  aborted before it had an exit code), the body a short plain-text summary. Both carry
  the same ``rid`` so the service pairs them and measures the duration.
* **Uptime Kuma** push monitors (``.../api/push/<token>``): one ``GET`` at the end with
  ``status=up|down``, ``msg`` (the summary's first line) and ``ping`` (run time in ms);
  Kuma has no "started" signal, so nothing is sent at the start.
* **Cronitor** telemetry (``cronitor.link`` / ``cronitor.io``): ``GET`` with
  ``state=run`` at the start and ``state=complete|fail``, ``status_code``, ``duration``
  and ``message`` at the end, paired by ``series``.

A ping that fails is logged and retried briefly (``ATTEMPTS`` tries, ``TIMEOUT_SECONDS``
each); it never changes the verdict or the exit code. The URL is a credential: logs name
only its scheme and host. Never point this at Litestream's own ``heartbeat-url``: its
signal would then also arrive when Litestream is dead.
"""
from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from lib.errors import ConfigError
from lib.report.endpoints import PING_KIND_VAR, PING_URL_VAR
from lib.report.scrub import Scrubber

log = logging.getLogger(__name__)

HEALTHCHECKS = "healthchecks"

UPTIME_KUMA = "uptime-kuma"

CRONITOR = "cronitor"

KINDS = (HEALTHCHECKS, UPTIME_KUMA, CRONITOR)

TIMEOUT_SECONDS = 5.0

ATTEMPTS = 3

RETRY_DELAYS = (1.0, 2.0)

# healthchecks.io keeps the first 100 kB of a ping body; a summary is for a glance.
MAX_BODY_BYTES = 10_000

# Uptime Kuma and Cronitor take the message in the query string.
MAX_QUERY_MESSAGE = 200

USER_AGENT = "restorable-ping/1"


def refuse_litestream_heartbeat(environ: Mapping[str, str], heartbeat_urls: list[str]) -> None:
    """Refuse a ping URL that is Litestream's own ``heartbeat-url``.

    Litestream pings that check while it replicates; restorable pinging it too would keep it
    green after Litestream stopped, masking exactly the failure it exists to report.

    :raises ConfigError: ``RESTORABLE_PING_URL`` equals a ``heartbeat-url`` of litestream.yml
        (the message quotes neither URL: both carry a token).
    """
    url = (environ.get(PING_URL_VAR) or "").strip().rstrip("/")
    if url and any(url == (h or "").strip().rstrip("/") for h in heartbeat_urls):
        raise ConfigError(f"{PING_URL_VAR} is Litestream's own heartbeat-url from litestream.yml: pinging it from "
                          "restorable would hide a stopped Litestream; create a separate check for restorable "
                          f"and set {PING_URL_VAR} to its URL")


@dataclass(frozen=True)
class PingSettings:
    url: str
    kind: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "PingSettings | None":
        """None when ``RESTORABLE_PING_URL`` is unset; ``ConfigError`` (never quoting the URL) when unusable."""
        url = (environ.get(PING_URL_VAR) or "").strip()
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{PING_URL_VAR} must be an http:// or https:// URL, e.g. https://hc-ping.com/<uuid>")
        kind = (environ.get(PING_KIND_VAR) or "").strip().lower() or detect_kind(url)
        if kind not in KINDS:
            raise ConfigError(f"{PING_KIND_VAR}={kind!r} is not one of {', '.join(KINDS)}")
        return cls(url, kind)

    def describe(self) -> str:
        """Scheme and host only: the rest of a ping URL is a credential."""
        parts = urlsplit(self.url)
        return f"{self.kind} ping {parts.scheme}://{parts.hostname}"


def detect_kind(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if "/api/push/" in parts.path:
        return UPTIME_KUMA
    if host in ("cronitor.link", "cronitor.io") or host.endswith((".cronitor.link", ".cronitor.io")):
        return CRONITOR
    return HEALTHCHECKS

# --------------------------------------------------------------------------- requests (pure)


@dataclass(frozen=True)
class PingRequest:
    method: str
    url: str
    body: bytes | None = None


def _with(url: str, *, suffix: str = "", query: Mapping[str, str] | None = None) -> str:
    """``url`` with ``suffix`` appended to its path and ``query`` merged over its own."""
    parts = urlsplit(url)
    merged = dict(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(query or {})
    path = parts.path.rstrip("/") + suffix if suffix else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(merged), ""))


def start_request(settings: PingSettings, run_id: str) -> PingRequest | None:
    """What to send when a run starts (None: this kind has no start signal)."""
    if settings.kind == HEALTHCHECKS:
        return PingRequest("POST", _with(settings.url, suffix="/start", query={"rid": run_id}), b"")
    if settings.kind == CRONITOR:
        return PingRequest("GET", _with(settings.url, query={"state": "run", "series": run_id}))
    return None


def finish_request(settings: PingSettings, run_id: str, exit_code: int | None, summary: str,
                   seconds: float) -> PingRequest:
    """What to send when a run ends; ``exit_code`` None means aborted without one."""
    ok = exit_code == 0
    if settings.kind == HEALTHCHECKS:
        suffix = f"/{exit_code}" if exit_code is not None else "/fail"
        body = bounded(summary, MAX_BODY_BYTES).encode()
        return PingRequest("POST", _with(settings.url, suffix=suffix, query={"rid": run_id}), body)
    first_line = bounded(summary.splitlines()[0] if summary else "", MAX_QUERY_MESSAGE)
    if settings.kind == UPTIME_KUMA:
        query = {"status": "up" if ok else "down", "msg": first_line, "ping": str(round(seconds * 1000))}
        return PingRequest("GET", _with(settings.url, query=query))
    query = {"state": "complete" if ok else "fail", "series": run_id, "duration": f"{seconds:.1f}",
             "message": first_line}
    if exit_code is not None:
        query["status_code"] = str(exit_code)
    return PingRequest("GET", _with(settings.url, query=query))


def bounded(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, marked when cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 20].decode(errors="ignore") + "\n[... truncated]"

# --------------------------------------------------------------------------- sending


class Pinger:
    """Start and finish pings for one run. No method raises; failures are logged."""

    def __init__(self, settings: PingSettings, scrubber: Scrubber, *, sleep=time.sleep):
        self.settings = settings
        self.scrubber = scrubber
        self.run_id = str(uuid.uuid4())
        self.started = time.monotonic()
        self._finished = False
        self._sleep = sleep

    def start(self) -> None:
        self.started = time.monotonic()
        request = start_request(self.settings, self.run_id)
        if request is not None:
            self._send(request, "start")

    def finish(self, exit_code: int | None, summary: str) -> None:
        """The end-of-run ping, sent at most once per run (an abort after the end sends nothing)."""
        if self._finished:
            return
        self._finished = True
        seconds = time.monotonic() - self.started
        request = finish_request(self.settings, self.run_id, exit_code, self.scrubber.text(summary), seconds)
        self._send(request, "finish" if exit_code is None else f"exit {exit_code}")

    def _send(self, request: PingRequest, what: str) -> bool:
        for attempt in range(ATTEMPTS):
            problem, retryable = self._attempt(request)
            if problem is None:
                log.info("%s sent (%s)", self.settings.describe(), what, extra={"stage": "ping"})
                return True
            retry = retryable and attempt + 1 < ATTEMPTS
            log.warning("%s (%s) failed: %s%s", self.settings.describe(), what, problem,
                        "; retrying" if retry else "; giving up (the verdict is unchanged)", extra={"stage": "ping"})
            if not retry:
                return False
            self._sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
        return False

    def _attempt(self, request: PingRequest) -> tuple[str | None, bool]:
        """``(None, _)`` on success, else ``(what went wrong, worth retrying)``; never the URL."""
        headers = {"User-Agent": USER_AGENT}
        if request.body is not None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        req = urllib.request.Request(request.url, data=request.body, method=request.method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as response:
                response.read(1024)
            return None, False
        except urllib.error.HTTPError as exc:
            # A 4xx other than 429 (a wrong or deleted check) will not get better by retrying.
            return f"HTTP {exc.code}", exc.code >= 500 or exc.code == 429
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return self.scrubber.text(f"{type(exc).__name__}: {reason}"), True
