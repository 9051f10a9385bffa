"""What a run tells the outside world: history, alert email, Sentry events and check-ins.

``lib.verify`` drives one ``RunNotifier`` per run::

    notifier = RunNotifier.from_environ(os.environ, secrets=config.secrets())
    notifier.run_started()                       # Sentry init + check-in in_progress
    previous = notifier.previous(db, replica)    # last history document (or None)
    ...verify...
    notifier.run_finished(report, targets)       # history, email, events, check-in ok/error, flush
    # or, on SIGTERM / max runtime / crash:
    notifier.run_aborted("SIGTERM")              # check-in error + flush

Contract: no method raises (failures are logged and, where Sentry is on, reported), and
nothing here changes a ``Report``, a ``DbResult`` or the exit code.

Alert email policy (using ``latest.json``'s ``alerted`` field, see ``lib.history``): an
email goes out when a database turns bad (failed or inconclusive) while its recipients
were last told it was good, and once when it turns good (ok or warning) again. A change
between failed and inconclusive sends nothing. If sending fails, the state is not
advanced, so the next run tries again. Without readable history every bad run alerts.
"""
from __future__ import annotations

import functools
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, TypeVar

from lib.config.model import DbConfig, ReplicaConfig
from lib.errors import ConfigError
from lib.report import history, mail
from lib.report.model import FAILED, INCONCLUSIVE, OK, WARN, DbResult, Finding, Report, status_of
from lib.report.scrub import Scrubber
from lib.report.sentry import LEVELS, SentryReporter, SentrySettings, deciding_findings, problem_event, result_event

log = logging.getLogger(__name__)


GOOD = "good"

BAD = "bad"

# What to do about each finding kind; the first kind of a problem picks the advice.
NEXT_STEPS = {
    "no_backups": "Litestream has uploaded nothing here: check that Litestream runs next to the app and that "
                  "its replica URL, bucket and credentials match litestream.yml.",
    "missing_snapshot": "A generation has no usable snapshot: restart Litestream so it starts a new generation "
                        "with a fresh snapshot, then run the check again.",
    "corrupt_object": "An object in the replica can't be decoded: restart Litestream to take a fresh snapshot; "
                      "keep the bad object for inspection.",
    "wal_gap": "The WAL chain has a gap, so recent changes can't be restored: restart Litestream to start a new "
               "generation and look for anything else deleting objects (bucket lifecycle rules).",
    "integrity": "The restored database fails SQLite's integrity check: reproduce with `litestream restore -o "
                 "/tmp/check.db <replica-url>` and `PRAGMA integrity_check`; if the live database is fine, restart "
                 "Litestream to take a new snapshot.",
    "stale": "No recent backup data: check that Litestream is running and can write to the bucket (its logs), "
             "and that the app is writing.",
    "row_count": "A table lost many rows since the last good run: if that was on purpose, accept the new counts; "
                 "otherwise restore from an earlier point with `litestream restore -timestamp`.",
    "probe": "The probe check failed: check the probe configured for this database against the live app.",
    "retention": "Retention could not finish: check delete permissions on the bucket; nothing unverified was "
                 "deleted.",
    "unreachable": "The store could not be reached: check the endpoint, bucket name and credentials "
                   "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), then run the check again.",
    "interrupted": "The run was stopped before it finished: if this repeats, raise the job's maximum runtime or "
                   "look for slow storage.",
}

DEFAULT_NEXT_STEP = "See the findings in the report and the README's list of finding kinds."

_T = TypeVar("_T")


def never_raises(default: Any = None) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Log (with traceback) instead of raising; return ``default`` on failure."""

    def wrap(method: Callable[..., _T]) -> Callable[..., _T]:
        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> _T:
            try:
                return method(*args, **kwargs)
            except Exception:
                log.exception("reporting step %s failed; verification result unchanged", method.__name__,
                              extra={"stage": "notify"})
                return default

        return guarded

    return wrap


def alert_class(status: str) -> str:
    return BAD if status in (FAILED, INCONCLUSIVE) else GOOD


def alert_kind(alerted_before: str, status: str) -> str | None:
    """``problem``, ``recovery`` or None: does this run's status need an email?"""
    now = alert_class(status)
    if now == alerted_before:
        return None
    return mail.PROBLEM if now == BAD else mail.RECOVERY


