"""A folder as an object store: Litestream's file replicas, and the history beside them."""
from __future__ import annotations

import os
import stat
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Sequence

from lib.errors import ObjectNotFound, StorageUnavailable
from lib.storage.base import DeleteFailure, ObjectInfo

# --------------------------------------------------------------------------- local


class LocalStore:
    """A ``type: file`` replica: objects are files below ``root``.

    Keys are confined to ``root``: a key with ``..``, an absolute path, a NUL byte or a
    symlink that leads outside is refused, so a hostile listing can't make us read or
    delete anything else on the machine.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).absolute()
        self.description = f"file://{self.root}"
        self._last_seen: datetime | None = None

    def _path(self, key: str) -> Path:
        pure = PurePosixPath(key)
        if not key or "\x00" in key or pure.is_absolute() or ".." in pure.parts:
            raise StorageUnavailable(f"refusing unsafe object key {key!r} outside replica root {self.root}")
        path = self.root.joinpath(*pure.parts)
        resolved_root = self.root.resolve()
        if not path.resolve().is_relative_to(resolved_root):
            raise StorageUnavailable(f"refusing object key {key!r}: it leads outside replica root {self.root}")
        return path

    def list(self, prefix: str) -> list[ObjectInfo]:
        if not self.root.exists():
            return []
        if not self.root.is_dir():
            raise StorageUnavailable(f"replica path {self.root} is not a directory")
        found: list[ObjectInfo] = []
        try:
            for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
                rel_dir = Path(dirpath).relative_to(self.root).as_posix()
                rel_dir = "" if rel_dir == "." else rel_dir + "/"
                dirnames.sort()
                for name in filenames:
                    key = rel_dir + name
                    if not key.startswith(prefix):
                        continue
                    try:
                        st = os.lstat(os.path.join(dirpath, name))
                    except FileNotFoundError:  # deleted or renamed by litestream during the walk
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    modified = datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc)
                    found.append(ObjectInfo(key, st.st_size, modified))
        except PermissionError as exc:
            raise StorageUnavailable(f"cannot list replica directory {self.root}: permission denied") from exc
        self._last_seen = datetime.now(timezone.utc)
        found.sort(key=lambda o: o.key)
        return found

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb", buffering=0)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {path}: {exc.strerror}") from exc

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        path = self._path(key)
        try:
            if not self.root.exists():  # create the store root, never missing parents outside it
                self.root.mkdir()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".restorable-tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {path}: {exc.strerror}") from exc

    def delete(self, keys: Sequence[str]) -> list[DeleteFailure]:
        failures = []
        for key in keys:
            try:
                self._path(key).unlink(missing_ok=True)
            except (OSError, StorageUnavailable) as exc:
                failures.append(DeleteFailure(key, getattr(exc, "strerror", None) or str(exc)))
        return failures

    def server_now(self) -> datetime | None:
        return None  # the local clock is the file system's clock
