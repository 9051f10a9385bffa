"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd ``Controller``), collecting messages.

    with SmtpServer(credentials=("alerts", "p@ss word")) as smtp:
        environ = {"SMTP_URL": smtp.url(), "ALERT_EMAIL_TO": "ops@example.com"}
        ...
        assert smtp.messages[0]["Subject"].startswith("[restorable]")

With ``credentials`` the server offers AUTH over plain text (``auth_require_tls=False``,
fine on loopback) and refuses mail from unauthenticated sessions.

With ``tls="starttls"`` (and a certificate and key) it requires STARTTLS before any mail
and AUTH; with ``tls="smtps"`` it speaks TLS from the first byte (implicit TLS, port 465
style). ``Received.tls`` says whether the message came over TLS.
"""
from __future__ import annotations

import socket
import ssl
import threading
import warnings
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# Plain-text AUTH is the point of this loopback server; aiosmtpd warns about it per session.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS", category=UserWarning)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    login: str | None
    tls: bool = False

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]


class _Handler:
    def __init__(self, server: "SmtpServer"):
        self.server = server

    async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.server._record(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content
                                     or envelope.content, login,
                                     tls=session.ssl is not None or self.server.tls == "smtps"))
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpServer:
    """Start/stop an aiosmtpd server; ``received`` holds every accepted message."""

    def __init__(self, credentials: tuple[str, str] | None = None, tls: str | None = None,
                 cert: Path | None = None, key: Path | None = None):
        self.credentials = credentials
        self.tls = tls  # an smtps server speaks nothing but TLS (aiosmtpd sets session.ssl on STARTTLS only)
        self.received: list[Received] = []
        self.port = free_port()
        self._lock = threading.Lock()
        kwargs: dict = {}
        if credentials:
            # aiosmtpd tells STARTTLS sessions apart, not implicit-TLS ones (it would refuse AUTH
            # on them), so AUTH requires TLS only with STARTTLS; smtps sessions are TLS anyway.
            kwargs = dict(auth_require_tls=tls == "starttls", auth_required=True, authenticator=self._authenticate)
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            if tls == "starttls":
                kwargs.update(tls_context=context, require_starttls=True)
            elif tls == "smtps":
                kwargs.update(ssl_context=context)
            else:
                raise ValueError(f"tls must be 'starttls' or 'smtps', not {tls!r}")
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.credentials is not None
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [r.message for r in self.received]

    def url(self, scheme: str = "smtp") -> str:
        """``SMTP_URL`` for this server, with the credentials URL-encoded when it has them."""
        userinfo = ""
        if self.credentials:
            user, password = self.credentials
            userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}"

    def start(self) -> "SmtpServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> "SmtpServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
