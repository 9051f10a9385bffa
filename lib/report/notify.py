"""What a run tells the outside world, in one place: ``RunNotifier``.

``lib.verify`` / ``jobs.verify`` drive one notifier per run::

    notifier = RunNotifier.from_environ(os.environ, secrets=config.secrets())
    notifier.run_started()                       # start ping, Sentry init + check-in in_progress
    previous = notifier.previous(db, replica)    # last history document (or None)
    ...verify...
    notifier.run_finished(report, targets)       # every output below
    # or, on SIGTERM / max runtime / crash:
    notifier.run_aborted("SIGTERM")              # Sentry event + check-in error, fail ping, metrics

``run_finished`` goes through the outputs in this order, cheapest and most urgent first:
Sentry events and the check-in (then a flush), the end ping (``lib.report.ping``), then
per database the alert email (``lib.report.mail``), one chat digest for the run
(``lib.report.chat``), the history (``lib.report.history``), then the metrics
(``lib.report.metrics``) and the status site (``lib.site``), which read what came before.

Contract: no method raises (failures are logged and, where Sentry is on, reported), and
nothing here changes a ``Report``, a ``DbResult`` or the exit code.

Alert policy, per audience (email: ``alerted``, chat: ``chat_alerted`` in ``latest.json``,
see ``lib.report.history``): a message when a database turns bad (failed or
inconclusive) while its audience was last told it was good, and once when it turns good
(ok or warning) again. A change between failed and inconclusive sends nothing. If
sending fails, that audience's state is not advanced, so the next run tries again.
Without readable history every bad run alerts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from lib.config.model import DbConfig, ReplicaConfig
from lib.errors import ConfigError
from lib.fleet import digest
from lib.report import chat, history, mail
from lib.report.advice import BAD, GOOD, PROBLEM, RECOVERY, advice, alert_class, alert_kind, headline, restore_point
from lib.report.endpoints import STATUS_SITE_VAR, WORKER_OUTPUT_VAR, output_secrets
from lib.report.guard import never_raises
from lib.report.metrics import MetricsSettings
from lib.report.model import FAILED, INCONCLUSIVE, DbResult, Report
from lib.report.ping import Pinger, PingSettings
from lib.report.scrub import Scrubber
from lib.report.sentry import SentrySettings, deciding_findings
from lib.report.sentry_run import SentryRun

log = logging.getLogger(__name__)

CHAT_STATE = "chat_alerted"


@dataclass
class _Told:
    """One database's reporting state within ``run_finished``."""

    db: DbConfig
    replica: ReplicaConfig
    result: DbResult
    previous: dict[str, Any] | None
    alerted: str
    chat_alerted: str


