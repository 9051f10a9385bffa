"""One alert email per run: when several databases change in the same run, one message lists them all.

A run over 1,000 databases must not send 1,000 emails. ``lib.report.notify`` sends a
single database's change as before (``lib.report.mail``); two or more changes in one run
go out as one digest built here: a subject that counts problems and recoveries, then one
section per database (its headline, what to do, its findings), problems first. Past
``DETAILED`` databases the rest are one line each, so the message stays readable and small.
"""
from __future__ import annotations

import html
import logging
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Sequence

from lib.report import mail
from lib.report.advice import RECOVERY, alert_class, alert_kind
from lib.report.mail import Alert, SmtpSettings

log = logging.getLogger(__name__)

DETAILED = 50  # databases shown with findings; the rest get one line each


def subject(alerts: Sequence[Alert]) -> str:
    """``[restorable production] 3 databases changed: 2 problems, 1 recovered``."""
    environment = next((a.environment for a in alerts if a.environment), None)
    tag = f"[restorable {environment}]" if environment else "[restorable]"
    recovered = sum(1 for a in alerts if a.kind == RECOVERY)
    problems = len(alerts) - recovered
    parts = [f"{problems} problem{'s' if problems != 1 else ''}"] if problems else []
    parts += [f"{recovered} recovered"] if recovered else []
    return f"{tag} {len(alerts)} databases changed: {', '.join(parts)}"


def ordered(alerts: Sequence[Alert]) -> list[Alert]:
    """Problems first (failed before could-not-verify), then recoveries; by database within each."""
    rank = {"failed": 0, "inconclusive": 1}
    return sorted(alerts, key=lambda a: (a.kind == RECOVERY, rank.get(a.status, 2), a.db, a.replica))


def text_body(alerts: Sequence[Alert]) -> str:
    lines = [f"{len(alerts)} databases changed status in this run.", ""]
    for index, alert in enumerate(ordered(alerts)):
        label = "RECOVERED" if alert.kind == RECOVERY else alert.status.upper()
        lines.append(f"{label}: {alert.db} ({alert.replica})")
        if index >= DETAILED:
            continue
        lines.append(f"  {alert.headline}")
        if alert.advice:
            lines.append(f"  What to do: {alert.advice}")
        for finding in alert.result.get("findings") or []:
            lines.append(f"  - [{finding.get('severity')}] {finding.get('kind')}: {finding.get('message')}")
        lines.append("")
    return "\n".join(lines) + "\n"


def compose(alerts: Sequence[Alert], settings: SmtpSettings) -> EmailMessage:
    """The digest message (plain text, and the same text as HTML). Strings are already scrubbed."""
    message = EmailMessage()
    message["Subject"] = subject(alerts)
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="restorable")
    body = text_body(alerts)
    message.set_content(body)
    message.add_alternative(f"<!doctype html><html><body><pre>{html.escape(body)}</pre></body></html>\n",
                            subtype="html")
    return message


def send_alerts(notifier, report, told) -> None:
    """Send what ``told`` (``notify._Told`` entries, ``alerted`` = what recipients last heard)
    calls for: each change alone through ``notifier._alert``, or two or more as one digest.
    Each entry's ``alerted`` advances only if its message went out."""
    changed = [e for e in told if alert_kind(e.alerted, e.result.status)]
    if len(changed) < 2 or notifier.smtp is None:
        for entry in changed:
            entry.alerted = notifier._alert(report, entry)
        return
    alerts = [notifier._build_alert(alert_kind(e.alerted, e.result.status), report, e) for e in changed]
    try:
        mail.send(notifier.smtp, compose(alerts, notifier.smtp))
    except Exception as exc:
        notifier._mail_failed(exc, changed[0].db)
        return
    log.info("alert digest sent databases=%d to=%d", len(changed), len(notifier.smtp.recipients),
             extra={"stage": "email"})
    for entry in changed:
        entry.alerted = alert_class(entry.result.status)
