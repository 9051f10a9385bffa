"""A fault-injecting HTTP proxy in front of a real S3 server, for reliability tests.

``FaultProxy`` listens on 127.0.0.1 and forwards every request to an upstream S3
endpoint (the moto server of the ``s3_server`` fixture). Until told otherwise it is
transparent; rules set at run time make chosen requests slow, failing or broken::

    from tests.support.faultproxy import FaultProxy, delay, error, reset

    with FaultProxy(s3_server.endpoint) as proxy:
        # point the replica's `endpoint:` at proxy.endpoint, then:
        proxy.set_rules([
            error(503, "SlowDown", method="GET", count=2),      # the first two GETs throttled
            delay(30, method="GET", key=r"/snapshots/"),         # every snapshot GET hangs 30 s
        ])
        ...
        proxy.wait_for(lambda p: p.matched("delay"))            # a restore reached the slow GET
        proxy.clear()                                            # transparent again

Rules (build them with the functions below; all take the same matcher arguments):

==============================  ============================================================
``delay(s)``                    wait ``s`` seconds, then forward (the response is late)
``delay(s, at="body")``         send headers and ``after_bytes`` of the body, wait, send the rest
``error(status, code)``         answer an S3 XML error (500 ``InternalError``, 503 ``SlowDown``)
                                without forwarding
``forbidden()``                 answer 403 ``AccessDenied`` without forwarding
``reset(after_bytes)``          send headers and ``after_bytes`` of the body, then reset (RST)
``truncate(after_bytes)``       send headers (full Content-Length) and ``after_bytes``, then close
``refuse()``                    reset the connection without any answer
==============================  ============================================================

Matchers: ``method`` (exact, case-insensitive), ``key`` (regex searched in the object key,
the path after the bucket, URL-decoded; ``""`` for bucket-level requests such as
listings, so ``key=r"^$"`` matches ListObjectsV2), ``query`` (regex searched in the raw
query string, e.g. ``r"list-type=2"``) and ``count`` (how many matching requests the rule
applies to; ``None`` is unlimited). The first rule, in order, that matches and has
count left decides a request's fate; unmatched requests are forwarded unchanged.
``after_bytes=None`` means half of the body.

``set_offline(True)`` closes the listening socket (and every open connection), so clients
get "connection refused" as from an endpoint that is gone; ``set_offline(False)`` listens
on the same port again.

Contract: path-style addressing only (``http://127.0.0.1:PORT/bucket/key``, what
restorable uses for custom endpoints). Headers are forwarded unchanged, ``Host``
included, so request signatures still name the proxy; moto does not check them.
Delays wake early when the proxy stops, so ``stop()`` never waits for a rule, and when
``release()`` is called (the held requests then go on).
``requests`` lists every request in arrival order; an entry is added when the request
line arrives and completed (``status``, ``bytes_sent``, ``done``) when it ends.
"""
from __future__ import annotations

import http.client
import io
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable
from urllib.parse import unquote, urlsplit

# Headers that describe one connection, not the message (RFC 9110, 7.6.1); never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "expect",
})
CHUNK_SIZE = 64 * 1024
UPSTREAM_TIMEOUT_SECONDS = 60.0
ERROR_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "AccessDenied": "Access Denied",
}

DELAY, ERROR, RESET, TRUNCATE, REFUSE = "delay", "error", "reset", "truncate", "refuse"