class RunNotifier:
    """Every output of one run of a job (see the module docstring)."""

    def __init__(
        self,
        *,
        scrubber: Scrubber,
        job: str = "verify",
        sentry: SentrySettings | None = None,
        smtp: mail.SmtpSettings | None = None,
        history_settings: history.HistorySettings | None = None,
        environment: str | None = None,
        ping: PingSettings | None = None,
        chat_settings: chat.ChatSettings | None = None,
        metrics: MetricsSettings | None = None,
        sites: tuple[str, ...] = (),
        environ: Mapping[str, str] | None = None,
    ):
        self.scrubber = scrubber
        self.job = job
        self.smtp = smtp
        self.history_settings = history_settings or history.HistorySettings()
        self.environment = environment
        self.sentry = SentryRun(sentry, scrubber, job) if sentry else None
        self.pinger = Pinger(ping, scrubber) if ping else None
        self.chat = chat_settings
        self.metrics = metrics
        self.sites = sites
        self.environ = environ or {}
        self._previous: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._locations: dict[tuple[str, str], history.HistoryLocation | None] = {}
        self._history_problems: list[str] = []

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, secrets: list[str], job: str = "verify") -> "RunNotifier":
        """Read every reporting setting; a bad setting disables only its own part (with a warning)."""
        scrubber = Scrubber.from_environ(environ, [*secrets, *output_secrets(environ)])
        parts: dict[str, Any] = {}
        for name, build in (
            ("sentry", lambda: SentrySettings.from_environ(environ, job)),
            ("smtp", lambda: mail.SmtpSettings.from_environ(environ)),
            ("history_settings", lambda: history.HistorySettings.from_environ(environ)),
            ("ping", lambda: PingSettings.from_environ(environ)),
            ("chat_settings", lambda: chat.ChatSettings.from_environ(environ)),
            ("metrics", lambda: MetricsSettings.from_environ(environ)),
        ):
            try:
                parts[name] = build()
            except ConfigError as exc:
                log.warning("%s; %s is off for this run", scrubber.text(str(exc)), name.split("_")[0],
                            extra={"stage": "config"})
            except Exception:
                log.exception("reading %s settings failed; it is off for this run", name, extra={"stage": "config"})
        if environ.get("SMTP_URL") and not environ.get("ALERT_EMAIL_TO"):
            log.warning("SMTP_URL is set but ALERT_EMAIL_TO is not; alert email is off", extra={"stage": "config"})
        environment = (environ.get("SENTRY_ENVIRONMENT") or environ.get("RAILWAY_ENVIRONMENT_NAME") or "").strip()
        sites = tuple(s for s in ((environ.get(STATUS_SITE_VAR) or "").strip(), _worker_site(environ)) if s)
        return cls(scrubber=scrubber, job=job, environment=environment or None, sites=sites, environ=environ,
                   **parts)

    # ------------------------------------------------------------------ run lifecycle

    @never_raises()
    def run_started(self) -> None:
        """The start ping and Sentry's ``in_progress`` check-in, for whichever is configured."""
        if self.pinger:
            self.pinger.start()
        if self.sentry:
            self.sentry.open_check_in()

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
        """Every output, in the order of the module docstring. Never raises."""
        if self.sentry:
            try:
                for db, replica, result in targets:
                    self.sentry.capture_result(db, replica, result)
                self.sentry.capture_run_findings(report)
                self.sentry.close_check_in("error" if report.status in (FAILED, INCONCLUSIVE) else "ok")
            except Exception:
                log.exception("reporting failed; verification result unchanged", extra={"stage": "notify"})
            finally:
                self.sentry.flush()
        self._ping_finished(report.exit_code(), run_summary(report, self.job))
        try:
            told = [t for t in (self._email_target(report, db, rep, res) for db, rep, res in targets) if t]
            self._send_alerts(report, told)
            self._chat_digest(report, told)
            for entry in told:
                self._write_history(report, entry)
            self._warn_history_problems()
        except Exception:
            log.exception("reporting failed; verification result unchanged", extra={"stage": "notify"})
        finally:
            if self.sentry:
                self.sentry.flush()
        self._emit_metrics(report)
        self._publish_sites([(db, replica) for db, replica, _ in targets])

    def run_aborted(self, reason: str) -> None:
        """Report a run that stopped early (SIGTERM, max runtime, crash): event, check-in error, flush,
        a failure ping, and the run counted as ``aborted`` in the metrics."""
        try:
            log.error("run aborted: %s", reason, extra={"stage": "notify"})
            self._warn_history_problems()
            if self.sentry:
                self.sentry.capture_aborted(reason)
                self.sentry.close_check_in("error")
        except Exception:
            log.exception("reporting the aborted run failed", extra={"stage": "notify"})
        finally:
            if self.sentry:
                self.sentry.flush()
        self._ping_finished(None, f"restorable {self.job}: run aborted: {reason}")
        self._emit_metrics(None)

    # ------------------------------------------------------------------ pings, metrics, site

    @never_raises()
    def _ping_finished(self, exit_code: int | None, summary: str) -> None:
        if self.pinger:
            self.pinger.finish(exit_code, summary)

    @never_raises()
    def _emit_metrics(self, report: Report | None) -> None:
        if self.metrics:
            from lib.report import metrics  # deferred: imports prometheus_client only when configured

            metrics.emit(self.metrics, report, self.job, self.scrubber.text)

    @never_raises()
    def _publish_sites(self, pairs: list[tuple[DbConfig, ReplicaConfig]]) -> None:
        if not self.sites:
            return
        if not self.history_settings.enabled:
            log.warning("%s is set but RESTORABLE_HISTORY=off: the status page is built from the history; "
                        "no page this run", STATUS_SITE_VAR, extra={"stage": "site"})
            return
        from lib.site.build import build_site  # deferred: Jinja2 only when a page is wanted
        from lib.site.publish import publish

        files = build_site(pairs, self.history_settings, self.scrubber)
        for destination in self.sites:
            try:
                where = publish(destination, files, self.environ)
            except Exception as exc:
                log.warning("status page not written: %s", self.scrubber.text(f"{type(exc).__name__}: {exc}"),
                            extra={"stage": "site"})
                continue
            log.info("status page written to %s", where, extra={"stage": "site"})

    # ------------------------------------------------------------------ email, chat, history

    @never_raises(default=None)  # one database's reporting trouble must not silence the others
    def _email_target(self, report: Report, db: DbConfig, replica: ReplicaConfig, result: DbResult) -> _Told:
        previous = self.previous(db, replica)
        before_chat = (previous or {}).get(CHAT_STATE)
        before = (previous or {}).get("alerted")
        return _Told(db, replica, result, previous, alerted=before if before in (GOOD, BAD) else GOOD,
                     chat_alerted=before_chat if before_chat in (GOOD, BAD) else GOOD)

    @never_raises()
    def _send_alerts(self, report: Report, told: list[_Told]) -> None:
        """One email per changed database, or one digest when several changed (``lib.fleet.digest``)."""
        digest.send_alerts(self, report, told)

    @never_raises(default=GOOD)
    def _alert(self, report: Report, entry: _Told) -> str:
        """Send the email this status change calls for; return what recipients now believe."""
        before = (entry.previous or {}).get("alerted")
        before = before if before in (GOOD, BAD) else GOOD
        kind = alert_kind(before, entry.result.status)
        if kind is None or self.smtp is None:  # with email off, nobody was told anything new
            return before
        alert = self._build_alert(kind, report, entry)
        try:
            mail.send(self.smtp, mail.compose(alert, self.smtp))
        except Exception as exc:
            self._mail_failed(exc, entry.db)
            return before
        log.info("alert email sent kind=%s to=%d", kind, len(self.smtp.recipients),
                 extra={"db": entry.db.path, "stage": "email"})
        return alert_class(entry.result.status)

    def _build_alert(self, kind: str, report: Report, entry: _Told) -> mail.Alert:
        where = entry.replica.describe()
        result = entry.result
        return mail.Alert(
            kind=kind, db=result.db, replica=where, status=result.status,
            headline=self.scrubber.text(headline(result, where)),
            advice=advice(deciding_findings(result)) if kind == PROBLEM else None,
            result=self.scrubber.obj(result.to_json()),
            checked_at=report.started_at, since=_since(kind, entry.previous), environment=self.environment,
        )

    def _mail_failed(self, exc: Exception, db: DbConfig) -> None:
        log.error("alert email not sent: %s", exc, extra={"db": db.path, "stage": "email"})
        if self.sentry:
            from lib.report.sentry import problem_event

            self.sentry.capture(problem_event(
                f"restorable could not send an alert email: {exc}. Check SMTP_URL, ALERT_EMAIL_FROM and "
                "ALERT_EMAIL_TO; the next run will try again.",
                level="error", fingerprint=["restorable", "smtp", self.smtp.describe() if self.smtp else "-"],
                tags={**self.sentry.tags(), "database": db.path, "stage": "email"},
            ))

    @never_raises()
    def _chat_digest(self, report: Report, told: list[_Told]) -> None:
        """One message for every database whose chat state changes; the state advances only if it was sent."""
        if not self.chat:
            return
        changes = [(entry, alert_kind(entry.chat_alerted, entry.result.status)) for entry in told]
        changes = [(entry, kind) for entry, kind in changes if kind]
        if not changes:
            return
        still_bad = sum(1 for e in told if alert_class(e.result.status) == BAD and e.chat_alerted == BAD)
        items = [self._chat_item(kind, entry) for entry, kind in changes]
        digest = chat.compose(items, environment=self.environment, still_bad=still_bad)
        digest = chat.Digest(self.scrubber.text(digest.title), self.scrubber.text(digest.body), digest.notify_type)
        if not chat.send(self.chat, digest):
            log.error("chat alert not delivered to every RESTORABLE_NOTIFY_URLS service; the next run will try "
                      "again", extra={"stage": "chat"})
            return
        log.info("chat alert sent databases=%d", len(items), extra={"stage": "chat"})
        for entry, _ in changes:
            entry.chat_alerted = alert_class(entry.result.status)

    def _chat_item(self, kind: str, entry: _Told) -> chat.ChatItem:
        result, where = entry.result, entry.replica.describe()
        deciding = deciding_findings(result)
        return chat.ChatItem(
            kind=kind, db=result.db, replica=where, status=result.status,
            kinds=tuple(sorted({f.kind for f in deciding})), headline=headline(result, where),
            restore_point=restore_point(result), advice=advice(deciding) if kind == PROBLEM else None,
            since=_since(kind, entry.previous),
        )

    @never_raises()
    def _write_history(self, report: Report, entry: _Told) -> None:
        db, replica, result = entry.db, entry.replica, entry.result
        location = self.history_location(db, replica)
        if location is None:
            return
        checked_at = report.started_at or datetime.now(timezone.utc)
        latest = history.build_latest(entry.previous, db, replica, result, checked_at, entry.alerted, self.job)
        if self.chat or CHAT_STATE in (entry.previous or {}):
            latest[CHAT_STATE] = entry.chat_alerted
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


def _since(kind: str, previous: dict[str, Any] | None) -> str | None:
    """When the problem began: for a recovery, and for a problem that was already bad before."""
    if kind == RECOVERY:
        return (previous or {}).get("status_since")
    if previous and alert_class(previous.get("status", "ok")) == BAD:
        return previous.get("status_since")
    return None


def _worker_site(environ: Mapping[str, str]) -> str:
    folder = (environ.get(WORKER_OUTPUT_VAR) or "").strip()
    return f"{folder.rstrip('/')}/site" if folder else ""


def run_summary(report: Report, job: str) -> str:
    """The ping body: the verdict and exit code, then one line per replica and run finding."""
    counts: dict[str, int] = {}
    for result in report.results:
        counts[result.status] = counts.get(result.status, 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing verified"
    lines = [f"restorable {job}: {report.status} (exit {report.exit_code()}); {tally}"]
    lines += [f"{r.status.upper()}: {headline(r, r.replica)}" for r in report.results]
    lines += [f"{f.severity}: [{f.kind}] {f.message}" for f in report.run_findings]
    return "\n".join(lines)
