"""HTTP on ``$PORT`` for long-running processes (``jobs.schedule``; a future ``jobs.worker``).

* ``/healthz``: ``200`` with a small JSON document while the process is healthy (its
  scheduler runs), ``503`` otherwise. No authentication: it is Railway's healthcheck path.
* ``/metrics``: the process's own metrics followed by the newest run's textfile
  (``lib.report.metrics``), in the Prometheus text format.
* ``/`` (``index.html``), ``/status.json``, ``/badge.svg``, ``/badges/<db>.svg``: the
  status page the newest run wrote, behind HTTP basic auth from
  ``RESTORABLE_STATUS_AUTH=user:password``; without that variable the page is not
  served at all (it names databases and buckets).

A standard-library ``ThreadingHTTPServer`` on a daemon thread: a scrape or a slow
client never blocks the scheduler, and nothing here can stop the process.
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Mapping

from lib.errors import ConfigError
from lib.report.endpoints import STATUS_AUTH_VAR

log = logging.getLogger("jobs.schedule")

PORT_VAR = "PORT"

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SITE_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json", ".svg": "image/svg+xml"}


@dataclass(frozen=True)
class ServeSettings:
    port: int
    auth: tuple[str, str] | None  # (user, password) for the status page

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "ServeSettings | None":
        """None when ``$PORT`` is unset; ``ConfigError`` for a bad port or auth value (never quoting it)."""
        raw = (environ.get(PORT_VAR) or "").strip()
        if not raw:
            return None
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"{PORT_VAR}={raw!r} is not a TCP port; use e.g. 8080")
        auth_raw = environ.get(STATUS_AUTH_VAR) or ""
        auth = None
        if auth_raw:
            user, sep, password = auth_raw.partition(":")
            if not sep or not user or not password:
                raise ConfigError(f"{STATUS_AUTH_VAR} must be user:password (both non-empty)")
            auth = (user, password)
        return cls(int(raw), auth)


class OutputServer:
    """Serves health, metrics and the status page from ``output_dir`` (see the module docstring)."""

    def __init__(self, settings: ServeSettings, output_dir: Path, *, health: Callable[[], tuple[bool, dict]],
                 own_metrics: Callable[[], bytes], metrics_file: Path, host: str = "0.0.0.0",
                 site_dir: Path | None = None):
        self.settings = settings
        self.site_dir = site_dir or output_dir / "site"
        self.health = health
        self.own_metrics = own_metrics
        self.metrics_file = metrics_file
        self._server = ThreadingHTTPServer((host, settings.port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()
        log.info("serving /healthz and /metrics%s on port %d", " and the status page" if self.settings.auth else "",
                 self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ responses: (status, type, body, headers)

    def respond(self, path: str, authorization: str | None) -> tuple[int, str, bytes, dict[str, str]]:
        path = path.split("?", 1)[0]
        if path == "/healthz":
            healthy, doc = self.health()
            return (200 if healthy else 503), "application/json", (json.dumps(doc) + "\n").encode(), {}
        if path == "/metrics":
            try:
                body = self.own_metrics() + self.metrics_file.read_bytes()
            except FileNotFoundError:
                body = self.own_metrics()
            return 200, METRICS_TYPE, body, {}
        return self._site(path, authorization)

    def _site(self, path: str, authorization: str | None) -> tuple[int, str, bytes, dict[str, str]]:
        if self.settings.auth is None:
            return 404, "text/plain", f"the status page is off: set {STATUS_AUTH_VAR}=user:password\n".encode(), {}
        if not self._authorized(authorization):
            return 401, "text/plain", b"authentication required\n", {"WWW-Authenticate": 'Basic realm="restorable"'}
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        target = (self.site_dir / name).resolve()
        if not target.is_relative_to(self.site_dir.resolve()) or not target.is_file():
            if name == "index.html":
                return 503, "text/plain", b"no status page yet: it is written after the first verification\n", {}
            return 404, "text/plain", b"not found\n", {}
        return 200, SITE_TYPES.get(target.suffix, "application/octet-stream"), target.read_bytes(), {}

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected_user, expected_password = self.settings.auth
        return hmac.compare_digest(user.encode(), expected_user.encode()) & \
            hmac.compare_digest(password.encode(), expected_password.encode())


def _handler_for(server: OutputServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            try:
                status, content_type, body, headers = server.respond(self.path, self.headers.get("Authorization"))
            except Exception:
                log.exception("serving %s failed", self.path.split("?", 1)[0])
                status, content_type, body, headers = 500, "text/plain", b"internal error\n", {}
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
            log.debug("http %s", format % args)

    return Handler


class ProcessMetrics:
    """The serving process's own metrics: child runs by outcome, the newest run's time and exit code."""

    def __init__(self) -> None:
        import prometheus_client as prom  # deferred: only a process serving $PORT needs it

        prom.disable_created_metrics()
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.runs = prom.Counter("restorable_worker_runs", "Verification runs started by this worker, by outcome",
                                 ["outcome"], registry=self.registry)
        self.last_run = prom.Gauge("restorable_worker_last_run_timestamp_seconds",
                                   "When the newest run ended (Unix time)", registry=self.registry)
        self.last_code = prom.Gauge("restorable_worker_last_exit_code", "Exit code of the newest run",
                                    registry=self.registry)

    def record(self, outcome: str, exit_code: int, ended_at: float) -> None:
        self.runs.labels(outcome).inc()
        self.last_run.set(ended_at)
        self.last_code.set(exit_code)

    def exposition(self) -> bytes:
        return self._prom.generate_latest(self.registry)
