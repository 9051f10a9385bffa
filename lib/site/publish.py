"""Where the status site goes: a folder, or a prefix in a bucket (``RESTORABLE_STATUS_SITE``).

A destination with a ``scheme://`` other than ``file://`` is read like a replica URL
(``s3://bucket/prefix``, endpoint and credentials from the same environment variables as
the replicas); anything else is a local folder. Files are replaced one by one, each
atomically (a folder gets a temporary file and a rename), ``index.html`` last so a
reader never follows it to a missing badge.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

from lib.errors import ConfigError

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json",
                 ".svg": "image/svg+xml"}


def _ordered(files: Mapping[str, bytes]) -> list[str]:
    return sorted(files, key=lambda name: (name == "index.html", name))


def publish(destination: str, files: Mapping[str, bytes], environ: Mapping[str, str]) -> str:
    """Write ``files`` to ``destination``; returns a description of where (no secrets).

    Raises ``ConfigError`` for a destination that can't be used, ``StorageError`` for a
    bucket that refuses the writes.
    """
    destination = destination.strip()
    if "://" in destination and not destination.startswith("file://"):
        return _publish_bucket(destination, files, environ)
    folder = Path(destination.removeprefix("file://"))
    try:
        write_folder(folder, files)
    except OSError as exc:
        raise ConfigError(f"cannot write the status site to {folder}: {exc.strerror or exc}; "
                          "choose a writable folder (RESTORABLE_STATUS_SITE or --html)") from exc
    return str(folder)


def write_folder(folder: Path, files: Mapping[str, bytes]) -> None:
    for name in _ordered(files):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(files[name])
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _publish_bucket(url: str, files: Mapping[str, bytes], environ: Mapping[str, str]) -> str:
    from lib.config.sources import config_from_urls

    replica = config_from_urls([url], environ).dbs[0].replicas[0]
    store = replica.open_store()
    prefix = "" if replica.type == "file" or replica.path.strip("/") in ("", ".") else replica.path.strip("/") + "/"
    for name in _ordered(files):
        store.put(prefix + name, files[name], CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"))
    return replica.describe()
