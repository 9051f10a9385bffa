"""The storage seam: list by prefix, stream an object, put, delete many.

Two implementations share one contract:

* ``S3Store`` talks to any S3-compatible endpoint through boto3.
* ``LocalStore`` serves a ``type: file`` replica from a directory.

Contract (both):

* ``list(prefix)`` returns every object whose key starts with ``prefix``, sorted by key,
  across all pages. Keys are the store's own: for S3 the full object key, for a local
  store the path relative to its root with ``/`` separators.
* ``open(key)`` returns a streaming binary reader; a missing key raises
  ``ObjectNotFound`` (a listing raced by Litestream's retention), any transport failure
  raises ``StorageUnavailable``. Reading never buffers a whole object.
* ``delete(keys)`` is idempotent (deleting a missing key succeeds) and returns the
  per-key failures instead of raising, so the caller can report each one.
* Nothing above this module imports botocore; errors leave as ``lib.errors`` types whose
  messages never contain credentials.
"""
from __future__ import annotations

import io
import logging
import os
import stat
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterable, Protocol, Sequence

from lib.errors import ObjectNotFound, StorageUnavailable

log = logging.getLogger(__name__)

# S3 DeleteObjects accepts at most 1,000 keys per request (AWS S3 API reference, DeleteObjects).
DELETE_BATCH_LIMIT = 1000


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as a listing reports it."""

    key: str
    size: int
    last_modified: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class DeleteFailure:
    key: str
    error: str


class ObjectStore(Protocol):
    """What the rest of restorable needs from a bucket or a directory."""

    description: str  # e.g. "s3://bucket (endpoint https://...)"; never holds a secret

    def list(self, prefix: str) -> list[ObjectInfo]: ...

    def open(self, key: str) -> BinaryIO: ...

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None: ...

    def delete(self, keys: Sequence[str]) -> list[DeleteFailure]: ...

    def server_now(self) -> datetime | None:
        """The store's clock as of its last response, if it told us; else None."""
        ...


def read_all(store: ObjectStore, key: str) -> bytes:
    """Read a (small) object whole; for history documents and tests, not for backups."""
    with store.open(key) as reader:
        return reader.read()


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


# --------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to reach one bucket. Secrets are excluded from repr."""

    bucket: str
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None  # AWS_SESSION_TOKEN of temporary credentials
    force_path_style: bool | None = None
    skip_verify: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    max_pool_connections: int = 16

    def __repr__(self) -> str:  # never print the secret key
        return f"S3Settings(bucket={self.bucket!r}, endpoint={self.endpoint!r}, region={self.region!r})"


# One boto3 session for the process: a new session re-reads botocore's S3 model and
# endpoint rules (~0.1-0.3 s of CPU each time); clients are thread-safe and are shared
# between stores with the same settings (bucket aside).
_SESSION = None
_CLIENTS: dict = {}
_CLIENTS_LOCK = threading.Lock()


def make_s3_client(settings: S3Settings):
    """Build a boto3 S3 client that works with AWS and S3-compatible providers.

    Custom endpoints get path-style addressing unless told otherwise (Litestream's rule),
    and request/response checksums only "when required": several providers (B2, R2,
    Tigris, OVH) reject the checksum headers boto3 >= 1.36 adds by default.
    """
    key = replace(settings, bucket="")
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = _new_s3_client(settings)
    return client


def _new_s3_client(settings: S3Settings):
    import boto3
    from botocore.config import Config as BotoConfig

    path_style = settings.force_path_style
    if path_style is None:
        path_style = bool(settings.endpoint)
    region = settings.region or ("us-east-1" if settings.endpoint else None)
    cfg = BotoConfig(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": "path" if path_style else "virtual"},
        # botocore's client-config "max_attempts" counts retries only (one more request in
        # all); "total_max_attempts" counts the first try too, as our field's name says.
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.max_pool_connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="restorable",
    )
    global _SESSION
    if _SESSION is None:
        _SESSION = boto3.session.Session()
    endpoint = settings.endpoint
    if endpoint and "://" not in endpoint:
        endpoint = "https://" + endpoint
    verify = False if settings.skip_verify else None
    return _SESSION.client("s3", endpoint_url=endpoint, config=cfg, verify=verify,
                           aws_access_key_id=settings.access_key_id or None,
                           aws_secret_access_key=settings.secret_access_key or None,
                           aws_session_token=settings.session_token or None)


