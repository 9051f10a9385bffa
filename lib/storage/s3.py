"""S3-compatible buckets through boto3: the client factory, streaming reads, listing, put and batched deletes."""
from __future__ import annotations

import io
import threading
from dataclasses import replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import BinaryIO, Iterable, Sequence

import boto3.session
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.utils import parse_timestamp

from lib.errors import ObjectNotFound, StorageUnavailable
from lib.storage.base import DELETE_BATCH_LIMIT, DeleteFailure, ObjectInfo, empty_range
from lib.storage.s3_settings import S3Settings

__all__ = ["S3Settings", "S3Store", "make_s3_client"]  # S3Settings re-exported: it lives in s3_settings (no boto3)

# One boto3 session for the process: a new session re-reads botocore's S3 model and
# endpoint rules (~0.1-0.3 s of CPU each time); clients are thread-safe and are shared
# between stores with the same settings (bucket aside).
_SESSION = None

_CLIENTS: dict[S3Settings, object] = {}  # boto3 clients by settings (bucket blanked)

_CLIENTS_LOCK = threading.Lock()

# S3 ListObjectsV2 returns at most 1,000 keys per request (AWS S3 API reference, MaxKeys).
LIST_PAGE_SIZE = 1000


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
        _SESSION = _new_session()
    endpoint = settings.endpoint
    if endpoint and "://" not in endpoint:
        endpoint = "https://" + endpoint
    verify = False if settings.skip_verify else None
    return _SESSION.client("s3", endpoint_url=endpoint, config=cfg, verify=verify,
                           aws_access_key_id=settings.access_key_id or None,
                           aws_secret_access_key=settings.secret_access_key or None,
                           aws_session_token=settings.session_token or None)


def warm_up() -> None:
    """Load botocore's S3 model and endpoint rules into this process's session now.

    For a process that forks workers (``jobs.worker``): each child's first client then
    costs ~0.015 s of CPU instead of ~0.16 s. The client built for it is dropped unused:
    no request is made, so no socket or connection pool outlives this call.
    """
    _new_s3_client(S3Settings(bucket="", endpoint="http://127.0.0.1:1", region="us-east-1",
                              access_key_id="warm-up", secret_access_key="warm-up"))


def _new_session() -> boto3.session.Session:
    """boto3's session over a botocore session whose responses parse S3's timestamps with the
    standard library (:func:`parse_s3_timestamp`)."""
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_s3_timestamp)
    return boto3.session.Session(botocore_session=core)


def parse_s3_timestamp(value) -> datetime:
    """A response timestamp as a UTC datetime, as botocore's own parser gives it.

    S3 sends two forms: ISO 8601 in XML bodies (a listing's ``LastModified``) and the HTTP
    date in headers (every GET's ``Last-Modified``). botocore hands both to dateutil's
    general parser, 30-40 us each, once per GET and once per listed object; the standard
    library reads them in 0.1-2.5 us. Anything else goes to botocore's parser.
    """
    if isinstance(value, str):
        try:
            if value.endswith("Z") and "T" in value:
                return datetime.fromisoformat(value)
            if value.endswith(" GMT"):
                return parsedate_to_datetime(value)
        except (TypeError, ValueError):
            pass
    return parse_timestamp(value)


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

    list_page_size = LIST_PAGE_SIZE

    def __init__(self, settings: S3Settings, client=None):
        self.settings = settings
        self.bucket = settings.bucket
        self.client = client if client is not None else make_s3_client(settings)
        where = settings.endpoint or "AWS"
        self.description = f"s3://{settings.bucket} (endpoint {where})"
        self._server_date: datetime | None = None
        self._sse = ({"SSECustomerAlgorithm": settings.sse_customer_algorithm or "AES256",
                      "SSECustomerKey": settings.sse_customer_key} if settings.sse_customer_key else {})

    @property
    def sse_params(self) -> dict[str, str]:
        """The SSE-C arguments every request for an object of this store must carry ({} without a key).

        Writes that bypass :meth:`put` (multipart uploads) pass them too, so everything
        restorable stores beside an SSE-C replica can be read back with the same key.
        """
        return dict(self._sse)

    # -- error translation: the only place that knows botocore's exceptions
    def _translate(self, exc: Exception, action: str) -> Exception:
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectNotFound(action.split(" ", 1)[-1])
            if code == "InvalidRequest" and "Server Side Encryption" in str(err.get("Message", "")):
                return StorageUnavailable(
                    f"{action}: the object is encrypted with a customer key (SSE-C) at {self.description}; set "
                    "the replica's sse-customer-key or sse-customer-key-path"
                )
            if code == "InvalidObjectState":
                return StorageUnavailable(
                    f"{action}: the object is in an archive storage class (Glacier / Deep Archive) at "
                    f"{self.description}: S3 serves it only after a restore request"
                )
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

    def list(self, prefix: str, start_after: str | None = None, stop_after: str | None = None,
             limit: int | None = None) -> list[ObjectInfo]:
        """See ``ObjectStore.list``: ``StartAfter`` opens the range on the server; paging stops
        at the first key past ``stop_after`` (dropped) or once ``limit`` objects are in."""
        if empty_range(start_after, stop_after) or limit == 0:
            return []
        found: list[ObjectInfo] = []
        kwargs = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after is not None:
            kwargs["StartAfter"] = start_after
        try:
            while True:
                if limit is not None:
                    kwargs["MaxKeys"] = min(LIST_PAGE_SIZE, limit - len(found))
                resp = self.client.list_objects_v2(**kwargs)
                self._note_date(resp)
                if not self._take(resp.get("Contents", []), start_after, stop_after, found) \
                        or not resp.get("IsTruncated"):
                    break
                if limit is not None and len(found) >= limit:
                    break
                kwargs["ContinuationToken"] = resp["NextContinuationToken"]
        except Exception as exc:
            raise self._translate(exc, f"list {prefix or '/'}") from exc
        found.sort(key=lambda o: o.key)
        return found if limit is None else found[:limit]

    @staticmethod
    def _take(contents: list[dict], start_after: str | None, stop_after: str | None,
              found: list[ObjectInfo]) -> bool:
        """Append one page's objects up to ``stop_after``; False once a key past it was seen.

        Keys up to ``start_after`` are dropped too: a server that ignored ``StartAfter``
        then costs more requests, never a key twice."""
        for item in contents:
            if stop_after is not None and item["Key"] > stop_after:
                return False
            if start_after is not None and item["Key"] <= start_after:
                continue
            modified = item["LastModified"].astimezone(timezone.utc)
            found.append(ObjectInfo(item["Key"], int(item["Size"]), modified, item.get("StorageClass")))
        return True

    def open(self, key: str) -> BinaryIO:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key, **self._sse)
        except Exception as exc:
            raise self._translate(exc, f"get {key}") from exc
        self._note_date(resp)
        return io.BufferedReader(_S3Reader(resp["Body"], key, self._translate), buffer_size=1 << 20)

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        try:
            # With SSE-C every object restorable writes (history) is encrypted with the same key:
            # S3 refuses a GET that sends SSE-C headers for an object stored without them.
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **self._sse)
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
