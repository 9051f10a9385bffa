"""Alert email over direct SMTP (standard library only).

Configuration (environment):

* ``SMTP_URL``: ``smtp://[user[:password]@]host[:port]``; the scheme picks the transport:

  ===================  =====================================  ============
  scheme               transport                              default port
  ===================  =====================================  ============
  ``smtp://``          plain SMTP, no TLS (local relays)      25
  ``smtp+starttls://`` STARTTLS, required (fails if absent)   587
  ``smtps://``         implicit TLS                           465
  ===================  =====================================  ============

  User and password are URL-decoded (write ``@`` as ``%40``). Certificates are verified
  against the system trust store.
* ``ALERT_EMAIL_TO``: comma-separated recipients (required for email).
* ``ALERT_EMAIL_FROM``: the sender; defaults to the SMTP user when it is an address,
  else ``restorable@localhost``.

Email is enabled only when both ``SMTP_URL`` and ``ALERT_EMAIL_TO`` are set.
"""
from __future__ import annotations

import html
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from lib.errors import ConfigError, RestorableError
from lib.recovery.render import mail_facts as recovery_facts
from lib.units import format_bytes_exact, format_iso, parse_iso

SMTP_TIMEOUT_SECONDS = 20.0

DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}

DEFAULT_SENDER = "restorable@localhost"

PROBLEM = "problem"

RECOVERY = "recovery"


class MailError(RestorableError):
    """Sending an alert failed; the message names the server, never the password."""