def headline(result: DbResult, replica: str) -> str:
    """One line saying what is wrong: ``/data/app.db on s3://b/app.db: backup verification failed: ...``."""
    verdict = {
        FAILED: "backup verification failed",
        INCONCLUSIVE: "backup could not be verified",
        WARN: "backup verified with warnings",
        OK: "backup verified",
    }[result.status]
    deciding = deciding_findings(result)
    line = f"{result.db} on {replica}: {verdict}"
    if deciding:
        line += f": {deciding[0].message}"
        if len(deciding) > 1:
            line += f" (+{len(deciding) - 1} more)"
    return line


def advice(findings: list[Finding]) -> str | None:
    """What to do, from the first finding whose kind we know."""
    if not findings:
        return None
    for finding in findings:
        if finding.kind in NEXT_STEPS:
            return NEXT_STEPS[finding.kind]
    return DEFAULT_NEXT_STEP


class RunNotifier:
    """History, email and Sentry for one run of a job (see the module docstring)."""

    def __init__(
        self,
        *,
        scrubber: Scrubber,
        job: str = "verify",
        sentry: SentrySettings | None = None,
        smtp: mail.SmtpSettings | None = None,
        history_settings: history.HistorySettings | None = None,
        environment: str | None = None,
    ):
        self.scrubber = scrubber
        self.job = job
        self.smtp = smtp
        self.history_settings = history_settings or history.HistorySettings()
        self.environment = environment
        self.sentry = SentryReporter(sentry, scrubber) if sentry else None
        self._previous: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._locations: dict[tuple[str, str], history.HistoryLocation | None] = {}
        self._history_problems: list[str] = []
        self._check_in_closed = False
        self._sentry_ready = False

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, secrets: list[str], job: str = "verify") -> "RunNotifier":
        """Read every reporting setting; a bad setting disables only its own part (with a warning)."""
        scrubber = Scrubber.from_environ(environ, secrets)
        parts: dict[str, Any] = {}
        for name, build in (
            ("sentry", lambda: SentrySettings.from_environ(environ, job)),
            ("smtp", lambda: mail.SmtpSettings.from_environ(environ)),
            ("history_settings", lambda: history.HistorySettings.from_environ(environ)),
        ):
            try:
                parts[name] = build()
            except ConfigError as exc:
                log.warning("%s; %s is off for this run", exc, name.split("_")[0], extra={"stage": "config"})
            except Exception:
                log.exception("reading %s settings failed; it is off for this run", name, extra={"stage": "config"})
        if environ.get("SMTP_URL") and not environ.get("ALERT_EMAIL_TO"):
            log.warning("SMTP_URL is set but ALERT_EMAIL_TO is not; alert email is off", extra={"stage": "config"})
        environment = (environ.get("SENTRY_ENVIRONMENT") or environ.get("RAILWAY_ENVIRONMENT_NAME") or "").strip()
        return cls(scrubber=scrubber, job=job, environment=environment or None, **parts)

    # ------------------------------------------------------------------ run lifecycle

    @never_raises()
    def run_started(self) -> None:
        """Initialise Sentry (when ``SENTRY_DSN`` is set) and open the cron check-in."""
        if not self.sentry or not self._ensure_sentry():
            return
        self.sentry.check_in("in_progress")
        log.info("sentry check-in opened monitor=%s", self.sentry.settings.monitor_slug, extra={"stage": "sentry"})

    def previous(self, db: DbConfig, replica: ReplicaConfig) -> dict[str, Any] | None:
        """The last ``latest.json`` for this database/replica; None if none, off or unreadable."""
        key = (db.path, replica.describe())
        if key not in self._previous:
            self._previous[key] = self._read_previous(db, replica)
        return self._previous[key]

    def history_location(self, db: DbConfig, replica: ReplicaConfig) -> history.HistoryLocation | None:
        """Where this pair's history lives (for ``history.last_good``); None when history is off."""
        if not self.history_settings.enabled:
            return None
        key = (db.path, replica.describe())
        if key not in self._locations:
            try:
                self._locations[key] = history.locate(db, replica, self.history_settings)
            except ConfigError as exc:
                self._note_history_problem(str(exc))
                self._locations[key] = None
        return self._locations[key]

    def run_finished(self, report: Report, targets: list[tuple[DbConfig, ReplicaConfig, DbResult]]) -> None:
        """Send Sentry events, close the check-in and flush first (no storage I/O), then write
        history and send alert emails, which need the bucket and may be slow. Never raises."""
        try:
            for db, replica, result in targets:
                self._capture_result(db, replica, result)
            self._capture_run_findings(report)
            self._close_check_in("error" if report.status in (FAILED, INCONCLUSIVE) else "ok")
        except Exception:
            log.exception("reporting failed; verification result unchanged", extra={"stage": "notify"})
        finally:
            self._flush()
        try:
            for db, replica, result in targets:
                self._finish_target(report, db, replica, result)
            self._warn_history_problems()
        except Exception:
            log.exception("reporting failed; verification result unchanged", extra={"stage": "notify"})
        finally:
            self._flush()

    def run_aborted(self, reason: str) -> None:
        """Report a run that stopped early (SIGTERM, max runtime, crash): event, check-in error, flush."""
        try:
            log.error("run aborted: %s", reason, extra={"stage": "notify"})
            self._warn_history_problems()
            if self.sentry and self._ensure_sentry():
                self._capture(problem_event(
                    f"restorable {self.job} run aborted: {reason}", level="error",
                    fingerprint=["restorable", "aborted", self.job], tags=self._tags(), context={"reason": reason},
                ))
                self._close_check_in("error")
        except Exception:
            log.exception("reporting the aborted run failed", extra={"stage": "notify"})
        finally:
            self._flush()

    # ------------------------------------------------------------------ per database

    @never_raises()  # one database's reporting trouble must not silence the others
    def _finish_target(self, report: Report, db: DbConfig, replica: ReplicaConfig, result: DbResult) -> None:
        previous = self.previous(db, replica)
        alerted = self._alert(report, db, replica, result, previous)
        self._write_history(report, db, replica, result, previous, alerted)

    @never_raises()
    def _capture_result(self, db: DbConfig, replica: ReplicaConfig, result: DbResult) -> None:
        where = replica.describe()
        if result.status != OK:
            message = headline(result, where)
            step = advice(deciding_findings(result))
            self._capture(result_event(result, replica=where, tags=self._tags(),
                                       message=f"{message}\nWhat to do: {step}" if step else message))

    @never_raises(default=None)
    def _read_previous(self, db: DbConfig, replica: ReplicaConfig) -> dict[str, Any] | None:
        location = self.history_location(db, replica)
        if location is None:
            return None
        try:
            return history.read_latest(location)
        except Exception as exc:
            self._note_history_problem(f"cannot read {location.describe()}: {exc}")
            return None

    @never_raises(default=GOOD)
    def _alert(self, report: Report, db: DbConfig, replica: ReplicaConfig, result: DbResult,
               previous: dict[str, Any] | None) -> str:
        """Send the email this status change calls for; return what recipients now believe."""
        before = (previous or {}).get("alerted")
        before = before if before in (GOOD, BAD) else GOOD
        kind = alert_kind(before, result.status)
        if kind is None or self.smtp is None:  # with email off, nobody was told anything new
            return before
        alert = self._build_alert(kind, report, replica, result, previous)
        try:
            mail.send(self.smtp, mail.compose(alert, self.smtp))
        except Exception as exc:
            self._mail_failed(exc, db)
            return before
        log.info("alert email sent kind=%s to=%d", kind, len(self.smtp.recipients),
                 extra={"db": db.path, "stage": "email"})
        return alert_class(result.status)

    def _build_alert(self, kind: str, report: Report, replica: ReplicaConfig, result: DbResult,
                     previous: dict[str, Any] | None) -> mail.Alert:
        where = replica.describe()
        since = (previous or {}).get("status_since") if kind == mail.RECOVERY else None
        if kind == mail.PROBLEM and previous and alert_class(previous.get("status", OK)) == BAD:
            since = previous.get("status_since")
        return mail.Alert(
            kind=kind, db=result.db, replica=where, status=result.status,
            headline=self.scrubber.text(headline(result, where)),
            advice=advice(deciding_findings(result)) if kind == mail.PROBLEM else None,
            result=self.scrubber.obj(result.to_json()),
            checked_at=report.started_at, since=since, environment=self.environment,
        )

    def _mail_failed(self, exc: Exception, db: DbConfig) -> None:
        log.error("alert email not sent: %s", exc, extra={"db": db.path, "stage": "email"})
        self._capture(problem_event(
            f"restorable could not send an alert email: {exc}. Check SMTP_URL, ALERT_EMAIL_FROM and "
            "ALERT_EMAIL_TO; the next run will try again.",
            level="error", fingerprint=["restorable", "smtp", self.smtp.describe() if self.smtp else "-"],
            tags={**self._tags(), "database": db.path, "stage": "email"},
        ))

    @never_raises()
    def _write_history(self, report: Report, db: DbConfig, replica: ReplicaConfig, result: DbResult,
                       previous: dict[str, Any] | None, alerted: str) -> None:
        location = self.history_location(db, replica)
        if location is None:
            return
        checked_at = report.started_at or datetime.now(timezone.utc)
        latest = history.build_latest(previous, db, replica, result, checked_at, alerted, self.job)
        try:
            key = history.write(location, self.scrubber.obj(latest), self.scrubber.obj(result.to_json()), checked_at)
        except Exception as exc:
            self._note_history_problem(f"{location.describe()}: {exc}")
            return
        log.info("history written key=%s", key, extra={"db": db.path, "stage": "history"})
        pruned = history.prune(location, checked_at,
                               self.history_settings.keep_days, self.history_settings.keep_count)
        if pruned:
            log.info("history pruned count=%d", pruned, extra={"db": db.path, "stage": "history"})

    def _note_history_problem(self, problem: str) -> None:
        if problem not in self._history_problems:
            self._history_problems.append(problem)

    def _warn_history_problems(self) -> None:
        """One warning per run, however many databases could not record history."""
        if not self._history_problems:
            return
        log.warning(
            "history unavailable (%s); verification is unaffected, but alert-on-change and row-count drift "
            "have no memory: give the job read, write and delete access to the history prefix, set "
            "RESTORABLE_HISTORY_PREFIX, or set RESTORABLE_HISTORY=off",
            "; ".join(self._history_problems), extra={"stage": "history"},
        )
        self._history_problems.clear()

    # ------------------------------------------------------------------ sentry plumbing

    def _capture_run_findings(self, report: Report) -> None:
        """One event for findings not tied to a database (config, interruption), when there are any."""
        status = status_of(report.run_findings)
        if status == OK or not self.sentry:
            return
        kinds = sorted({f.kind for f in report.run_findings})
        first = report.run_findings[0]
        message = f"restorable {self.job} run: {first.message}"
        step = advice(report.run_findings)
        self._capture(problem_event(
            f"{message}\nWhat to do: {step}" if step else message, level=LEVELS[status],
            fingerprint=["restorable", "run", *kinds],
            tags={**self._tags(), "kind": ",".join(kinds), "status": status},
            context={"findings": [f.to_json() for f in report.run_findings]},
        ))

    def _tags(self) -> dict[str, str]:
        return dict(self.sentry.settings.tags) if self.sentry else {}

    def _ensure_sentry(self) -> bool:
        """Initialise sentry-sdk once; a failure (e.g. a malformed DSN) turns Sentry off for the run."""
        if self.sentry and not self._sentry_ready:
            try:
                self.sentry.init()
            except Exception as exc:
                log.warning("Sentry is off for this run: SENTRY_DSN was refused (%s: %s)", type(exc).__name__, exc,
                            extra={"stage": "sentry"})
                self.sentry = None
                return False
            self._sentry_ready = True
        return self._sentry_ready

    @never_raises()
    def _capture(self, event: dict[str, Any]) -> None:
        if self.sentry and self._ensure_sentry():
            self.sentry.capture(event)

    @never_raises()
    def _close_check_in(self, status: str) -> None:
        """Close the run's check-in exactly once (a run that never opened one still reports)."""
        if self._check_in_closed or not self.sentry or not self._ensure_sentry():
            return
        self._check_in_closed = True
        self.sentry.check_in(status)
        log.info("sentry check-in closed status=%s", status, extra={"stage": "sentry"})

    @never_raises()
    def _flush(self) -> None:
        if self.sentry and self._sentry_ready:
            self.sentry.flush()
