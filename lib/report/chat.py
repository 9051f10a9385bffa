"""Chat and webhook alerts through Apprise (``RESTORABLE_NOTIFY_URLS``).

One or more Apprise URLs (``slack://``, ``discord://``, ``msteams://``, ``ntfy://``,
``tgram://``, ``pagerduty://``, ``json://`` for a generic webhook, ...; see Apprise's
documentation for each service's URL). The rules are the alert email's, with their own
memory (``chat_alerted`` in the history's ``latest.json``): a database that turns bad
and a database that recovers each appear once, and a run sends **one digest** naming
every such database, never one message per database. Nothing is sent for a run in which
nothing changed. If sending fails the memory is not advanced, so the next run tries again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

from lib.report.advice import PROBLEM, RECOVERY
from lib.report.endpoints import NOTIFY_URLS_VAR, split_urls

log = logging.getLogger(__name__)

FAILURE = "failure"

SUCCESS = "success"

# Chat services cut long messages (Discord at 2,000 characters, Slack blocks at 3,000).
MAX_BODY_CHARS = 1_900


@dataclass(frozen=True)
class ChatSettings:
    urls: tuple[str, ...]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "ChatSettings | None":
        urls = tuple(split_urls(environ.get(NOTIFY_URLS_VAR)))
        return cls(urls) if urls else None


@dataclass(frozen=True)
class ChatItem:
    """One database in a digest. Strings are scrubbed by the caller."""

    kind: str  # PROBLEM or RECOVERY
    db: str
    replica: str
    status: str
    kinds: tuple[str, ...]
    headline: str
    restore_point: str
    advice: str | None = None
    since: str | None = None


@dataclass(frozen=True)
class Digest:
    title: str
    body: str
    notify_type: str  # FAILURE when anything is bad, else SUCCESS


def compose(items: list[ChatItem], *, environment: str | None = None, still_bad: int = 0) -> Digest:
    """The one message of a run: problems first, then recoveries (pure)."""
    problems = [i for i in items if i.kind == PROBLEM]
    recoveries = [i for i in items if i.kind == RECOVERY]
    tag = f"[restorable {environment}]" if environment else "[restorable]"
    counts = []
    if problems:
        counts.append(f"{len(problems)} database{'s' if len(problems) > 1 else ''} need attention")
    if recoveries:
        counts.append(f"{len(recoveries)} recovered")
    lines: list[str] = []
    for item in problems:
        lines += [f"{item.status.upper()}: {item.db} ({item.replica})",
                  f"  {item.headline}",
                  f"  finding kinds: {', '.join(item.kinds) or '-'}; restore point: {item.restore_point}"]
        if item.since:
            lines.append(f"  bad since {item.since}")
        if item.advice:
            lines.append(f"  What to do: {item.advice}")
    for item in recoveries:
        lines.append(f"RECOVERED: {item.db} ({item.replica}) is {item.status} again; restore point: "
                     f"{item.restore_point}" + (f" (was bad since {item.since})" if item.since else ""))
    if still_bad:
        lines.append(f"({still_bad} other database{'s are' if still_bad > 1 else ' is'} still bad, "
                     "already reported)")
    body = "\n".join(lines)
    if len(body) > MAX_BODY_CHARS:
        body = body[: MAX_BODY_CHARS - 40].rstrip() + "\n[... more in the report and logs]"
    return Digest(f"{tag} {', '.join(counts)}", body, FAILURE if problems else SUCCESS)


def send(settings: ChatSettings, digest: Digest) -> bool:
    """Deliver ``digest`` to every URL; True only when every service accepted it.

    A URL Apprise does not understand is logged (by position and scheme, never its
    text) and skipped.
    """
    import apprise  # deferred: Apprise loads ~100 service plugins at import; only runs with chat need it

    client = apprise.Apprise()
    for number, url in enumerate(settings.urls, start=1):
        if not client.add(url):
            scheme = url.split("://", 1)[0] if "://" in url else "(no scheme)"
            log.warning("%s entry %d (%s://...) is not a URL Apprise understands; skipped", NOTIFY_URLS_VAR,
                        number, scheme, extra={"stage": "chat"})
    if len(client) == 0:
        return False
    notify_type = apprise.NotifyType.FAILURE if digest.notify_type == FAILURE else apprise.NotifyType.SUCCESS
    return bool(client.notify(title=digest.title, body=digest.body, notify_type=notify_type,
                              body_format=apprise.NotifyFormat.TEXT))
