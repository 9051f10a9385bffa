"""Sentry: one event per database that needs attention, and a cron check-in per run.

Enabled by ``SENTRY_DSN``; without it nothing here touches sentry-sdk. Settings:

==============================  =================================================  ======================
variable                        meaning                                            default
==============================  =================================================  ======================
``SENTRY_DSN``                  where events go                                    (off)
``SENTRY_ENVIRONMENT``          event environment                                  ``RAILWAY_ENVIRONMENT_NAME``
``SENTRY_RELEASE``              event release                                      ``RAILWAY_GIT_COMMIT_SHA``
``SENTRY_MONITOR_SLUG``         cron monitor slug                                  ``restorable-<job>``
``VERIFY_SCHEDULE``             the run's crontab (UTC), upserted on the monitor  ``0 * * * *``
``SENTRY_CHECKIN_MARGIN``       minutes a run may start late before "missed"       ``10``
``SENTRY_MAX_RUNTIME``          minutes a run may take before "timed out"          job's max runtime + 5
==============================  =================================================  ======================

Events (see ``result_event``): level error for a failed database, warning for an
inconclusive or warning one; fingerprint ``["restorable", db, replica, *kinds]`` with the
sorted kinds of the findings that set the status, so a recurring problem is one issue.

Secrets: every event and check-in passes ``before_send`` (and transactions
``before_send_transaction``), which scrubs all strings with the run's ``Scrubber``. The
one exception is the DSN public key inside the SDK's own trace context: Sentry issued it,
the SDK sends it in every request's auth header and in the envelope's trace header, and
redacting it there would break the header. Anywhere else in an event it is redacted.
"""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from lib.config.parsing import positive_int
from lib.config.settings_model import DEFAULT_SCHEDULE, ENV_MAX_RUNTIME, ENV_SCHEDULE, max_runtime_seconds
from lib.errors import ConfigError
from lib.report.model import ERROR, FAILED, INCONCLUSIVE, WARN, WARNING, DbResult, Finding
from lib.report.scrub import Scrubber

log = logging.getLogger(__name__)


DEFAULT_CHECKIN_MARGIN_MINUTES = 10  # Railway cron starts can lag by minutes


# After its own deadline a run still reports, prints and flushes; Sentry waits this much longer.
MAX_RUNTIME_SLACK_MINUTES = 5

FLUSH_TIMEOUT_SECONDS = 10.0

TAG_VALUE_LIMIT = 200  # Sentry rejects longer tag values

LEVELS = {FAILED: "error", INCONCLUSIVE: "warning", WARN: "warning"}

RAILWAY_TAGS = {
    "RAILWAY_SERVICE_ID": "railway.service_id",
    "RAILWAY_SERVICE_NAME": "railway.service",
    "RAILWAY_DEPLOYMENT_ID": "railway.deployment_id",
    "RAILWAY_PROJECT_NAME": "railway.project",
    "RAILWAY_REPLICA_ID": "railway.replica_id",
}

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?#LW]+$")


def is_valid_crontab(value: str) -> bool:
    """Five cron fields (minute hour day month weekday), as Sentry's crontab schedule expects."""
    fields = value.split()
    return len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields)


