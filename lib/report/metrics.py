"""Prometheus metrics of a run, with ``prometheus-client``.

* ``RESTORABLE_METRICS_FILE``: a node-exporter textfile (name it ``*.prom``), written
  atomically (a temporary file in the same folder, then a rename) at the end of each run.
* ``RESTORABLE_PUSHGATEWAY_URL``: pushed (``PUT``, job ``restorable``) at the end of each
  run; cron services live too briefly to be scraped. ``user:password@`` in the URL is
  sent as basic auth, never as part of the address.
* ``jobs.schedule`` serves the newest run's metrics on ``$PORT/metrics`` (``lib.report.serve``).

Per (db, replica) gauges describe the newest run; ``restorable_runs_total{outcome}``
counts runs and, since each run is a new process, is carried forward from the previous
textfile (or the Pushgateway's copy). Label values are database paths, replica names,
statuses and finding kinds: never a URL, never a secret.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from lib.report.endpoints import METRICS_FILE_VAR, PUSHGATEWAY_VAR, WORKER_OUTPUT_VAR
from lib.report.advice import NEXT_STEPS
from lib.report.model import FAILED, INCONCLUSIVE, OK, WARN, Report

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

PUSH_JOB = "restorable"

PUSH_TIMEOUT_SECONDS = 10.0

ABORTED = "aborted"

STATUSES = (OK, WARN, INCONCLUSIVE, FAILED)

# Every kind is exposed (0 when absent) so an alert rule can tell "none" from "no data".
KINDS = (*NEXT_STEPS, "internal", "history")

RUNS = "restorable_runs"

LAST_SUCCESS = "restorable_last_success_timestamp_seconds"

WORKER_FILE = "metrics.prom"


@dataclass(frozen=True)
class MetricsSettings:
    textfiles: tuple[Path, ...] = ()
    pushgateway: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "MetricsSettings | None":
        files = [Path(environ[name].strip()) for name in (METRICS_FILE_VAR,) if (environ.get(name) or "").strip()]
        if (environ.get(WORKER_OUTPUT_VAR) or "").strip():
            files.append(Path(environ[WORKER_OUTPUT_VAR].strip()) / WORKER_FILE)
        gateway = (environ.get(PUSHGATEWAY_VAR) or "").strip() or None
        if gateway and urlsplit(gateway).scheme not in ("http", "https"):
            from lib.errors import ConfigError

            raise ConfigError(f"{PUSHGATEWAY_VAR} must be an http:// or https:// URL, e.g. http://pushgateway:9091")
        return cls(tuple(files), gateway) if files or gateway else None

# --------------------------------------------------------------------------- building


def _prometheus():
    """prometheus_client, imported on first use (runs without metrics never load it)."""
    import prometheus_client  # deferred: only runs with metrics configured need it

    prometheus_client.disable_created_metrics()  # a run-scoped process: *_created would only mislead
    return prometheus_client


def parse_previous(text: str | None) -> dict[str, Any]:
    """The metric families of a previous exposition, by name; {} when none or unreadable."""
    if not text:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return {family.name: family for family in text_string_to_metric_families(text)}
    except Exception:  # a damaged file restarts the counters; the run's own numbers are still right
        log.warning("previous metrics could not be parsed; counters start again", extra={"stage": "metrics"})
        return {}


def _samples(previous: Mapping[str, Any], name: str) -> list:
    return list(previous[name].samples) if name in previous else []


def previous_runs(previous: Mapping[str, Any]) -> dict[str, float]:
    return {s.labels.get("outcome", ""): s.value for s in _samples(previous, RUNS) if s.name == RUNS + "_total"}


def previous_successes(previous: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    return {(s.labels.get("db", ""), s.labels.get("replica", "")): s.value for s in _samples(previous, LAST_SUCCESS)}


class _Carried:
    """A collector re-exposing families of the previous exposition unchanged."""

    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return list(self.families)


def build_registry(report: Report | None, previous: Mapping[str, Any], *, outcome: str | None = None,
                   scrub: Callable[[str], str] = str) -> "CollectorRegistry":
    """The registry to expose for this run. ``report`` None is a run aborted before its
    report: the counter counts it and the previous run's gauges are kept as they were."""
    prom = _prometheus()
    registry = prom.CollectorRegistry()
    runs = prom.Counter(RUNS, "Verification runs by outcome (ok, warning, inconclusive, failed, aborted)",
                        ["outcome"], registry=registry)
    for name, value in previous_runs(previous).items():
        runs.labels(name).inc(value)
    runs.labels(outcome or (report.status if report else ABORTED)).inc()
    if report is not None:
        _run_gauges(prom, registry, report, previous_successes(previous), scrub)
    else:
        registry.register(_Carried([family for name, family in previous.items() if name != RUNS]))
    return registry


