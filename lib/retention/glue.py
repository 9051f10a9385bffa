"""The retention step of a run: after a replica verified, plan (and, when enabled, enforce) its retention."""
from __future__ import annotations

from datetime import datetime
from typing import Mapping

from lib.errors import StorageError
from lib.litestream.discover import discover
from lib.litestream.layout import FORMAT_V5
from lib.report.history import HistorySettings, locate
from lib.report.history import last_good as read_last_good
from lib.report.model import warning
from lib.retention.enforce import enforce_after_verify, now_for, skipped_unverified
from lib.retention.policy import policy_for
from lib.units import parse_duration


def apply_retention_all(pairs, report, settings, args, environ: Mapping[str, str]) -> None:
    """Plan (and, when enabled, enforce) retention for every replica that verified."""
    override = parse_duration(args.retention, "--retention") if args.retention else None
    for (db, replica), result in zip(pairs, report.results):
        apply_retention(db, replica, result, settings.for_db(db.path), args, override, environ, None)


def apply_retention(db, replica, result, db_settings, args, override: float | None,
                    environ: Mapping[str, str], now: datetime | None) -> None:
    """Plan and (if enabled) enforce retention for one verified replica; findings go into ``result``."""
    if skipped_unverified(result):
        return
    policy = policy_for(replica, db_settings, override, v5=db.v5 if result.format == FORMAT_V5 else None)
    store = replica.open_store()
    try:
        state = discover(store, replica)
    except StorageError as exc:
        result.findings.append(warning("retention", f"retention not planned: listing {replica.describe()} failed "
                                       f"({exc}); nothing was deleted"))
        return
    enforce = bool(args.enforce or getattr(db_settings, "enforce_retention", False))
    result.findings += enforce_after_verify(
        store, replica, state, result, policy, enforce=enforce, dry_run=args.dry_run,
        now=now or now_for(store), verified_good=last_good(db, replica, environ))


def last_good(db, replica, environ: Mapping[str, str]):
    """The last verified-good run from the history, or None when there is none or it can't be read."""
    try:
        settings = HistorySettings.from_environ(environ)
        if not settings.enabled:
            return None
        location = locate(db, replica, settings)
        return read_last_good(location.store, location.prefix)
    except Exception:  # history is an extra safety net; without it the run's own point is still protected
        return None
