"""Which litestream binary may restore a replica of a given layout, and what version it is.

The layout decides: v0.3 replicas need a 0.3.x binary, v0.5 replicas a 0.5.x one (0.5
cannot read v0.3 generations, 0.3 cannot read LTX). Candidates come from
``RESTORABLE_LITESTREAM_BIN`` (one path, or several separated by ``:``), else the
``litestream_bin`` setting, else ``litestream`` on ``PATH``. A candidate of the wrong
series is reported with its version, never used.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Mapping

from lib.litestream.layout import FORMAT_V3, FORMAT_V5

ENV_VAR = "RESTORABLE_LITESTREAM_BIN"

SERIES = {FORMAT_V3: "0.3", FORMAT_V5: "0.5"}

VERSION_TIMEOUT_SECONDS = 15.0

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")

_versions: dict[tuple[str, int, int], str] = {}  # (path, mtime_ns, size) -> version


@dataclass(frozen=True)
class Binary:
    path: str
    version: str  # "0.3.13"


class BinaryUnavailable(Exception):
    """No usable binary: the message names what was found and how to point at the right one."""


def candidates(environ: Mapping[str, str], configured: str | None = None) -> list[str]:
    """Paths to try, in order of precedence (see the module docstring)."""
    raw = environ.get(ENV_VAR) or configured or ""
    paths = [p for p in raw.split(os.pathsep) if p.strip()]
    if paths:
        return paths
    found = shutil.which("litestream", path=environ.get("PATH"))
    return [found] if found else []


def version_of(path: str) -> str:
    """``litestream version`` of ``path`` as ``"X.Y.Z"``; raises ``BinaryUnavailable``."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BinaryUnavailable(f"{path}: {exc.strerror}; fix {ENV_VAR}") from None
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _versions:
        _versions[key] = _ask_version(path)
    return _versions[key]


def _ask_version(path: str) -> str:
    try:
        proc = subprocess.run([path, "version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=VERSION_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BinaryUnavailable(f"cannot run `{path} version` ({type(exc).__name__}): is {ENV_VAR} a litestream "
                                "binary?") from None
    match = _VERSION_RE.search(proc.stdout or "")
    if proc.returncode != 0 or not match:
        raise BinaryUnavailable(f"`{path} version` printed no version (exit {proc.returncode}): is it litestream?")
    return ".".join(match.groups())


def choose(fmt: str, paths: list[str]) -> Binary:
    """The first candidate whose series matches the layout ``fmt``; raises ``BinaryUnavailable``."""
    series = SERIES[fmt]
    if not paths:
        raise BinaryUnavailable(f"no litestream binary found for the cross-check: a {fmt} replica needs litestream "
                                f"{series}.x; set {ENV_VAR} or put litestream on PATH")
    seen = []
    for path in paths:
        version = version_of(path)
        if version.startswith(series + "."):
            return Binary(path, version)
        seen.append(f"{path} is v{version}")
    raise BinaryUnavailable(f"a {fmt} replica needs litestream {series}.x for the cross-check, but "
                            f"{'; '.join(seen)}: set {ENV_VAR} to a {series}.x binary (several paths may be given, "
                            "separated by ':')")
