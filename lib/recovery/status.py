"""The recovery part of ``jobs.status``: the window from the listing, the last drills, the vault entries."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from lib.recovery.objectives import recovery_of
from lib.recovery.window import window_of


def recovery_status(db, state, history_doc: dict | None, environ: Mapping[str, str],
                    db_settings=None, now: datetime | None = None) -> dict[str, Any]:
    """``{"window": ..., "drills": {kind: record}, "vault": ...}`` for one replica (never raises
    for storage; a vault that cannot be listed says so in ``vault.error``)."""
    from lib.errors import RestorableError
    from lib.vault.store import status_of

    now = now or datetime.now(timezone.utc)
    block: dict[str, Any] = {"window": recovery_of(window_of(state), now, None, None) if state else None}
    drills = (history_doc or {}).get("drills")
    block["drills"] = drills if isinstance(drills, dict) else {}
    try:
        block["vault"] = status_of(db, environ, getattr(db_settings, "vault_keep", None))
    except RestorableError as exc:
        block["vault"] = {"location": "", "entries": [], "error": str(exc)}
    return block
