"""``jobs.worker`` on ``$PORT``: ``/healthz`` (Redis answers) and ``/metrics`` (jobs by outcome).

The same server as ``jobs.schedule`` (``lib.report.serve``); RQ workers run no verification of
their own between jobs, so there is no status page to serve here: ``python -m jobs.report`` or
``RESTORABLE_STATUS_SITE`` builds it from the history the jobs write.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

from lib.report.serve import OutputServer, ServeSettings


class WorkerEndpoints:
    """Serves a running RQ worker's health and counters while ``$PORT`` is set."""

    def __init__(self, settings: ServeSettings, worker):
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
                                   metrics_file=self._dir / "metrics.prom")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], worker) -> "WorkerEndpoints | None":
        """None without ``$PORT``; a bad ``$PORT`` is a ``ConfigError``."""
        settings = ServeSettings.from_environ(environ)
        return cls(settings, worker) if settings else None

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
