"""The effective configuration as --print-config shows it: every value with its origin, secrets masked."""
from __future__ import annotations

from typing import Any

from lib.config.settings_model import _DURATIONS, DbSettings, Settings, _shown
from lib.config.settings_values import _READERS
from lib.config.sources import CONFIG_VAR, REPLICAS_VAR
from lib.units import format_duration

# --------------------------------------------------------------------- --print-config


def effective_config(config: Any, settings: Settings) -> dict[str, Any]:
    """What a run would use, as JSON-able data with secrets masked and every value's source.

    :param config: a ``lib.config.model.Config``; each replica gets the max-age that applies to it.
    """
    dbs = []
    for db in config.dbs:
        db_settings = settings.for_db(db.path)
        replicas = []
        for replica in db.replicas:
            fields = replica.effective()
            max_age = db_settings.effective_max_age(replica.sync_interval_seconds)
            origin = db_settings.origin("max_age_seconds")
            if db_settings.max_age_seconds is None:
                origin = "derived: max(60 x sync-interval, 1h)"
            fields["max-age"] = {"value": format_duration(max_age), "from": origin}
            replicas.append(fields)
        dbs.append({"path": db.path, "replicas": replicas, "settings": settings_shown(db_settings),
                    "litestream_0_5": db.v5.shown(), "warnings": list(db.warnings)})
    return {
        "source": config.source,
        "precedence": ["replica URL arguments", "--config", f"${REPLICAS_VAR}", f"${CONFIG_VAR}",
                       "./litestream.yml", "/etc/litestream.yml"],
        "overridden": list(config.overridden),
        "settings_source": settings.source or "built-in defaults",
        "dbs": dbs,
    }


def settings_shown(settings: DbSettings) -> dict[str, dict[str, Any]]:
    """Every setting as ``{"value": ..., "from": ...}`` in file syntax, for ``--print-config``."""
    out = {}
    for key, (attribute, _) in _READERS.items():
        value = _shown(getattr(settings, attribute), is_duration=attribute in _DURATIONS)
        if attribute == "max_age_seconds" and value is None:
            value = "derived per replica: max(60 x sync-interval, 1h)"
        out[key] = {"value": value, "from": settings.origin(attribute)}
    return out