@dataclass(frozen=True)
class SentrySettings:
    dsn: str = field(repr=False)
    environment: str | None
    release: str | None
    monitor_slug: str
    schedule: str | None  # None: invalid VERIFY_SCHEDULE, check in without upserting
    checkin_margin: int
    max_runtime: int
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], job: str = "verify") -> "SentrySettings | None":
        """None when ``SENTRY_DSN`` is unset or blank."""
        dsn = (environ.get("SENTRY_DSN") or "").strip()
        if not dsn:
            return None
        schedule = (environ.get(ENV_SCHEDULE) or DEFAULT_SCHEDULE).strip()
        if not is_valid_crontab(schedule):
            log.warning("VERIFY_SCHEDULE=%r is not a 5-field crontab; the Sentry monitor keeps its "
                        "current schedule", schedule, extra={"stage": "sentry"})
            schedule = None
        tags = {tag: environ[name] for name, tag in RAILWAY_TAGS.items() if environ.get(name)}
        tags["job"] = job
        return cls(
            dsn=dsn,
            environment=_first(environ, "SENTRY_ENVIRONMENT", "RAILWAY_ENVIRONMENT_NAME"),
            release=_first(environ, "SENTRY_RELEASE", "RAILWAY_GIT_COMMIT_SHA"),
            monitor_slug=_first(environ, "SENTRY_MONITOR_SLUG") or f"restorable-{job}",
            schedule=schedule,
            checkin_margin=_minutes(environ, "SENTRY_CHECKIN_MARGIN", DEFAULT_CHECKIN_MARGIN_MINUTES),
            max_runtime=_minutes(environ, "SENTRY_MAX_RUNTIME", default_max_runtime_minutes(environ)),
            tags=tags,
        )

    def monitor_config(self) -> dict[str, Any] | None:
        """The monitor upserted with every check-in (Sentry counts minutes, in UTC here)."""
        if self.schedule is None:
            return None
        return {
            "schedule": {"type": "crontab", "value": self.schedule},
            "timezone": "UTC",
            "checkin_margin": self.checkin_margin,
            "max_runtime": self.max_runtime,
        }

    @property
    def public_key(self) -> str | None:
        try:
            return urlsplit(self.dsn).username
        except ValueError:
            return None