_READ_ALL_CHUNK = 1 << 20


class _S3Reader(io.RawIOBase):
    """A streaming object body whose transport errors surface as StorageUnavailable."""

    def __init__(self, body, key: str, translate):
        self._body = body
        self._key = key
        self._translate = translate

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except Exception as exc:  # botocore/urllib3 errors while streaming
            raise self._translate(exc, f"read {self._key}") from exc

    def readall(self) -> bytes:
        """The rest of the body in 1 MiB reads (``RawIOBase.readall`` loops over 8 KiB ones,
        twice the CPU per WAL segment). Sized reads keep botocore's short-body check
        (IncompleteReadError), which a single unsized read reports less clearly."""
        chunks = []
        while chunk := self.read(_READ_ALL_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


class S3Store:
    """A bucket on an S3-compatible endpoint."""

    def __init__(self, settings: S3Settings, client=None):
        self.settings = settings
        self.bucket = settings.bucket
        self.client = client if client is not None else make_s3_client(settings)
        where = settings.endpoint or "AWS"
        self.description = f"s3://{settings.bucket} (endpoint {where})"
        self._server_date: datetime | None = None

    # -- error translation: the only place that knows botocore's exceptions
    def _translate(self, exc: Exception, action: str) -> Exception:
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectNotFound(action.split(" ", 1)[-1])
            if code == "NoSuchBucket":
                return StorageUnavailable(
                    f"{action}: bucket {self.bucket!r} does not exist at {self.description}; "
                    "check BUCKET_NAME / the replica's bucket"
                )
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden",
                        "InvalidToken", "ExpiredToken"):
                return StorageUnavailable(
                    f"{action}: credentials refused by {self.description} ({code}); "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
                )
            if code in ("AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException"):
                return StorageUnavailable(
                    f"{action}: region mismatch at {self.description} ({code}); set the replica's region "
                    "or AWS_DEFAULT_REGION"
                )
            return StorageUnavailable(f"{action}: {self.description} answered {code or status}")
        if isinstance(exc, NoCredentialsError):
            return StorageUnavailable(
                f"{action}: no credentials for {self.description}; set access-key-id/secret-access-key "
                "in the replica or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            )
        kind = type(exc).__name__
        return StorageUnavailable(f"{action}: {self.description} unreachable ({kind})")

    def _note_date(self, response: dict) -> None:
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if date:
            try:
                self._server_date = parsedate_to_datetime(date).astimezone(timezone.utc)
            except (TypeError, ValueError):
                pass

    def list(self, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        kwargs = {"Bucket": self.bucket, "Prefix": prefix}
        try:
            while True:
                resp = self.client.list_objects_v2(**kwargs)
                self._note_date(resp)
                for item in resp.get("Contents", []):
                    modified = item["LastModified"].astimezone(timezone.utc)
                    found.append(ObjectInfo(item["Key"], int(item["Size"]), modified))
                if not resp.get("IsTruncated"):
                    break
                kwargs["ContinuationToken"] = resp["NextContinuationToken"]
        except Exception as exc:
            raise self._translate(exc, f"list {prefix or '/'}") from exc
        found.sort(key=lambda o: o.key)
        return found

    def open(self, key: str) -> BinaryIO:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._translate(exc, f"get {key}") from exc
        self._note_date(resp)
        return io.BufferedReader(_S3Reader(resp["Body"], key, self._translate), buffer_size=1 << 20)

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except Exception as exc:
            raise self._translate(exc, f"put {key}") from exc

    def delete(self, keys: Sequence[str]) -> list[DeleteFailure]:
        failures: list[DeleteFailure] = []
        for batch in _batches(list(keys), DELETE_BATCH_LIMIT):
            try:
                resp = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            except Exception as exc:
                error = str(self._translate(exc, "delete"))
                failures.extend(DeleteFailure(k, error) for k in batch)
                continue
            for err in resp.get("Errors", []):
                failures.append(DeleteFailure(err.get("Key", "?"), f"{err.get('Code')}: {err.get('Message', '')}"))
        return failures

    def server_now(self) -> datetime | None:
        return self._server_date


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
