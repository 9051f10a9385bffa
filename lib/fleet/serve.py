"""``jobs.worker`` on ``$PORT``: ``/healthz`` (Redis answers), ``/metrics`` (jobs by outcome), the page.

The same server as ``jobs.schedule`` (``lib.report.serve``). The status page is served (behind
``RESTORABLE_STATUS_AUTH``) from ``RESTORABLE_STATUS_SITE`` when that is a folder on this
machine: the run that waits for the jobs (``jobs.verify --enqueue --wait``) or
``python -m jobs.report --html`` writes it there from the history.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

from lib.report.endpoints import STATUS_SITE_VAR
from lib.report.serve import OutputServer, ServeSettings


class WorkerEndpoints:
    """Serves a running RQ worker's health and counters while ``$PORT`` is set."""

    def __init__(self, settings: ServeSettings, worker, site_dir: Path | None = None):
        import prometheus_client as prom  # deferred: only a worker serving $PORT needs it

        self.worker = worker
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        jobs = prom.Gauge("restorable_worker_jobs", "Jobs this worker finished, by outcome", ["outcome"],
                          registry=self.registry)
        # the counts live in Redis: RQ's work horse (a child process) updates them there
        jobs.labels("succeeded").set_function(lambda: self._counts()[0])
        jobs.labels("failed").set_function(lambda: self._counts()[1])
        self._dir = Path(tempfile.mkdtemp(prefix="restorable-worker-http-"))
        self.server = OutputServer(settings, self._dir, health=self.health, own_metrics=self.exposition,
                                   metrics_file=self._dir / "metrics.prom", site_dir=site_dir)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], worker) -> "WorkerEndpoints | None":
        """None without ``$PORT``; a bad ``$PORT`` is a ``ConfigError``."""
        settings = ServeSettings.from_environ(environ)
        site = (environ.get(STATUS_SITE_VAR) or "").strip()
        site_dir = Path(site.removeprefix("file://")) if site and "://" not in site.removeprefix("file://") else None
        return cls(settings, worker, site_dir) if settings else None

    def health(self) -> tuple[bool, dict]:
        """Healthy while Redis answers a PING (a worker that cannot reach its queue does nothing)."""
        try:
            reachable = bool(self.worker.connection.ping())
        except Exception:  # redis-py raises its own ConnectionError/TimeoutError types
            reachable = False
        return reachable, {"status": "ok" if reachable else "redis unreachable", "worker": self.worker.name}

    def _counts(self) -> tuple[int, int]:
        try:
            self.worker.refresh()
        except Exception:  # Redis down: /healthz says so; show the last counts known
            pass
        return self.worker.successful_job_count, self.worker.failed_job_count

    def exposition(self) -> bytes:
        return self._prom.generate_latest(self.registry)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        for leftover in self._dir.iterdir():
            leftover.unlink()
        self._dir.rmdir()
