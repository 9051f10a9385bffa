"""A folder as an object store: Litestream's file replicas, and the history beside them."""
from __future__ import annotations

import os
import stat
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, Sequence

from lib.errors import ObjectNotFound, StorageUnavailable
from lib.storage.base import DeleteFailure, ObjectInfo, select

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

    list_page_size = 0  # a folder is walked whole: listing key ranges apart would walk it again

    def list(self, prefix: str, start_after: str | None = None, stop_after: str | None = None,
             limit: int | None = None) -> list[ObjectInfo]:
        """See ``ObjectStore.list``: the folder is walked whole, then the range selected."""
        if not self.root.exists():
            return []
        if not self.root.is_dir():
            raise StorageUnavailable(f"replica path {self.root} is not a directory")
        try:
            found = list(self._walk(prefix))
        except PermissionError as exc:
            raise StorageUnavailable(f"cannot list replica directory {self.root}: permission denied") from exc
        except OSError as exc:  # not a scratch problem, whatever the errno: the replica could not be listed
            raise StorageUnavailable(f"cannot list replica directory {self.root}: {exc.strerror}") from exc
        self._last_seen = datetime.now(timezone.utc)
        return select(found, start_after, stop_after, limit)

    def _walk(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every regular file below the root whose key starts with ``prefix``.

        Iterative (a stack of folders, not recursion: any depth of nesting lists), never
        following symlinks, and entering only folders that can hold such keys.
        """
        folders = [""]
        while folders:
            rel = folders.pop()
            try:
                entries = list(os.scandir(self.root / rel if rel else self.root))
            except (FileNotFoundError, NotADirectoryError):  # deleted or replaced by litestream during the walk
                continue
            for entry in entries:
                key = rel + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if prefix.startswith(key + "/") or (key + "/").startswith(prefix):
                        folders.append(key + "/")
                elif key.startswith(prefix):
                    info = _file_info(entry, key)
                    if info is not None:
                        yield info

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb", buffering=0)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {path}: {exc.strerror}") from exc

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        """Write the object whole, through a temporary file created exclusively (never through a planted link)."""
        path = self._path(key)
        try:
            if not self.root.exists():  # create the store root, never missing parents outside it
                self.root.mkdir()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".restorable-tmp")
            tmp.unlink(missing_ok=True)  # a link planted there goes, not its target
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)  # umask applies, as before
            with open(fd, "wb") as f:
                f.write(data)
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


def _file_info(entry: os.DirEntry, key: str) -> ObjectInfo | None:
    """The listing entry of a regular file (None for anything else, or a file gone meanwhile)."""
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:  # deleted or renamed by litestream during the walk
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc))
