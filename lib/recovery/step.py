"""The recovery step of one replica's verification: window and limits, one drill, the vault.

Called by ``lib.verify`` after the newest restore point was restored and checked, while
the restored file still exists. Adds ``recovery``, ``drill`` and ``vault`` to the
database's report (``DbResult.extra``) and their findings; never raises for storage.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from lib.litestream.v3.layout import snapshot_settle_seconds
from lib.recovery import drill as drills
from lib.recovery.objectives import assess
from lib.recovery.window import window_of, with_start_times
from lib.report.model import ERROR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryOptions:
    """What the command line and environment say; restorable.yml fills the rest per database."""

    drill: str | None = None  # --drill; None: the database's `drill:` setting (default rotate)
    drill_seed: int | None = None  # RESTORABLE_DRILL_SEED; None: a new seed per run
    environ: Mapping[str, str] = field(default_factory=dict)  # for the vault's location and keys


def after_checks(db, replica, store, state, result, restored: Path | None, db_settings, options, workdir: Path,
                 previous: dict[str, Any] | None, now: datetime, is_latest: bool) -> None:
    """Recovery window and limits always; on a latest run whose newest point verified, one
    drill and the vault (upload, prune, rotation re-read). The vault keeps the verified newest
    copy even when the drill of an older point fails: that copy passed every check."""
    verified = restored is not None and not any(f.severity == ERROR for f in result.findings)
    state = with_start_times(store, state)
    assess(result, state, db_settings, now, restored)  # a slow restore (restore_time) still verified
    recovery = getattr(options, "recovery", None) or RecoveryOptions(environ=os.environ)  # RQ workers, jobs.retention
    if not is_latest or not verified:
        return
    newest = sum(result.timings.get(k, 0.0) for k in ("restore", "integrity", "counts"))
    _drill(store, state, result, db_settings, replica, recovery, workdir, previous, now,
           options.deadline, newest, options.workers)
    _vault(db, replica, result, restored, db_settings, recovery, workdir, now)


def _drill(store, state, result, db_settings, replica, recovery: RecoveryOptions, workdir: Path, previous, now,
           deadline, newest_seconds: float, workers: int) -> None:
    mode = recovery.drill or getattr(db_settings, "drill", None) or "rotate"
    window = window_of(state)
    last = (previous or {}).get("drills") if isinstance((previous or {}).get("drills"), dict) else {}
    kind = drills.choose_kind(mode, last, drills.available_kinds(state, window))
    if kind is None:
        return
    fits, reason = drills.within_budget(deadline, newest_seconds)
    if not fits:
        result.extra["drill"] = {"kind": kind, "status": "skipped", "note": reason}
        return
    seed = recovery.drill_seed if recovery.drill_seed is not None else drills.default_seed(now)
    point = drills.choose_point(kind, state, window, seed, last, snapshot_settle_seconds(replica.sync_interval_seconds))
    if point is None:
        return
    t0 = time.monotonic()
    record, findings = drills.run_drill(store, state, point, workdir, db_settings, replica, now, workers)
    result.timings["drill"] = time.monotonic() - t0
    result.extra["drill"] = record
    result.findings.extend(findings)


def _vault(db, replica, result, restored: Path, db_settings, recovery: RecoveryOptions, workdir: Path,
           now: datetime) -> None:
    from lib.errors import ConfigError
    from lib.report.model import warning
    from lib.vault.store import VaultSettings, locate

    try:
        settings = VaultSettings.from_environ(recovery.environ, getattr(db_settings, "vault_keep", None))
        if not settings.enabled:
            return
        location = locate(db, settings, recovery.environ)
    except ConfigError as exc:
        result.findings.append(warning("vault", f"vault not used: {exc}"))
        return
    # Deferred: only a run with a vault needs the LZ4 compressor and the upload code.
    from lib.vault.keep import check_one, keep_verified, verified_by

    t0 = time.monotonic()
    kept, findings = keep_verified(location, settings.keep, result, restored, now, verified_by(recovery.environ))
    block: dict[str, Any] = {"keep": kept}
    if replica is db.replicas[0]:  # one rotation re-read per database and run
        block["check"], more = check_one(location, workdir, now)
        findings += more
    result.timings["vault"] = time.monotonic() - t0
    result.extra["vault"] = block
    result.findings.extend(findings)


def recovery_options(drill: str | None, environ: Mapping[str, str]) -> RecoveryOptions:
    """The run's ``RecoveryOptions`` from ``--drill`` and the environment, checked up front so
    a bad ``RESTORABLE_DRILL_SEED`` or ``RESTORABLE_VAULT_*`` is a config error (exit 3).

    :raises ConfigError: names the variable and the expected form.
    """
    from lib.errors import ConfigError
    from lib.vault.store import VaultSettings

    raw = (environ.get("RESTORABLE_DRILL_SEED") or "").strip()
    if raw and not raw.isdigit():
        raise ConfigError(f"RESTORABLE_DRILL_SEED={raw!r} is not a whole number; use the seed a report shows")
    VaultSettings.from_environ(environ)
    return RecoveryOptions(drill=drill, drill_seed=int(raw) if raw else None, environ=dict(environ))
