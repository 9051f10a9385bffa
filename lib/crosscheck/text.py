"""One line of text for a result's ``cross_check`` section (the JSON shape of ``CrossCheck.to_json``)."""
from __future__ import annotations

from typing import Any

_SAID = {
    "agree": "litestream restore of the same {objects} objects gives the identical database",
    "litestream_damaged": "litestream restore of the same {objects} objects is damaged or fails; restorable's is sound",
    "litestream_loses_rows": "litestream restore of the same {objects} objects loses rows; restorable's is sound",
    "restorable_differs": "restorable's restore differs from litestream restore's sound one (a restorable bug)",
    "both_damaged": "litestream restore of the same {objects} objects is damaged too",
    "differ": "litestream restore of the same {objects} objects differs (restorable stopped at the damage it reports)",
}


def cross_check_line(section: dict[str, Any]) -> str:
    """E.g. ``cross-check (litestream 0.3.13): agree: litestream restore of the same 12 objects ...``."""
    status = section.get("status", "?")
    version = (section.get("litestream") or {}).get("version")
    who = f" (litestream {version})" if version else ""
    if status == "skipped":
        return f"cross-check{who}: skipped: {section.get('reason', '')}"
    said = _SAID.get(status, "").format(objects=section.get("objects", "?"))
    return f"cross-check{who}: {status}: {said}"
