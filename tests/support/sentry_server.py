"""A loopback Sentry ingest endpoint for tests: receives envelopes, keeps their items.

Start it, point ``SENTRY_DSN`` at ``server.dsn`` and read back what the SDK sent::

    with SentryServer() as sentry:
        environ = {"SENTRY_DSN": sentry.dsn}
        ...
        sentry.wait_for(lambda s: len(s.check_ins()) == 2)
        assert [c["status"] for c in sentry.check_ins()] == ["in_progress", "ok"]

Only ``POST /api/<project>/envelope/`` is understood (what sentry-sdk 2.x sends);
bodies compressed with gzip or deflate are decompressed (brotli only if the ``brotli``
module is importable, as the SDK itself uses it only then).
"""
from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

ENVELOPE_PATH = re.compile(r"^/api/(?P<project>[^/]+)/envelope/?$")


@dataclass
class EnvelopeItem:
    """One item of an envelope: its header and its payload (parsed JSON when it is JSON)."""

    headers: dict[str, Any]
    payload: Any
    raw: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))


@dataclass
class Envelope:
    project: str
    http_headers: dict[str, str]
    headers: dict[str, Any]
    items: list[EnvelopeItem] = field(default_factory=list)
    body: bytes = b""  # decompressed, exactly as received


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Undo the transport's Content-Encoding."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # only present when the SDK could have used it

        return brotli.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[EnvelopeItem]]:
    """Split an envelope into its header and items (newline-delimited, optional ``length``)."""
    first, _, rest = body.partition(b"\n")
    headers = json.loads(first) if first.strip() else {}
    items: list[EnvelopeItem] = []
    while rest.strip():
        item_header_line, _, rest = rest.partition(b"\n")
        if not item_header_line.strip():
            continue
        item_headers = json.loads(item_header_line)
        length = item_headers.get("length")
        if length is not None:
            payload, rest = rest[:length], rest[length:]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append(EnvelopeItem(item_headers, _maybe_json(payload), payload))
    return headers, items


def _maybe_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return payload


class SentryServer:
    """A threaded HTTP server on 127.0.0.1 that records every envelope it is sent."""

    def __init__(self, *, status: int = 200):
        self.envelopes: list[Envelope] = []
        self.status = status
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def start(self) -> "SentryServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "SentryServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read

    def items(self, item_type: str | None = None) -> list[EnvelopeItem]:
        with self._lock:
            found = [item for env in self.envelopes for item in env.items]
        return [i for i in found if item_type is None or i.type == item_type]

    def events(self) -> list[dict[str, Any]]:
        """Error/message events (item type ``event``), in arrival order."""
        return [i.payload for i in self.items("event")]

    def check_ins(self) -> list[dict[str, Any]]:
        return [i.payload for i in self.items("check_in")]

    def raw_bodies(self) -> list[bytes]:
        with self._lock:
            return [env.body for env in self.envelopes]

    def clear(self) -> None:
        with self._lock:
            self.envelopes.clear()

    def wait_for(self, condition: Callable[["SentryServer"], bool], timeout: float = 30.0) -> bool:
        """Poll ``condition(self)`` until true or ``timeout`` passes; returns the last result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return True
            time.sleep(0.02)
        return condition(self)

    # -- the HTTP side

    def _record(self, envelope: Envelope) -> None:
        with self._lock:
            self.envelopes.append(envelope)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                match = ENVELOPE_PATH.match(self.path.split("?", 1)[0])
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if not match:
                    self._answer(404)
                    return
                body = decompress(body, self.headers.get("Content-Encoding"))
                headers, items = parse_envelope(body)
                server._record(Envelope(match["project"], dict(self.headers), headers, items, body))
                self._answer(server.status)

            def _answer(self, status: int) -> None:
                payload = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        return Handler