def _first(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = (environ.get(name) or "").strip()
        if value:
            return value
    return None


def default_max_runtime_minutes(environ: Mapping[str, str]) -> int:
    """The job's own maximum runtime (``RESTORABLE_MAX_RUNTIME``, 30m) in whole minutes, plus slack."""
    try:
        seconds = max_runtime_seconds(None, {k: v.strip() for k, v in environ.items() if k == ENV_MAX_RUNTIME and v.strip()})
    except ConfigError:  # jobs.verify reports a bad value itself
        seconds = max_runtime_seconds(None, {})
    return max(1, math.ceil(seconds / 60)) + MAX_RUNTIME_SLACK_MINUTES


def _minutes(environ: Mapping[str, str], name: str, default: int) -> int:
    """``positive_int``, but a bad value is a warning: the monitor's margins must not stop a run."""
    try:
        return positive_int(environ, name, default)
    except ConfigError:
        log.warning("%s=%r is not a whole number of minutes >= 1; using %d", name, (environ.get(name) or "").strip(),
                    default, extra={"stage": "sentry"})
        return default

# --------------------------------------------------------------------------- events


def deciding_findings(result: DbResult) -> list[Finding]:
    """The findings that set the database's status (e.g. the errors of a failed one)."""
    status = result.status
    if status == FAILED:
        return [f for f in result.findings if f.severity == ERROR and not f.inconclusive]
    if status == INCONCLUSIVE:
        return [f for f in result.findings if f.inconclusive]
    return [f for f in result.findings if f.severity == WARNING]


def fingerprint(result: DbResult, replica: str) -> list[str]:
    """``["restorable", db, replica, *sorted kinds]``: the same problem groups into one issue."""
    kinds = sorted({f.kind for f in deciding_findings(result)})
    return ["restorable", result.db, replica, *kinds]


def _tag(value: object) -> str:
    text = " ".join(str(value).split())
    return text[:TAG_VALUE_LIMIT]


def result_event(result: DbResult, *, replica: str, message: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """The Sentry event for one database that is failed, inconclusive or warning."""
    kinds = sorted({f.kind for f in deciding_findings(result)})
    event_tags = dict(tags)
    event_tags.update({
        "database": _tag(result.db),
        "replica": _tag(replica),
        "status": result.status,
        "format": _tag(result.format or "unknown"),
        "generation": _tag(result.generation or "none"),
        "kind": _tag(",".join(kinds) or "none"),
    })
    return {
        "message": message,
        "level": LEVELS.get(result.status, "info"),
        "logger": "restorable",
        "fingerprint": fingerprint(result, replica),
        "tags": event_tags,
        "contexts": {"restorable": result.to_json()},
    }


def problem_event(message: str, *, level: str, fingerprint: list[str], tags: Mapping[str, str],
                  context: dict[str, Any] | None = None) -> dict[str, Any]:
    """An event about the job itself (SMTP failure, aborted run), not about one database."""
    event: dict[str, Any] = {
        "message": message,
        "level": level,
        "logger": "restorable",
        "fingerprint": fingerprint,
        "tags": dict(tags),
    }
    if context:
        event["contexts"] = {"restorable": context}
    return event

# --------------------------------------------------------------------------- client


class SentryReporter:
    """The one object that talks to sentry-sdk. Methods may raise; ``RunNotifier`` guards each call."""

    def __init__(self, settings: SentrySettings, scrubber: Scrubber):
        self.settings = settings
        self.scrubber = scrubber
        key = settings.public_key
        # The SDK copies the DSN public key into the trace context (its dynamic sampling
        # context, which becomes the envelope's trace header); that copy must stay intact.
        self._trace_scrubber = scrubber.without(key) if key else scrubber
        self.check_in_id: str | None = None
        self._started = time.monotonic()

    def init(self) -> None:
        """Initialise sentry-sdk for this run (re-initialising if a previous run used other settings)."""
        sentry_sdk = _sdk()
        client = sentry_sdk.get_client()
        if client.is_active():  # a previous run in this process (scheduler worker, tests)
            client.close(timeout=FLUSH_TIMEOUT_SECONDS)
        sentry_sdk.init(
            dsn=self.settings.dsn,
            environment=self.settings.environment,
            release=self.settings.release,
            before_send=self.before_send,
            before_send_transaction=self.before_send,
            # No automatic integrations: no excepthook/logging/atexit capture with unscrubbed
            # local variables; this job reports explicitly and flushes itself.
            default_integrations=False,
            integrations=[],
            include_local_variables=False,
            max_breadcrumbs=0,
        )

    def before_send(self, event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        """Scrub every string of an outgoing event or check-in (the SDK's trace context keeps the DSN key)."""
        contexts = event.get("contexts") if isinstance(event.get("contexts"), dict) else {}
        trace = contexts.get("trace")
        scrubbed = self.scrubber.obj({**event, "contexts": {k: v for k, v in contexts.items() if k != "trace"}})
        if trace is not None:
            scrubbed["contexts"]["trace"] = self._trace_scrubber.obj(trace)
        if not contexts and "contexts" not in event:
            scrubbed.pop("contexts")
        return scrubbed

    def check_in(self, status: str) -> None:
        """``in_progress`` opens the run's check-in; ``ok``/``error`` close it with the duration."""
        capture_checkin = _sdk().crons.capture_checkin
        if status == "in_progress":
            self._started = time.monotonic()
            self.check_in_id = capture_checkin(
                monitor_slug=self.settings.monitor_slug, status=status,
                monitor_config=self.settings.monitor_config(),
            )
            return
        capture_checkin(
            monitor_slug=self.settings.monitor_slug, check_in_id=self.check_in_id, status=status,
            duration=time.monotonic() - self._started, monitor_config=self.settings.monitor_config(),
        )
        self.check_in_id = None

    def capture(self, event: dict[str, Any]) -> str | None:
        return _sdk().capture_event(event)

    def flush(self, timeout: float = FLUSH_TIMEOUT_SECONDS) -> None:
        _sdk().flush(timeout=timeout)


def _sdk():
    """The sentry_sdk module, imported on first use: it is slow to import and only runs with SENTRY_DSN need it."""
    import sentry_sdk  # deferred: see the docstring
    import sentry_sdk.crons  # noqa: F401  (makes sentry_sdk.crons an attribute)

    return sentry_sdk
