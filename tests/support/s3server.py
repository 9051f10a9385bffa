"""A real S3 server for tests: moto in server mode, as a subprocess on 127.0.0.1.

Tests talk to it over real HTTP with boto3; nothing is patched in-process. Buckets are
never reused: every caller asks :meth:`S3Server.make_bucket` for a fresh one.
"""
from __future__ import annotations

import atexit
import itertools
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
from botocore.config import Config

# How long moto may take to answer its first request; it imports a lot on start-up.
STARTUP_TIMEOUT_SECONDS = 60.0
# A port picked as free can be taken before moto binds it; try a few others then.
START_ATTEMPTS = 5


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """A moto server subprocess; started by the constructor, stopped by :meth:`stop`.

    Usable as a context manager. Its log (one line per request) goes to ``log_path``.
    """

    region: str = "us-east-1"

    def __init__(
        self,
        log_path: Path | None = None,
        access_key_id: str = "restorable-test-key",
        secret_access_key: str = "restorable-test-secret",
    ) -> None:
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="moto-")) / "moto.log"
        self.log_path = Path(log_path)
        self._counter = itertools.count(1)
        self._proc: subprocess.Popen | None = None
        self.port = 0
        self.endpoint = ""
        self._start()

    # ----------------------------------------------------------------- lifecycle
    def _start(self) -> None:
        last_error = ""
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_server_env(),
                )
            if self._wait_ready():
                # A script that dies on an exception must not leave moto running.
                atexit.register(self.stop)
                return
            last_error = self._log_tail()
            self._kill()
        raise RuntimeError(f"moto server did not start after {START_ATTEMPTS} attempts; log:\n{last_error}")

    def _wait_ready(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with opener.open(self.endpoint + "/", timeout=2):
                    return True
            except urllib.error.HTTPError:
                return True  # any HTTP answer means it is serving
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        return False

    def _log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        """Stop the server process; every bucket it held is gone."""
        self._kill()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "S3Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"S3Server(endpoint={self.endpoint!r})"

    # ------------------------------------------------------------------ helpers
    def client(self):
        """A boto3 S3 client for this server: path-style, static test credentials."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                # Same choice restorable makes for custom endpoints (see the v0.5 format doc, 7).
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def make_bucket(self, prefix: str = "b") -> str:
        """Create a bucket with a fresh, valid, unique name starting with ``prefix``."""
        stem = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:30] or "b"
        name = f"{stem}-{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return name

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` starting with ``prefix``, sorted."""
        paginator = self.client().get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return sorted(keys)

    def list_objects(self, bucket: str, prefix: str = "") -> dict[str, dict]:
        """``{key: listing entry}`` for every object under ``prefix`` (Size, ETag, LastModified)."""
        paginator = self.client().get_paginator("list_objects_v2")
        out = {}
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj
        return out

    def copy_prefix(self, src_bucket: str, src_prefix: str, dst_bucket: str, dst_prefix: str) -> None:
        """Copy every object under the directory ``src_prefix`` to the same relative key under ``dst_prefix``.

        ``src_prefix`` names a directory: ``"a/b"`` copies ``a/b/...`` but not ``a/bc``.
        An empty prefix copies the whole bucket. Object metadata is kept (CopyObject's
        default); LastModified is necessarily the copy time.
        """
        src_dir = _as_dir(src_prefix)
        dst_dir = _as_dir(dst_prefix)
        client = self.client()
        for key in self.list_keys(src_bucket, src_dir):
            client.copy_object(
                Bucket=dst_bucket,
                Key=dst_dir + key[len(src_dir):],
                CopySource={"Bucket": src_bucket, "Key": key},
            )

    def credentials_env(self) -> dict[str, str]:
        """AWS_* variables naming this server's credentials and region."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }


def _as_dir(prefix: str) -> str:
    if prefix == "":
        return ""
    return prefix if prefix.endswith("/") else prefix + "/"


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    # moto must not try to reach AWS for anything, and needs no real credentials.
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    return env
