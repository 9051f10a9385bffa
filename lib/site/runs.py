"""Reading the run history for the status page (through ``lib.report.history``'s layout).

``history.read_latest`` gives the summary; the run documents under ``runs/`` are listed
here and read concurrently, but only as many as the page shows: the newest
``TIMELINE_RUNS`` for the timeline, plus at most ``CHART_POINTS`` spread evenly over the
last ``CHART_DAYS`` days for the charts. Each key's name already carries its time and
status, so the listing alone orders them.
"""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath
from typing import Any

from lib.report.history import HistoryLocation
from lib.storage.base import read_all

TIMELINE_RUNS = 48

CHART_DAYS = 30

CHART_POINTS = 60

READ_THREADS = 8

_RUN_NAME = re.compile(r"^(?P<stamp>\d{8}T\d{6})(?:\.(?P<ms>\d{3}))?Z-(?P<status>[a-z]+)\.json$")


@dataclass(frozen=True)
class RunKey:
    key: str
    at: datetime
    status: str


def parse_run_key(key: str) -> RunKey | None:
    match = _RUN_NAME.match(PurePosixPath(key).name)
    if not match:
        return None
    at = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    return RunKey(key, at + timedelta(milliseconds=int(match["ms"] or 0)), match["status"])


def list_runs(location: HistoryLocation) -> list[RunKey]:
    """Every run document under the location, oldest first."""
    runs = [parse_run_key(info.key) for info in location.store.list(location.runs_prefix)]
    return sorted((r for r in runs if r is not None), key=lambda r: r.at)


def pick(runs: list[RunKey], now: datetime) -> tuple[list[RunKey], list[RunKey]]:
    """``(timeline, chart)`` runs to read: the newest few, and an even sample of the last 30 days."""
    timeline = runs[-TIMELINE_RUNS:]
    recent = [r for r in runs if r.at >= now - timedelta(days=CHART_DAYS)]
    if len(recent) <= CHART_POINTS:
        return timeline, recent
    step = len(recent) / CHART_POINTS
    sample = [recent[int(n * step)] for n in range(CHART_POINTS)]
    if sample[-1] is not recent[-1]:
        sample[-1] = recent[-1]
    return timeline, sample


def read_docs(location: HistoryLocation, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The run documents at ``keys`` that could be read and parsed (others are skipped)."""

    def one(key: str) -> tuple[str, dict[str, Any] | None]:
        try:
            doc = json.loads(read_all(location.store, key))
        except Exception:  # pruned meanwhile, or damaged: the page shows what it can
            return key, None
        return key, doc if isinstance(doc, dict) else None

    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="site-read") as pool:
        return {key: doc for key, doc in pool.map(one, sorted(set(keys))) if doc is not None}
