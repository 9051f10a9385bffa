"""S3 replicas written with server-side encryption (SSE-C) or moved to an archive storage class.

moto stores SSE-C objects but does not check the key on GET, so restorable reads them through
a small proxy that answers like S3 does: a GET of an object without the right
``x-amz-server-side-encryption-customer-key-MD5`` is refused (400 InvalidRequest). The
replica itself is written by the real litestream 0.5.17 with ``sse-customer-key``.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support import restorable_env, run_job
from tests.support.litestream import V5
from tests.support.replicas import BuiltReplica, build_replica

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()
KEY_MD5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()

pytestmark = pytest.mark.slow  # replicas written by litestream 0.5.17 on the moto server


class _SseCheckingProxy:
    """Forwards to ``upstream`` and answers GETs as S3 does for SSE-C: 400 for a GET of an object
    without the key's MD5, and 400 for SSE-C headers on an object PUT here without them."""

    def __init__(self, upstream: str):
        target = urlsplit(upstream)
        self.refused = 0
        self.checked = 0
        self.plain: set[str] = set()  # keys PUT through the proxy without SSE-C
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                is_object = "list-type=" not in self.path and self.path.count("/") >= 2
                sent = self.headers.get("x-amz-server-side-encryption-customer-key-MD5")
                if self.command == "PUT" and is_object and sent is None:
                    proxy.plain.add(self.path)
                if self.command == "GET" and is_object:
                    proxy.checked += 1
                    if sent != (None if self.path in proxy.plain else KEY_MD5):
                        proxy.refused += 1
                        body = (b"<Error><Code>InvalidRequest</Code><Message>The object was stored using a form of "
                                b"Server Side Encryption. The correct parameters must be provided.</Message></Error>")
                        self.send_response(400)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                self._forward()

            do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = target.netloc
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for name, value in resp.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sse_replica(tmp_path_factory, s3_server) -> BuiltReplica:
    return build_replica(V5, "s3", tmp_path_factory.mktemp("v5-sse"), s3=s3_server,
                         extra_replica_config={"sse-customer-key": KEY_B64})


def _config_via(replica: BuiltReplica, endpoint: str, path: Path, **replica_keys) -> Path:
    document = yaml.safe_load(replica.config_path.read_text())
    entry = document["dbs"][0]["replica"]
    entry["endpoint"] = endpoint
    entry.update(replica_keys)
    for key in [k for k, v in replica_keys.items() if v is None]:
        entry.pop(key)
    path.write_text(yaml.safe_dump(document))
    return path


def _verify(replica: BuiltReplica, config: Path, *extra: str) -> tuple[int, dict, str]:
    proc = run_job("jobs.verify", "--json", "--config", config, "--max-age", "100000d", "--drill", "none", *extra,
                   env=restorable_env(replica.s3.credentials_env()))
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_sse_c_replica_verifies_with_the_key_sent_on_every_get(sse_replica, tmp_path):
    proxy = _SseCheckingProxy(sse_replica.s3.endpoint)
    try:
        config = _config_via(sse_replica, proxy.endpoint, tmp_path / "litestream.yml")
        _verify(sse_replica, config)  # writes the history (encrypted too), which the next run reads
        code, report, stderr = _verify(sse_replica, config)
        [db] = report["databases"]
        assert code == 0, json.dumps(db["findings"])
        assert not [f for f in db["findings"] if "history" in f["message"].lower()], db["findings"]
        assert db["restored"]["sha256"] == sse_replica.reference_sha256
        assert proxy.checked > 0 and proxy.refused == 0
        assert KEY_B64 not in json.dumps(report) + stderr
    finally:
        proxy.stop()


def test_sse_c_key_from_a_file(sse_replica, tmp_path):
    key_file = tmp_path / "sse.key"
    key_file.write_text(KEY_B64 + "\n")
    proxy = _SseCheckingProxy(sse_replica.s3.endpoint)
    try:
        config = _config_via(sse_replica, proxy.endpoint, tmp_path / "litestream.yml",
                             **{"sse-customer-key": None, "sse-customer-key-path": str(key_file)})
        code, report, _ = _verify(sse_replica, config)
        assert code == 0 and proxy.refused == 0, report
    finally:
        proxy.stop()


def test_without_the_key_s3_refuses_and_the_run_is_inconclusive_not_failed(sse_replica, tmp_path):
    proxy = _SseCheckingProxy(sse_replica.s3.endpoint)
    try:
        config = _config_via(sse_replica, proxy.endpoint, tmp_path / "litestream.yml", **{"sse-customer-key": None})
        code, report, _ = _verify(sse_replica, config)
        assert code == 2 and proxy.refused > 0, report
        assert "sse-customer-key" in json.dumps(report["databases"][0]["findings"])
    finally:
        proxy.stop()


def test_a_bad_sse_c_key_is_a_config_error_naming_the_key(sse_replica, tmp_path):
    config = _config_via(sse_replica, sse_replica.s3.endpoint, tmp_path / "litestream.yml",
                         **{"sse-customer-key": "bm90LTMyLWJ5dGVz"})
    proc = run_job("jobs.verify", "--config", config, env=restorable_env(sse_replica.s3.credentials_env()))
    assert proc.returncode == 3 and "sse-customer-key" in proc.stderr and "32-byte" in proc.stderr
    assert "bm90LTMyLWJ5dGVz" not in proc.stderr


def test_objects_in_an_archive_class_are_a_clear_finding(v5_s3_replica, clone, tmp_path):
    replica = clone(v5_s3_replica)
    client = replica.s3.client()
    keys = replica.s3.list_keys(replica.bucket, replica.prefix)
    for key in keys:
        client.copy_object(Bucket=replica.bucket, Key=key, CopySource={"Bucket": replica.bucket, "Key": key},
                           StorageClass="GLACIER", MetadataDirective="COPY")
    code, report, _ = _verify(replica, replica.config_path)
    [db] = report["databases"]
    [finding] = [f for f in db["findings"] if f["severity"] == "error"]
    assert code == 1 and finding["kind"] == "archived_object"
    assert "GLACIER" in finding["message"] and f"{len(keys)} of {len(keys)}" in finding["message"]


def test_vault_copy_beside_an_sse_c_replica_is_encrypted_and_restores(sse_replica, tmp_path):
    """The vault (default: beside the history, in the replica's bucket) is written with the
    replica's customer key, so it is as protected as the replica and reads back with that key."""
    proxy = _SseCheckingProxy(sse_replica.s3.endpoint)
    try:
        config = _config_via(sse_replica, proxy.endpoint, tmp_path / "litestream.yml")
        env = restorable_env({**sse_replica.s3.credentials_env(), "RESTORABLE_VAULT_KEEP": "daily=1"})
        proc = run_job("jobs.verify", "--json", "--config", config, "--max-age", "100000d", "--drill", "none", env=env)
        [db] = json.loads(proc.stdout)["databases"]
        assert proc.returncode == 0, db["findings"]
        assert db["vault"]["keep"]["uploaded"] and db["vault"]["check"]["status"] == "ok", db["vault"]
        assert not [path for path in proxy.plain if "_vault" in path], proxy.plain  # stored with SSE-C
        out = tmp_path / "from-vault.db"
        proc = run_job("jobs.restore", "--config", config, "--from-vault", "latest", "-o", out, env=env)
        assert proc.returncode == 0, proc.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == sse_replica.reference_sha256
        assert proxy.refused == 0
        assert KEY_B64 not in proc.stderr
    finally:
        proxy.stop()