def _run_gauges(prom, registry, report: Report, successes: dict[tuple[str, str], float],
                scrub: Callable[[str], str]) -> None:
    labels = ["db", "replica"]

    def gauge(name: str, doc: str, extra: Iterable[str] = ()):
        return prom.Gauge(name, doc, labels + list(extra), registry=registry)

    started = report.started_at.timestamp()
    finished = (report.finished_at or datetime.now(timezone.utc))
    last_run = gauge("restorable_last_run_timestamp_seconds", "When the newest verification started (Unix time)")
    status = gauge("restorable_last_run_status", "1 for the newest verification's status, 0 for the others",
                   ["status"])
    success = gauge("restorable_last_run_success", "1 when the newest verification passed (ok or warning)")
    last_ok = gauge(LAST_SUCCESS, "When a verification last passed (Unix time)")
    age = gauge("restorable_backup_age_seconds", "Age of the newest backup at the end of the run")
    restore = gauge("restorable_restore_seconds", "Time the restore took")
    restored = gauge("restorable_restored_bytes", "Size of the restored database")
    bucket = gauge("restorable_bucket_bytes", "Bytes the replica holds in the bucket")
    cost = gauge("restorable_monthly_cost_usd", "Estimated monthly storage cost of the replica (USD)")
    findings = gauge("restorable_findings", "Findings of the newest verification by kind", ["kind"])
    for result in report.results:
        key = (scrub(result.db), scrub(result.replica))
        last_run.labels(*key).set(started)
        for name in STATUSES:
            status.labels(*key, name).set(1 if result.status == name else 0)
        passed = result.status in (OK, WARN)
        success.labels(*key).set(1 if passed else 0)
        if passed or key in successes:
            last_ok.labels(*key).set(started if passed else successes[key])
        if result.last_backup_at is not None:
            age.labels(*key).set(max(0.0, (finished - result.last_backup_at).total_seconds()))
        if "restore" in result.timings:
            restore.labels(*key).set(result.timings["restore"])
        if result.restored is not None:
            restored.labels(*key).set(result.restored.bytes)
        if isinstance(result.extra.get("replica_bytes"), (int, float)):
            bucket.labels(*key).set(result.extra["replica_bytes"])
        if isinstance(result.extra.get("monthly_cost_usd"), (int, float)):
            cost.labels(*key).set(result.extra["monthly_cost_usd"])
        for kind in sorted(set(KINDS) | {f.kind for f in result.findings}):
            findings.labels(*key, kind).set(sum(1 for f in result.findings if f.kind == kind))
    prom.Gauge("restorable_last_run_duration_seconds", "Wall time of the newest run", registry=registry).set(
        max(0.0, (finished - report.started_at).total_seconds()))
    prom.Gauge("restorable_last_run_exit_code", "Exit code of the newest run", registry=registry).set(
        report.exit_code())

# --------------------------------------------------------------------------- writing


def write_textfile(path: Path, report: Report | None, scrub: Callable[[str], str] = str) -> None:
    """Write ``path`` atomically, carrying the run counter forward from its previous content."""
    try:
        previous_text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        previous_text = None
    registry = build_registry(report, parse_previous(previous_text), scrub=scrub)
    path.parent.mkdir(parents=True, exist_ok=True)
    _prometheus().write_to_textfile(str(path), registry)
    log.info("metrics written file=%s", path, extra={"stage": "metrics"})


def split_gateway(url: str) -> tuple[str, str | None, str | None]:
    """``(address without credentials, user, password)``."""
    from urllib.parse import unquote

    parts = urlsplit(url)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else parts.netloc
    address = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return address, user, password


def push(url: str, report: Report | None, group: str, scrub: Callable[[str], str] = str) -> None:
    """Push this run's registry to the Pushgateway at ``url`` (job ``restorable``, ``group`` label)."""
    prom = _prometheus()
    from prometheus_client.exposition import basic_auth_handler, default_handler

    address, user, password = split_gateway(url)

    def handler(url, method, timeout, headers, data):
        if user is not None:
            return basic_auth_handler(url, method, timeout, headers, data, user, password or "")
        return default_handler(url, method, timeout, headers, data)

    previous = parse_previous(_gateway_text(address, user, password, group))
    registry = build_registry(report, previous, scrub=scrub)
    prom.push_to_gateway(address, job=PUSH_JOB, registry=registry, grouping_key={"group": group},
                         timeout=PUSH_TIMEOUT_SECONDS, handler=handler)
    log.info("metrics pushed to the Pushgateway", extra={"stage": "metrics"})


def _gateway_text(address: str, user: str | None, password: str | None, group: str) -> str | None:
    """Our group's samples as the Pushgateway holds them (to carry the counter), or None."""
    import base64
    import urllib.request

    request = urllib.request.Request(address + "/metrics")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=PUSH_TIMEOUT_SECONDS) as response:
            text = response.read().decode("utf-8", "replace")
    except Exception:
        return None
    wanted = (f'job="{PUSH_JOB}"', f'group="{group}"')
    return "\n".join(line for line in text.splitlines()
                     if line.startswith("#") or all(w in line for w in wanted)) + "\n"


def emit(settings: MetricsSettings, report: Report | None, group: str,
         scrub: Callable[[str], str] = str) -> list[str]:
    """Every configured destination; returns the problems (each already logged), never raises.

    :param scrub: applied to every label value and problem text (``Scrubber.text``).
    """
    problems = []
    for path in settings.textfiles:
        try:
            write_textfile(path, report, scrub)
        except Exception as exc:
            problems.append(scrub(f"{METRICS_FILE_VAR}: {type(exc).__name__}: {exc}"))
    if settings.pushgateway:
        try:
            push(settings.pushgateway, report, group, scrub)
        except Exception as exc:
            problems.append(scrub(f"{PUSHGATEWAY_VAR}: {type(exc).__name__}: {exc}"))
    for problem in problems:
        log.warning("metrics not delivered (%s); the verdict is unchanged", problem, extra={"stage": "metrics"})
    return problems