@dataclass(frozen=True)
class SmtpSettings:
    scheme: str
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = SMTP_TIMEOUT_SECONDS

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "SmtpSettings | None":
        """Settings from ``SMTP_URL``/``ALERT_EMAIL_TO``/``ALERT_EMAIL_FROM``; None when email is off.

        Raises ``ConfigError`` for a malformed ``SMTP_URL`` (the message never repeats it).
        """
        url = (environ.get("SMTP_URL") or "").strip()
        recipients = tuple(a.strip() for a in (environ.get("ALERT_EMAIL_TO") or "").split(",") if a.strip())
        if not url or not recipients:
            return None
        scheme, host, port, username, password = parse_smtp_url(url)
        sender = (environ.get("ALERT_EMAIL_FROM") or "").strip()
        if not sender:
            sender = username if username and "@" in username else DEFAULT_SENDER
        return cls(scheme, host, port, sender, recipients, username, password)

    def describe(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_smtp_url(url: str) -> tuple[str, str, int, str | None, str | None]:
    """``(scheme, host, port, user, password)`` from an ``SMTP_URL``; raises ``ConfigError``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("SMTP_URL is not a valid URL (expected smtp://user:pass@host:port)") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(
            f"SMTP_URL scheme {scheme or '(none)'!r} is not supported; use smtp://, smtp+starttls:// or smtps://"
        )
    if not parts.hostname:
        raise ConfigError("SMTP_URL has no host (expected smtp://user:pass@host:port)")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme], username, password

# --------------------------------------------------------------------------- compose


@dataclass(frozen=True)
class Alert:
    """What one email says. All strings are already scrubbed by the caller."""

    kind: str  # PROBLEM or RECOVERY
    db: str
    replica: str
    status: str
    headline: str
    advice: str | None
    result: dict[str, Any]  # the database's report JSON
    checked_at: datetime
    since: str | None = None  # when the problem began (ISO), if known
    environment: str | None = None


def subject(alert: Alert) -> str:
    """``[restorable production] FAILED: /data/app.db (s3://bucket/app.db)``."""
    tag = f"[restorable {alert.environment}]" if alert.environment else "[restorable]"
    outcome = {"failed": "FAILED", "inconclusive": "COULD NOT VERIFY"}.get(alert.status, "RECOVERED")
    if alert.kind == RECOVERY:
        outcome = "RECOVERED"
    return f"{tag} {outcome}: {alert.db} ({alert.replica})"


def facts(alert: Alert) -> list[tuple[str, str]]:
    """The numbers worth reading in an alert, as (label, value) rows."""
    r = alert.result
    rows = [("database", alert.db), ("replica", alert.replica), ("status", alert.status),
            ("checked at", format_iso(alert.checked_at, "seconds"))]
    if alert.since:
        rows.append(("problem since" if alert.kind == PROBLEM else "was broken since", alert.since))
    for key, label in (("format", "format"), ("generation", "generation"), ("position", "position")):
        if r.get(key):
            rows.append((label, str(r[key])))
    if r.get("last_backup_at"):
        rows.append(("latest backup", f"{r['last_backup_at']} ({_age(r['last_backup_at'], alert.checked_at)} old)"))
    restored = r.get("restored") or {}
    if restored.get("bytes") is not None:
        rows.append(("restored size", f"{format_bytes_exact(restored['bytes'])} (page size {restored.get('page_size', '?')})"))
    if restored.get("sha256"):
        rows.append(("restored sha256", str(restored["sha256"])))
    if r.get("replica_bytes") is not None:
        cost = r.get("monthly_cost_usd")
        held = format_bytes_exact(r["replica_bytes"]) + (f", ~${cost:.2f}/month" if isinstance(cost, (int, float)) else "")
        rows.append(("held in the bucket", held))
    for table, count in sorted((r.get("tables") or {}).items()):
        rows.append((f"rows in {table}", f"{count:,}" if isinstance(count, int) else str(count)))
    rows += recovery_facts(r)
    total = sum(v for v in (r.get("timings") or {}).values() if isinstance(v, (int, float)))
    if total:
        rows.append(("check took", f"{total:.1f} s"))
    return rows


def _age(when: str, now: datetime) -> str:
    try:
        then = parse_iso(when)
        seconds = max(0, int((now - then).total_seconds()))
    except (AttributeError, TypeError, ValueError):
        return "?"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def text_body(alert: Alert) -> str:
    lines = [alert.headline, ""]
    if alert.advice:
        lines += ["What to do: " + alert.advice, ""]
    findings = alert.result.get("findings") or []
    if findings:
        lines.append("Findings:")
        lines += [f"  - [{f.get('severity')}] {f.get('kind')}: {f.get('message')}" for f in findings]
        lines.append("")
    width = max(len(label) for label, _ in facts(alert))
    lines += [f"{label.ljust(width)}  {value}" for label, value in facts(alert)]
    return "\n".join(lines) + "\n"


def html_body(alert: Alert) -> str:
    e = html.escape
    parts = [f"<p><strong>{e(alert.headline)}</strong></p>"]
    if alert.advice:
        parts.append(f"<p>What to do: {e(alert.advice)}</p>")
    findings = alert.result.get("findings") or []
    if findings:
        items = "".join(
            f"<li><code>{e(str(f.get('severity')))}</code> <code>{e(str(f.get('kind')))}</code>: "
            f"{e(str(f.get('message')))}</li>" for f in findings
        )
        parts.append(f"<p>Findings:</p><ul>{items}</ul>")
    rows = "".join(f"<tr><th align=\"left\">{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts(alert))
    parts.append(f"<table cellpadding=\"3\">{rows}</table>")
    return "<!doctype html><html><body>" + "".join(parts) + "</body></html>\n"


def compose(alert: Alert, settings: SmtpSettings) -> EmailMessage:
    """A multipart/alternative message (plain text first, then HTML)."""
    message = EmailMessage()
    message["Subject"] = subject(alert)
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="restorable")
    message.set_content(text_body(alert))
    message.add_alternative(html_body(alert), subtype="html")
    return message

# --------------------------------------------------------------------------- send


def send(settings: SmtpSettings, message: EmailMessage) -> None:
    """Deliver ``message``; raises ``MailError`` on any connection, TLS, auth or SMTP failure."""
    try:
        with _connect(settings) as client:
            client.ehlo()
            if settings.scheme == "smtp+starttls":
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if settings.username:
                client.login(settings.username, settings.password or "")
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"send alert email via {settings.describe()}: {type(exc).__name__}: {exc}") from exc


def _connect(settings: SmtpSettings) -> smtplib.SMTP:
    if settings.scheme == "smtps":
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout,
                                context=ssl.create_default_context())
    return smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