@dataclass(frozen=True)
class Rule:
    """One fault and the requests it applies to. Build rules with the module's functions."""

    action: str
    method: str | None = None
    key: str | None = None
    query: str | None = None
    count: int | None = None
    seconds: float = 0.0  # delay
    at: str = "headers"  # delay: "headers" or "body"
    after_bytes: int | None = None  # body bytes sent before a mid-body delay/reset/truncate
    status: int = 503  # error
    code: str = "SlowDown"  # error

    def matches(self, method: str, key: str, query: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.key is not None and not re.search(self.key, key):
            return False
        return self.query is None or re.search(self.query, query) is not None

    def describe(self) -> str:
        where = ",".join(f"{k}={v!r}" for k, v in
                         (("method", self.method), ("key", self.key), ("query", self.query)) if v is not None)
        return f"{self.action}({where})"


def delay(seconds: float, *, at: str = "headers", after_bytes: int | None = None, **match) -> Rule:
    """Make matching responses late: before the headers, or (``at="body"``) mid-body."""
    if at not in ("headers", "body"):
        raise ValueError(f"at must be 'headers' or 'body', not {at!r}")
    return Rule(DELAY, seconds=float(seconds), at=at, after_bytes=after_bytes, **match)


def error(status: int = 503, code: str = "SlowDown", **match) -> Rule:
    """Answer matching requests with an S3 error document instead of forwarding them."""
    return Rule(ERROR, status=status, code=code, **match)


def forbidden(**match) -> Rule:
    """Answer matching requests with 403 AccessDenied (a key the credentials may not read)."""
    return Rule(ERROR, status=403, code="AccessDenied", **match)


def reset(after_bytes: int | None = None, **match) -> Rule:
    """Forward, send part of the body, then reset the connection (the client sees ECONNRESET)."""
    return Rule(RESET, after_bytes=after_bytes, **match)


def truncate(after_bytes: int | None = None, **match) -> Rule:
    """Forward, send fewer body bytes than Content-Length announced, then close cleanly."""
    return Rule(TRUNCATE, after_bytes=after_bytes, **match)


def refuse(**match) -> Rule:
    """Reset matching requests' connections without answering (a crashed endpoint)."""
    return Rule(REFUSE, **match)


@dataclass
class RequestRecord:
    """One request the proxy saw; ``status``/``bytes_sent``/``done`` are set when it ends."""

    method: str
    path: str
    bucket: str
    key: str
    query: str
    action: str | None  # the rule's action, None when forwarded untouched
    started: float = field(default_factory=time.monotonic)
    status: int | None = None  # None: no status line was sent (refuse, or upstream failure)
    bytes_sent: int = 0  # body bytes sent to the client
    done: bool = False


class FaultProxy:
    """A threaded forwarding proxy on 127.0.0.1 with run-time fault rules (see the module docstring)."""

    def __init__(self, upstream: str, port: int = 0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self._lock = threading.Lock()
        self._rules: list[list] = []  # [Rule, remaining count or None]
        self._log: list[RequestRecord] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._release = threading.Event()  # replaced by each release(); held delays wait on theirs
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self._listen()

    # ------------------------------------------------------------------ public API

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: use it as the S3 endpoint (path-style)."""
        return f"http://127.0.0.1:{self.port}"

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace all rules (their counts start afresh)."""
        fresh = [[rule, rule.count] for rule in rules]
        with self._lock:
            self._rules = fresh

    def clear(self) -> None:
        """Remove every rule: forward everything unchanged. The request log is kept."""
        self.set_rules([])

    def release(self) -> None:
        """End every delay now in progress (its request goes on as if the time had passed);
        later delays wait in full. Lets a test hold a request until it has done something."""
        with self._lock:
            held, self._release = self._release, threading.Event()
        held.set()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request seen so far, in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def matched(self, action: str | None = None) -> list[RequestRecord]:
        """Requests a rule applied to (of ``action`` only, if given)."""
        return [r for r in self.requests if r.action is not None and (action is None or r.action == action)]

    def wait_for(self, condition: Callable[["FaultProxy"], bool], timeout: float = 30.0) -> bool:
        """Poll ``condition(self)`` until true or ``timeout`` passes; returns the last result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return True
            time.sleep(0.02)
        return bool(condition(self))

    def set_offline(self, offline: bool) -> None:
        """Offline: stop listening and drop open connections (clients get ECONNREFUSED)."""
        if offline and self._httpd is not None:
            self._close_listener()
        elif not offline and self._httpd is None:
            self._listen()

    @property
    def is_offline(self) -> bool:
        return self._httpd is None

    def stop(self) -> None:
        """Stop serving, wake delayed requests and close every connection. Idempotent."""
        self._stopping.set()
        self.release()
        self._close_listener()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FaultProxy(endpoint={self.endpoint!r}, upstream=http://{self.upstream_host}:{self.upstream_port})"

    # ------------------------------------------------------------------ listener

    def _listen(self) -> None:
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            _drop(conn)

    # ------------------------------------------------------------------ per request

    def _decide(self, method: str, key: str, query: str) -> Rule | None:
        """The rule that applies to this request, consuming one of its count."""
        with self._lock:
            for entry in self._rules:
                rule, remaining = entry
                if remaining is not None and remaining <= 0:
                    continue
                if rule.matches(method, key, query):
                    if remaining is not None:
                        entry[1] = remaining - 1
                    return rule
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    def _sleep(self, seconds: float) -> None:
        with self._lock:
            released = self._release
        if not self._stopping.is_set():
            released.wait(seconds)  # stop() releases too

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards one client connection's requests, applying the owner's rules."""

    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    # Headers and body leave in separate writes: with Nagle's algorithm on, each response's body
    # would wait for the client's delayed ACK of the headers (~40 ms on Linux), so a "30 ms late"
    # rule would really be ~80 ms late.
    disable_nagle_algorithm = True
    owner: FaultProxy

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _proxy(self) -> None:
        path, _, query = self.path.partition("?")
        bucket, _, key = unquote(path).lstrip("/").partition("/")
        body = self._read_body()
        rule = self.owner._decide(self.command, key, query)
        record = RequestRecord(self.command, self.path, bucket, key, query, rule.action if rule else None)
        self.owner._record(record)
        try:
            self._serve(rule, body, record)
        except (OSError, http.client.HTTPException):
            self.close_connection = True  # the client went away, we reset it, or upstream failed
        finally:
            record.done = True

    def _serve(self, rule: Rule | None, body: bytes, record: RequestRecord) -> None:
        if rule is not None and rule.action == REFUSE:
            self._reset()
            return
        if rule is not None and rule.action == ERROR:
            self._send_error_document(rule, record)
            return
        if rule is not None and rule.action == DELAY and rule.at == "headers":
            self.owner._sleep(rule.seconds)
        self._forward(rule, body, record)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    # ------------------------------------------------------------------ answers

    def _send_error_document(self, rule: Rule, record: RequestRecord) -> None:
        message = ERROR_MESSAGES.get(rule.code, rule.code)
        document = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{rule.code}</Code><Message>{message}</Message>"
            f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
        ).encode()
        self.send_response(rule.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(document)))
        if rule.status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        record.status = rule.status
        if self.command != "HEAD":
            self.wfile.write(document)
            record.bytes_sent = len(document)

    def _forward(self, rule: Rule | None, body: bytes, record: RequestRecord) -> None:
        upstream = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port,
                                              timeout=UPSTREAM_TIMEOUT_SECONDS)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            if not body and self.command in ("GET", "HEAD", "DELETE"):
                headers.pop("Content-Length")
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            self._relay(response, rule, record)
        except (OSError, http.client.HTTPException):
            if record.status is None:
                self._reset()  # upstream failed before we answered: look like a dead endpoint
            raise
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse, rule: Rule | None, record: RequestRecord) -> None:
        length = response.getheader("Content-Length")
        if length is None and self.command != "HEAD":
            payload = response.read()  # upstream chunked: re-frame with a length
            chunks: Iterable[bytes] = [payload]
            length = str(len(payload))
        else:
            chunks = iter(lambda: response.read(CHUNK_SIZE), b"")
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        record.status = response.status
        if self.command == "HEAD":
            return
        total = int(length or 0)
        if rule is None or rule.action == DELAY and rule.at == "headers":
            self._send(chunks, record)
        else:
            self._send_faulty(chunks, rule, total, record)

    def _send(self, chunks: Iterable[bytes], record: RequestRecord) -> None:
        for chunk in chunks:
            self.wfile.write(chunk)
            record.bytes_sent += len(chunk)

    def _send_faulty(self, chunks: Iterable[bytes], rule: Rule, total: int, record: RequestRecord) -> None:
        """Send ``after_bytes`` of the body, then apply the mid-body fault."""
        cut = total // 2 if rule.after_bytes is None else min(rule.after_bytes, total)
        data = b"".join(chunks)
        self.wfile.write(data[:cut])
        record.bytes_sent = cut
        if rule.action == DELAY:
            self.wfile.flush()
            self.owner._sleep(rule.seconds)
            self.wfile.write(data[cut:])
            record.bytes_sent = len(data)
        elif rule.action == RESET:
            self._reset()
        elif rule.action == TRUNCATE:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _reset(self) -> None:
        """Close the client connection with a TCP reset instead of an orderly FIN."""
        self.close_connection = True
        # The socket's fd closes only when its file objects are closed too; http.server
        # flushes wfile after every request, so leave it a harmless stand-in.
        for stream in (self.wfile, self.rfile):
            try:
                stream.close()
            except OSError:
                pass
        self.wfile = io.BytesIO()
        _linger_zero(self.connection)
        self.connection.close()


def _linger_zero(conn: socket.socket) -> None:
    """SO_LINGER with a zero timeout: close() then sends RST instead of FIN."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def _drop(conn: socket.socket) -> None:
    """End a connection another thread is serving: wake its reads, then reset it."""
    _linger_zero(conn)
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
