"""Build the status site from the history: views per pair, then the files to publish.

``build_site(pairs, history_settings, scrubber)`` returns ``{name: bytes}``:
``index.html`` (self-contained: inline CSS and SVG, no script, no CDN, so it works from
``file://`` and from a bucket), ``status.json``, ``badge.svg`` (all databases) and
``badges/<db-slug>.svg`` (one per database). Everything is scrubbed before rendering.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lib.config.model import DbConfig, ReplicaConfig
from lib.report import history
from lib.report.scrub import Scrubber
from lib.site.charts import badge, human, line_chart
from lib.site.runs import list_runs, pick, read_docs
from lib.site.view import CHARTS, KNOWN, UNKNOWN, by_database, pair_view, status_document

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"

UNITS = {"backup_age_seconds": "seconds", "restore_seconds": "seconds", "bucket_bytes": "bytes",
         "monthly_cost_usd": "usd"}


def collect_views(pairs: list[tuple[DbConfig, ReplicaConfig]], settings: history.HistorySettings,
                  now: datetime) -> list[dict[str, Any]]:
    """One view per pair; a pair whose history can't be read is ``unknown`` with the reason."""
    views = []
    for db, replica in pairs:
        try:
            views.append(_pair(db, replica, settings, now))
        except Exception as exc:
            log.warning("history of db=%s replica=%s unreadable for the status page: %s", db.path, replica.name,
                        exc, extra={"stage": "site"})
            views.append(pair_view(db.path, replica.describe(), None, [], [], {}, now,
                                   error=f"{type(exc).__name__}: {exc}"))
    return views


def _pair(db: DbConfig, replica: ReplicaConfig, settings: history.HistorySettings, now: datetime) -> dict[str, Any]:
    location = history.locate(db, replica, settings)
    latest = history.read_latest(location)
    timeline, chart = pick(list_runs(location), now)
    keys = [r.key for r in timeline + chart] + ([latest["report_key"]] if (latest or {}).get("report_key") else [])
    docs = read_docs(location, keys)
    return pair_view(db.path, replica.describe(), latest, timeline, chart, docs, now)


def render(views: list[dict[str, Any]], scrubber: Scrubber, now: datetime) -> dict[str, bytes]:
    """The site's files from the views (pure apart from loading the template)."""
    document = scrubber.obj(status_document(views, now))
    files = {"status.json": (json.dumps(document, indent=2) + "\n").encode(),
             "index.html": _html(document).encode(),
             "badge.svg": badge("backups", document["status"]).encode()}
    for db, status in by_database(document["databases"]).items():
        files[f"badges/{history.slug(db)}.svg"] = badge(Path(db).name or db, status).encode()
    return files


def _html(document: dict[str, Any]) -> str:
    import jinja2  # deferred: only runs that build the page need the template engine
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    databases = []
    for view in document["databases"]:
        charts = [Markup(line_chart(view["series"][name], title, UNITS[name])) for name, title in CHARTS]
        age = view["backup_age_seconds"]
        databases.append({**view, "charts": charts, "backup_age": human(age, "seconds") if age is not None else "?"})
    return env.get_template("index.html").render(
        status=document["status"], generated_at=document["generated_at"], databases=databases,
        statuses=(*KNOWN, UNKNOWN))


def build_site(pairs: list[tuple[DbConfig, ReplicaConfig]], settings: history.HistorySettings,
               scrubber: Scrubber, now: datetime | None = None) -> dict[str, bytes]:
    now = now or datetime.now(timezone.utc)
    return render(collect_views(pairs, settings, now), scrubber, now)
