"""Sentry for one run: the cron check-in, one event per database that needs attention, the flush.

Wraps ``lib.report.sentry.SentryReporter`` (which may raise) so that no call here raises:
a DSN the SDK refuses turns Sentry off for the run with one warning.
"""
from __future__ import annotations

import logging
from typing import Any

from lib.config.model import DbConfig, ReplicaConfig
from lib.report.advice import advice, headline
from lib.report.guard import never_raises
from lib.report.model import OK, DbResult, Report, status_of
from lib.report.scrub import Scrubber
from lib.report.sentry import LEVELS, SentryReporter, SentrySettings, deciding_findings, problem_event, result_event

log = logging.getLogger("lib.report.notify")


class SentryRun:
    """Events and the check-in of one run (see the module docstring)."""

    def __init__(self, settings: SentrySettings, scrubber: Scrubber, job: str):
        self.reporter = SentryReporter(settings, scrubber)
        self.settings = settings
        self.job = job
        self.is_off = False
        self._ready = False
        self._check_in_closed = False

    def tags(self) -> dict[str, str]:
        return dict(self.settings.tags)

    @never_raises()
    def open_check_in(self) -> None:
        if not self._ensure():
            return
        self.reporter.check_in("in_progress")
        log.info("sentry check-in opened monitor=%s", self.settings.monitor_slug, extra={"stage": "sentry"})

    @never_raises()
    def close_check_in(self, status: str) -> None:
        """Close the run's check-in exactly once (a run that never opened one still reports)."""
        if self._check_in_closed or not self._ensure():
            return
        self._check_in_closed = True
        self.reporter.check_in(status)
        log.info("sentry check-in closed status=%s", status, extra={"stage": "sentry"})

    @never_raises()
    def capture_result(self, db: DbConfig, replica: ReplicaConfig, result: DbResult) -> None:
        where = replica.describe()
        if result.status != OK:
            message = headline(result, where)
            step = advice(deciding_findings(result))
            self.capture(result_event(result, replica=where, tags=self.tags(),
                                      message=f"{message}\nWhat to do: {step}" if step else message))

    def capture_run_findings(self, report: Report) -> None:
        """One event for findings not tied to a database (config, interruption), when there are any."""
        status = status_of(report.run_findings)
        if status == OK:
            return
        kinds = sorted({f.kind for f in report.run_findings})
        message = f"restorable {self.job} run: {report.run_findings[0].message}"
        step = advice(report.run_findings)
        self.capture(problem_event(
            f"{message}\nWhat to do: {step}" if step else message, level=LEVELS[status],
            fingerprint=["restorable", "run", *kinds],
            tags={**self.tags(), "kind": ",".join(kinds), "status": status},
            context={"findings": [f.to_json() for f in report.run_findings]},
        ))

    def capture_aborted(self, reason: str) -> None:
        self.capture(problem_event(
            f"restorable {self.job} run aborted: {reason}", level="error",
            fingerprint=["restorable", "aborted", self.job], tags=self.tags(), context={"reason": reason},
        ))

    @never_raises()
    def capture(self, event: dict[str, Any]) -> None:
        if self._ensure():
            self.reporter.capture(event)

    @never_raises()
    def flush(self) -> None:
        if self._ready:
            self.reporter.flush()

    def _ensure(self) -> bool:
        """Initialise sentry-sdk once; a failure (e.g. a malformed DSN) turns Sentry off for the run."""
        if self.is_off:
            return False
        if not self._ready:
            try:
                self.reporter.init()
            except Exception as exc:
                log.warning("Sentry is off for this run: SENTRY_DSN was refused (%s: %s)", type(exc).__name__, exc,
                            extra={"stage": "sentry"})
                self.is_off = True
                return False
            self._ready = True
        return True
