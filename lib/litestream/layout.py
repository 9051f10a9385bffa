"""Facts both Litestream layouts share: the format names and Go's path.Join."""
from __future__ import annotations

import posixpath

FORMAT_V3 = "v0.3"

FORMAT_V5 = "v0.5"


def go_path_join(*parts: str) -> str:
    """Go's ``path.Join``: join non-empty parts with ``/`` and clean the result."""
    joined = "/".join(p for p in parts if p)
    return posixpath.normpath(joined) if joined else ""
