"""Streaming writes into an object store: LZ4-compressed from a file, multipart above a threshold.

Nothing half-written is ever visible under the final key: S3 gets one ``PutObject`` below
the threshold, else a multipart upload that is completed only after its last part (and
aborted on any error or interruption, so its parts do not linger either); a directory
gets a temporary file that is renamed into place after ``fsync``. Only one part (8 MiB)
is held in memory and no second copy is written to disk.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

import lz4.frame

from lib.errors import StorageUnavailable
from lib.storage.local import LocalStore

log = logging.getLogger(__name__)

# S3 parts must be at least 5 MiB, except the last (AWS S3 API reference, UploadPart);
# 8 MiB is boto3's own multipart_chunksize default.
PART_SIZE = 8 << 20

READ_CHUNK = 1 << 20


class Compressed:
    """The LZ4 frame of a file, as chunks; ``sha256`` and ``bytes`` of the input once consumed."""

    def __init__(self, path: Path):
        self.path = path
        self.bytes = 0
        self.compressed_bytes = 0
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def __iter__(self) -> Iterator[bytes]:
        compressor = lz4.frame.LZ4FrameCompressor(content_checksum=True)
        with open(self.path, "rb") as src:
            yield self._out(compressor.begin())
            while chunk := src.read(READ_CHUNK):
                self._digest.update(chunk)
                self.bytes += len(chunk)
                if out := compressor.compress(chunk):
                    yield self._out(out)
            yield self._out(compressor.flush())

    def _out(self, data: bytes) -> bytes:
        self.compressed_bytes += len(data)
        return data


def _is_s3(store) -> bool:
    """An ``S3Store`` (told by its boto3 client, so that a directory vault never imports boto3)."""
    return hasattr(store, "client") and hasattr(store, "bucket")


def put_stream(store, key: str, chunks: Iterable[bytes], part_size: int = PART_SIZE) -> None:
    """Store the concatenation of ``chunks`` under ``key`` so it appears whole or not at all."""
    if _is_s3(store):
        _put_s3(store, key, chunks, part_size)
    elif isinstance(store, LocalStore):
        _put_local(store, key, chunks)
    else:  # another store: small objects only
        store.put(key, b"".join(chunks), content_type="application/octet-stream")


def _parts(chunks: Iterable[bytes], part_size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= part_size:
            yield bytes(buffer[:part_size])
            del buffer[:part_size]
    if buffer:
        yield bytes(buffer)


def _put_s3(store, key: str, chunks: Iterable[bytes], part_size: int) -> None:
    parts = _parts(chunks, part_size)
    first = next(parts, b"")
    second = next(parts, None)
    if second is None:
        try:
            store.client.put_object(Bucket=store.bucket, Key=key, Body=first, ContentType="application/octet-stream",
                                    **store.sse_params)
        except Exception as exc:
            raise store._translate(exc, f"put {key}") from exc
        return
    upload = _Multipart(store, key)
    try:
        for data in (first, second):
            upload.add(data)
        for data in parts:
            upload.add(data)
        upload.complete()
    except BaseException:  # errors and interruptions alike: no part may linger
        upload.abort()
        raise


class _Multipart:
    def __init__(self, store, key: str):
        self.store, self.key = store, key
        self.done: list[dict] = []
        try:
            resp = store.client.create_multipart_upload(Bucket=store.bucket, Key=key,
                                                        ContentType="application/octet-stream", **store.sse_params)
        except Exception as exc:
            raise store._translate(exc, f"start upload {key}") from exc
        self.upload_id = resp["UploadId"]

    def add(self, data: bytes) -> None:
        number = len(self.done) + 1
        try:
            resp = self.store.client.upload_part(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id,
                                                 PartNumber=number, Body=data, **self.store.sse_params)
        except Exception as exc:
            raise self.store._translate(exc, f"upload part {number} of {self.key}") from exc
        self.done.append({"PartNumber": number, "ETag": resp["ETag"]})

    def complete(self) -> None:
        try:
            self.store.client.complete_multipart_upload(Bucket=self.store.bucket, Key=self.key,
                                                        UploadId=self.upload_id,
                                                        MultipartUpload={"Parts": self.done})
        except Exception as exc:
            raise self.store._translate(exc, f"complete upload {self.key}") from exc

    def abort(self) -> None:
        try:
            self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as exc:  # the bucket's own cleanup (or the next abort) has to do
            log.warning("could not abort the multipart upload of %s: %s", self.key, type(exc).__name__)


def _put_local(store: LocalStore, key: str, chunks: Iterable[bytes]) -> None:
    path = store._path(key)
    tmp = path.with_name(path.name + ".restorable-tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageUnavailable(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def abort_stale_uploads(store, prefix: str, today: str) -> int:
    """Abort multipart uploads under ``prefix`` started before ``today`` (YYYY-MM-DD, UTC):
    the invisible parts a run killed mid-upload leaves behind. Returns how many."""
    if not _is_s3(store):
        return 0
    try:
        uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=prefix).get("Uploads", [])
    except Exception as exc:  # providers without the call: their own cleanup has to do
        log.debug("vault: cannot list multipart uploads: %s", type(exc).__name__)
        return 0
    aborted = 0
    for upload in uploads:
        if upload["Initiated"].strftime("%Y-%m-%d") < today:
            try:
                store.client.abort_multipart_upload(Bucket=store.bucket, Key=upload["Key"],
                                                    UploadId=upload["UploadId"])
                aborted += 1
            except Exception as exc:
                log.warning("vault: could not abort a stale upload of %s: %s", upload["Key"], type(exc).__name__)
    return aborted
