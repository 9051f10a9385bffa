"""Hostile and broken input (issue 9): every case ends with the right exit code and one clear line.

* exit 3 (usage or config error): malformed, incomplete or contradictory configuration,
  or an unset variable it references. stderr is exactly one line, no traceback.
* exit 2 (could not verify): unreachable endpoint, refused credentials, a bucket that does
  not exist, a region the server refuses; the same config may work a minute later or
  elsewhere. The JSON finding names the endpoint or bucket and the error class.
* exit 1 (verification failed): the replica itself is wrong (foreign objects, crafted
  WAL headers, LZ4 bombs), with memory bounded while rejecting it.

How the S3 failures are produced, all with real server processes on 127.0.0.1:

* wrong credentials: a second moto server switched to IAM authentication through its
  ``/moto-api/reset-auth`` endpoint (moto's ``INITIAL_NO_AUTH_ACTION_COUNT`` setting,
  here 0). moto then checks every request's access key against its IAM users, so an
  unknown key gets ``InvalidAccessKeyId``; the default server accepts any key.
* region mismatch: moto serves a bucket whatever region a request is signed for, so it
  cannot express this. The fault proxy (``tests/support/faultproxy.py``) in front of moto
  answers ``400 AuthorizationHeaderMalformed`` the way S3-compatible servers refuse a
  wrong signing region. (Real AWS answers ``301 PermanentRedirect`` with an
  ``x-amz-bucket-region`` header, which botocore follows by itself.)
* unreachable endpoint: a closed port on 127.0.0.1 (connection refused).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import lz4.frame
import pytest
import yaml
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from lib.config import litestream_yml as config_litestream_yml, sources as config_sources
from lib.litestream.v3 import wal
from lib.units import format_duration, parse_duration
from lib.errors import ConfigError, StorageUnavailable
from lib.config.settings import load_settings, parse_settings
from lib.storage.local import LocalStore
from tests.support import REPO_ROOT, restorable_env, run_job
from tests.support.faultproxy import FaultProxy, error
from tests.support.replicas import read_object, write_object
from tests.support.s3server import S3Server, free_port

SECRET = "hostile-test-secret-value"
MEMORY_LIMIT = 1 << 30  # RLIMIT_AS for jobs fed decompression bombs
BOMB_BYTES = 1 << 30  # what the bombs inflate to: as much as the whole address-space limit
# A failure bound only (a loaded machine may be slow to start the interpreter): the finding
# shows whether the run gave up on its own after its bounded retries or was cut by a deadline.
UNREACHABLE_LIMIT_SECONDS = 90.0


# --------------------------------------------------------------------------- helpers


def verify(*args, env: dict | None = None, memory_limit: int | None = None, timeout: float = 120):
    """``python -m jobs.verify ARGS``; with ``memory_limit`` the child runs under RLIMIT_AS."""
    if memory_limit is None:
        return run_job("jobs.verify", *args, env=env or restorable_env(), timeout=timeout)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run([sys.executable, "-m", "jobs.verify", *map(str, args)], cwd=REPO_ROOT,
                          env=env or restorable_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit)


def config_error_line(result) -> str:
    """The single stderr line of a run that ended with exit 3."""
    assert result.returncode == 3, (result.returncode, result.stderr, result.stdout[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert lines[0].startswith("restorable: error: ")
    return lines[0].removeprefix("restorable: error: ")


def report_of(result, code: int) -> dict:
    assert result.returncode == code, (result.returncode, result.stderr[-3000:], result.stdout[-3000:])
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def only_finding(result, code: int) -> dict:
    (db,) = report_of(result, code)["databases"]
    assert len(db["findings"]) == 1, db["findings"]
    return db["findings"][0]


def error_kinds(result, code: int) -> list[tuple[str, str | None]]:
    (db,) = report_of(result, code)["databases"]
    return [(f["kind"], f.get("object")) for f in db["findings"] if f["severity"] == "error"]


# ============================================================ exit 3: configuration errors

# (case id, litestream.yml text or None, extra environment, extra arguments, expected line)
# ``{config}`` in the expected line is the config file's path, ``{tmp}`` the test's tmp_path.
CONFIG_CASES = [
    ("malformed YAML", "dbs:\n  - path: /data/app.db\n   replicas: [\n", {}, [],
     "{config}: line 3 column 4: invalid YAML (expected <block end>, but found '<block mapping start>'); "
     "fix the syntax there"),
    ("tab indentation", "dbs:\n\t- path: /data/app.db\n", {}, [],
     "{config}: line 2 column 1: invalid YAML (found character '\\t' that cannot start any token); "
     "fix the syntax there"),
    ("empty file", "", {}, [], "{config}: dbs: the config is empty; list the databases under dbs:"),
    ("no dbs", "addr: :9090\nlogging: {level: info}\n", {}, [],
     "{config}: dbs: no databases configured; add dbs: with a path and a replica for each"),
    ("empty dbs", "dbs: []\n", {}, [], "{config}: dbs: is empty; add at least one database with a path and a replica"),
    ("not a mapping", "- just\n- a list\n", {}, [], "{config}: expected a mapping of keys, got a list"),
    ("db without replica", "dbs:\n  - path: /data/app.db\n", {}, [],
     "{config}: dbs[0]: the database has no replica; add replica: (Litestream 0.5) or replicas: (0.3)"),
    ("unknown replica type", "dbs:\n  - path: /a.db\n    replica: {type: gcs, bucket: b}\n", {}, [],
     "{config}: dbs[0].replica.type: replica type 'gcs' is not supported by restorable (supported: s3, file)"),
    ("url with a bad scheme", "dbs:\n  - path: /a.db\n    replica: {url: 'ftp://b/app.db'}\n", {}, [],
     "{config}: dbs[0].replica.url: replica type 'ftp' is not supported by restorable (supported: s3, file)"),
    ("url that is not a URL", "dbs:\n  - path: /a.db\n    replica: {url: 'my-bucket/app.db'}\n", {}, [],
     "{config}: dbs[0].replica.url: 'my-bucket/app.db' is not a URL; use s3://BUCKET/PATH or file:///PATH"),
    ("url with no bucket", "dbs:\n  - path: /a.db\n    replica: {url: 's3:///app.db'}\n", {}, [],
     "{config}: dbs[0].replica.url: the s3 url names no bucket; use s3://BUCKET/PATH or set BUCKET_NAME or "
     "AWS_S3_BUCKET_NAME in the environment"),
    ("type contradicts url", "dbs:\n  - path: /a.db\n    replica: {type: file, url: 's3://b/app.db'}\n", {}, [],
     "{config}: dbs[0].replica.type: type 'file' contradicts the url scheme 's3'; remove type: or fix url:"),
    ("url and bucket", "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/app.db', bucket: c}\n", {}, [],
     "{config}: dbs[0].replica: cannot specify url & bucket for s3 replica; put them in the url or drop url:"),
    ("half a key pair", "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/app.db', access-key-id: AKIA1}\n",
     {}, [], "{config}: dbs[0].replica: access-key-id is set but secret-access-key is empty; set both, or neither "
     "to use the environment's credentials"),
    ("unset variable", "dbs:\n  - path: /a.db\n    replica: {url: 's3://${BUCKET}/app.db'}\n", {}, [],
     "{config}: dbs[0].replica.url uses ${BUCKET}, which is not set; set BUCKET in the environment"),
    ("unset secret variable", "dbs:\n  - path: /a.db\n    replica:\n      url: s3://b/app.db\n"
     "      access-key-id: AKIA1\n      secret-access-key: ${APP_SECRET}\n", {}, [],
     "{config}: dbs[0].replica.secret-access-key uses ${APP_SECRET}, which is not set; "
     "set APP_SECRET in the environment"),
    ("shell default syntax", "dbs:\n  - path: /a.db\n    replica: {url: 's3://${B:-x}/app.db'}\n", {}, [],
     "{config}: dbs[0].replica.url uses ${B:-x}, which is not set (Litestream has no ${VAR:-default} syntax); "
     "set B:-x in the environment"),
    ("Railway reference in the file", "dbs:\n  - path: /a.db\n    replica: {url: 's3://${{Bucket.NAME}}/x'}\n",
     {}, [], "{config}: dbs[0].replica.url uses ${{Bucket.NAME}}, a Railway reference, which Railway fills only "
     "in a service's variables, not inside files; set a service variable such as NAME=${{Bucket.NAME}} and write "
     "${NAME} here"),
    ("encrypted replica", "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/x', age: {identities: [k]}}\n", {}, [],
     "{config}: dbs[0].replica.age.identities: line 1 is not an age identity; expected an AGE-SECRET-KEY-1... "
     "line (age-keygen output)"),
    ("deeply nested", "dbs: " + "[" * 3000 + "]" * 3000 + "\n", {}, [],
     "{config}: YAML nested too deeply; a Litestream config needs a few levels"),
    ("bad boolean", "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/x', force-path-style: sometimes}\n", {}, [],
     "{config}: dbs[0].replica.force-path-style: expected true or false, got 'sometimes'"),
    ("bad duration", "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/x', sync-interval: 1 sec}\n", {}, [],
     "{config}: dbs[0].replica.sync-interval: invalid duration '1 sec'; use a duration such as 90s, 15m, "
     "1h30m or 7d"),
    ("bad URL style", "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/x'}\n", {"AWS_S3_URL_STYLE": "sideways"}, [],
     "AWS_S3_URL_STYLE='sideways' is not a URL style; set it to 'path' or 'virtual', or unset it"),
    ("half a key pair in the environment", "dbs:\n  - path: /a.db\n    replica: {url: 's3://b/x'}\n",
     {"AWS_SECRET_ACCESS_KEY": SECRET}, [],
     "{config}: dbs[0].replica: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; set both in the "
     "environment, or neither"),
    ("unknown --db", "dbs:\n  - path: /a.db\n    replica: {url: 'file:///r'}\n", {}, ["--db", "/b.db"],
     "--db /b.db: no such database in {config}; known databases: /a.db"),
    ("missing --config", None, {}, ["--config", "{tmp}/nope.yml"],
     "config file {tmp}/nope.yml (from --config) does not exist; fix --config to name the litestream.yml"),
    ("LITESTREAM_CONFIG is a directory", None, {"LITESTREAM_CONFIG": "{tmp}"}, [],
     "config file {tmp} (from LITESTREAM_CONFIG) is not a file; fix LITESTREAM_CONFIG to name the litestream.yml"),
    ("URL argument with a bad scheme", None, {}, ["gs://bucket/app.db"],
     "command line (URL 1): url: replica type 'gs' is not supported by restorable (supported: s3, file)"),
    ("URL argument with credentials and no bucket", None, {}, [f"s3://user:{SECRET}@/app.db"],
     "command line (URL 1): url: the s3 url names no bucket; use s3://BUCKET/PATH or set BUCKET_NAME or "
     "AWS_S3_BUCKET_NAME in the environment"),
    ("file URL with a NUL byte", None, {}, ["file:///srv/a%00b"],
     "command line (URL 1): url: 'file:///srv/a%00b' is not a file URL with an absolute path; "
     "use file:///ABSOLUTE/PATH"),
    ("RESTORABLE_REPLICAS empty name", None, {"RESTORABLE_REPLICAS": "=s3://b/x"}, [],
     "RESTORABLE_REPLICAS entry 1: name '' is not valid; use letters, digits, '.', '_' or '-' (at most 64), "
     "as in app=s3://BUCKET/app.db"),
    ("RESTORABLE_REPLICAS duplicate name", None, {"RESTORABLE_REPLICAS": "a=s3://b/x,a=s3://b/y"}, [],
     "RESTORABLE_REPLICAS entry 2: name 'a' is already used by entry 1; give each replica a distinct name "
     "(NAME=URL)"),
    ("RESTORABLE_REPLICAS unresolved Railway reference", None,
     {"RESTORABLE_REPLICAS": "app=s3://${{Bucket.AWS_S3_BUCKET_NAME}}/app.db"}, [],
     "RESTORABLE_REPLICAS entry 1 (app): url: bucket '${{Bucket.AWS_S3_BUCKET_NAME}}' is not a valid bucket "
     "name; it looks like an unresolved variable reference: Railway fills ${{Service.VARIABLE}} only when that "
     "service and variable exist, and litestream.yml needs ${VARIABLE}"),
    ("bad max-age override", None, {"RESTORABLE_MAX_AGE": "forever"}, ["file:///r"],
     "RESTORABLE_MAX_AGE: invalid duration 'forever'; use a duration such as 90s, 15m, 1h30m or 7d"),
    ("bad allow-empty override", None, {"RESTORABLE_ALLOW_EMPTY": "perhaps"}, ["file:///r"],
     "RESTORABLE_ALLOW_EMPTY='perhaps' is not a boolean; set it to true or false (or 1/0, yes/no, on/off)"),
    ("bad max runtime", None, {"RESTORABLE_MAX_RUNTIME": "soon"}, ["file:///r"],
     "--max-runtime / RESTORABLE_MAX_RUNTIME: invalid duration 'soon'; use a duration such as 90s, 15m, "
     "1h30m or 7d"),
    ("scratch dir missing", None, {"RESTORABLE_SCRATCH_DIR": "{tmp}/no-such-dir"}, ["file:///r"],
     "RESTORABLE_SCRATCH_DIR={tmp}/no-such-dir is not a writable directory; create it or unset it"),
    ("scratch dir is a file", None, {"RESTORABLE_SCRATCH_DIR": "{tmp}/file"}, ["file:///r"],
     "RESTORABLE_SCRATCH_DIR={tmp}/file is not a writable directory; create it or unset it"),
    ("no config anywhere", None, {}, [],
     "no Litestream config found (tried --config, $LITESTREAM_CONFIG, $RESTORABLE_REPLICAS, litestream.yml, "
     "/etc/litestream.yml); pass --config PATH, set LITESTREAM_CONFIG to the litestream.yml the app uses, or set "
     "RESTORABLE_REPLICAS=s3://BUCKET/PATH"),
]


@pytest.mark.parametrize("text, env, args, expected", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_config_errors_exit_3_with_one_line(tmp_path, text, env, args, expected):
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "litestream.yml"
    if text is not None:
        path.write_text(text)
        args = ["--config", str(path), *args]
    if expected.startswith("no Litestream config") and any(p.exists() for p in config_sources.DEFAULT_CONFIG_PATHS):
        pytest.skip("a litestream.yml exists where the job looks by default")
    extra = {key: value.replace("{tmp}", str(tmp_path)) for key, value in env.items()}
    result = verify(*[arg.replace("{tmp}", str(tmp_path)) for arg in args], env=restorable_env(extra))
    assert config_error_line(result) == expected.replace("{config}", str(path)).replace("{tmp}", str(tmp_path))
    assert SECRET not in result.stderr


def test_settings_file_errors_exit_3_with_one_line(tmp_path):
    settings = tmp_path / "restorable.yml"
    settings.write_text("dbs:\n  app.db:\n    max-agee: 1h\n")
    result = verify("file:///r", "--settings", settings)
    line = config_error_line(result)
    prefix = f"{settings}: dbs.app.db.max-agee: unknown key; known keys here: "
    assert line.startswith(prefix), line
    known = line[len(prefix):].split(", ")  # the list grows with new settings; it stays sorted and complete
    assert known == sorted(known) and {"max-age", "min-rows", "probes", "row-drop-error"} <= set(known), known


def test_config_that_is_not_utf8_exits_3(tmp_path):
    path = tmp_path / "litestream.yml"
    path.write_bytes(b"dbs:\n  - path: /a\xff\xfe.db\n")
    assert config_error_line(verify("--config", path)) == (
        f"{path}: cannot read config (UnicodeDecodeError); check the file and its permissions")


def test_scratch_dir_without_write_permission_exits_3(tmp_path):
    target = tmp_path / "readonly"
    target.mkdir()
    if os.geteuid() == 0:
        # root ignores mode bits; the immutable attribute stops root too (needs CAP_LINUX_IMMUTABLE)
        if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr +i: no directory is unwritable for this process")
    else:
        target.chmod(0o500)
    try:
        result = verify("file:///r", env=restorable_env({"RESTORABLE_SCRATCH_DIR": str(target)}))
    finally:
        subprocess.run(["chattr", "-i", str(target)], capture_output=True)
        target.chmod(0o700)
    assert config_error_line(result) == (
        f"RESTORABLE_SCRATCH_DIR={target} is not a writable directory; create it or unset it")


@pytest.mark.parametrize("path", ["/proc", "/sys"])
def test_scratch_dir_where_nothing_can_be_created_exits_3(path):
    result = verify("file:///r", env=restorable_env({"RESTORABLE_SCRATCH_DIR": path}))
    assert config_error_line(result).startswith(f"RESTORABLE_SCRATCH_DIR={path} ")


def test_bad_parallel_override_exits_3():
    result = verify("file:///r", env=restorable_env({"RESTORABLE_PARALLEL": "many"}))
    assert config_error_line(result) == "RESTORABLE_PARALLEL='many' is not a whole number; use e.g. 2"


# ============================================================ exit 2: could not verify


def s3_env(endpoint: str, access_key: str = "restorable-test-key", secret: str = SECRET, **extra) -> dict:
    return restorable_env({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": access_key,
                           "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1", **extra})


def unreachable_finding(result) -> str:
    finding = only_finding(result, 2)
    assert finding["kind"] == "unreachable" and finding.get("inconclusive") is True, finding
    assert SECRET not in result.stdout + result.stderr
    return finding["message"]


def test_bucket_that_does_not_exist_exits_2(s3_server):
    result = verify("s3://no-such-bucket-9f3/app.db", "--json", env=s3_env(s3_server.endpoint))
    message = unreachable_finding(result)
    assert message == (
        "could not verify s3://no-such-bucket-9f3/app.db: list app.db/: bucket 'no-such-bucket-9f3' does not exist "
        f"at s3://no-such-bucket-9f3 (endpoint {s3_server.endpoint}); check BUCKET_NAME / the replica's bucket")


@pytest.fixture(scope="module")
def auth_s3(tmp_path_factory):
    """A moto server that checks credentials: a bucket with an object, then IAM auth switched on."""
    server = S3Server(log_path=tmp_path_factory.mktemp("moto-auth") / "moto.log")
    bucket = server.make_bucket("auth")
    server.client().put_object(Bucket=bucket, Key="app.db/generations/x", Body=b"x")
    request = urllib.request.Request(f"{server.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as response:
        assert json.load(response)["status"] == "ok"
    yield server, bucket
    server.stop()


def test_wrong_credentials_exit_2(auth_s3):
    server, bucket = auth_s3
    result = verify(f"s3://{bucket}/app.db", "--json", env=s3_env(server.endpoint, "AKIAWRONGWRONGWRONG1"))
    assert unreachable_finding(result) == (
        f"could not verify s3://{bucket}/app.db: list app.db/: credentials refused by s3://{bucket} (endpoint "
        f"{server.endpoint}) (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the "
        "bucket policy")


def test_region_the_server_refuses_exits_2(s3_server):
    bucket = s3_server.make_bucket("region")
    with FaultProxy(s3_server.endpoint) as proxy:
        proxy.set_rules([error(400, "AuthorizationHeaderMalformed")])
        result = verify(f"s3://{bucket}/app.db", "--json", env=s3_env(proxy.endpoint, AWS_DEFAULT_REGION="eu-west-9"))
    assert unreachable_finding(result) == (
        f"could not verify s3://{bucket}/app.db: list app.db/: region mismatch at s3://{bucket} (endpoint "
        f"{proxy.endpoint}) (AuthorizationHeaderMalformed); set the replica's region or AWS_DEFAULT_REGION")


def test_unreachable_endpoint_exits_2_quickly():
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    # the default maximum runtime (30 min) is far away: a run that kept retrying would hit the timeout
    result = verify("s3://bucket/app.db", "--json", env=s3_env(endpoint), timeout=UNREACHABLE_LIMIT_SECONDS)
    assert unreachable_finding(result) == (
        f"could not verify s3://bucket/app.db: list app.db/: s3://bucket (endpoint {endpoint}) unreachable "
        "(EndpointConnectionError)")


# ============================================================ exit 1: the replica is wrong


def test_prefix_with_foreign_objects_is_no_backups(s3_server):
    bucket = s3_server.make_bucket("foreign")
    for key in ("app.db/readme.txt", "app.db/generations/notes.md", "app.db/0000/not-an-ltx-file"):
        s3_server.client().put_object(Bucket=bucket, Key=key, Body=b"not litestream")
    finding = only_finding(verify(f"s3://{bucket}/app.db", "--json", env=s3_env(s3_server.endpoint)), 1)
    assert finding["kind"] == "no_backups" and finding["severity"] == "error"
    assert finding["message"].startswith(f"no Litestream backups found at s3://{bucket}/app.db")


def test_prefix_with_foreign_objects_hints_at_them(s3_server):
    bucket = s3_server.make_bucket("foreign-hint")
    s3_server.client().put_object(Bucket=bucket, Key="app.db/readme.txt", Body=b"not litestream")
    finding = only_finding(verify(f"s3://{bucket}/app.db", "--json", env=s3_env(s3_server.endpoint)), 1)
    assert "other object" in finding["message"] and "app.db/readme.txt" in finding["message"]


def _wal_key(replica, index: int, offset: int = 0) -> str:
    return f"generations/{replica.generations[-1]}/wal/{index:08x}_{offset:08x}.wal.lz4"


def _snapshot_key(replica) -> str:
    gen = replica.generations[-1]
    return next(k for k in _listing(replica) if k.startswith(f"generations/{gen}/snapshots/"))


def _listing(replica) -> list[str]:
    return sorted(p.relative_to(replica.replica_dir).as_posix() for p in replica.replica_dir.rglob("*")
                  if p.is_file() and not p.is_symlink())


def _rewrite_wal_page_size(replica, key: str, page_size: int) -> None:
    """Set the WAL header's page size and recompute its checksum, so only the size is wrong."""
    raw = bytearray(lz4.frame.decompress(read_object(replica, key)))
    struct.pack_into(">I", raw, 8, page_size)
    big_endian = struct.unpack_from(">I", raw, 0)[0] == wal.WAL_MAGIC_BE
    struct.pack_into(">II", raw, 24, *wal.checksum_bytes(bytes(raw[:24]), 0, 0, big_endian))
    write_object(replica, key, lz4.frame.compress(bytes(raw)))


@pytest.mark.parametrize("page_size", [0, 3000, 1 << 17])
def test_wal_header_with_invalid_page_size_is_corrupt_object(v3_file_replica, clone, page_size):
    replica = clone(v3_file_replica)
    key = _wal_key(replica, 3)
    _rewrite_wal_page_size(replica, key, page_size)
    finding = only_finding(verify(replica.url(), "--json"), 1)
    assert (finding["kind"], finding["object"]) == ("corrupt_object", key)
    assert finding["message"].startswith(f"WAL index 00000003: invalid WAL page size {page_size}: ")


# ---- LZ4 frames that lie about their size, and decompression bombs

_XXH_PRIMES = (2654435761, 2246822519, 3266489917, 668265263, 374761393)
_U32 = 0xFFFFFFFF


def _xxh32_short(data: bytes) -> int:
    """XXH32 with seed 0 of fewer than 16 bytes (the LZ4 frame descriptor checksum)."""
    p1, p2, p3, p4, p5 = _XXH_PRIMES
    rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & _U32  # noqa: E731
    h = (p5 + len(data)) & _U32
    whole = len(data) // 4 * 4
    for (word,) in struct.iter_unpack("<I", data[:whole]):
        h = rotl((h + word * p3) & _U32, 17) * p4 & _U32
    for byte in data[whole:]:
        h = rotl((h + byte * p5) & _U32, 11) * p1 & _U32
    h ^= h >> 15
    h = h * p2 & _U32
    h ^= h >> 13
    h = h * p3 & _U32
    return h ^ (h >> 16)


def test_xxh32_short_matches_lz4_frames():
    frame = lz4.frame.compress(b"restorable" * 50, store_size=True)
    assert (_xxh32_short(frame[4:14]) >> 8) & 0xFF == frame[14]


def declare_content_size(data: bytes, size: int) -> bytes:
    """``data`` as an LZ4 frame whose header claims ``size`` decompressed bytes (valid header checksum)."""
    frame = lz4.frame.compress(data, store_size=True)
    descriptor = frame[4:6] + struct.pack("<Q", size)
    return frame[:4] + descriptor + bytes([(_xxh32_short(descriptor) >> 8) & 0xFF]) + frame[15:]


def decompression_bomb(head: bytes, total: int) -> bytes:
    """A valid LZ4 frame of ``head`` followed by zeros up to ``total`` bytes (about 4 MiB per GiB)."""
    compressor = lz4.frame.LZ4FrameCompressor(block_size=lz4.frame.BLOCKSIZE_MAX4MB)
    parts = [compressor.begin(), compressor.compress(head)]
    zeros = bytes(8 << 20)
    left = total - len(head)
    while left > 0:
        parts.append(compressor.compress(zeros[: min(left, len(zeros))]))
        left -= len(zeros)
    parts.append(compressor.flush())
    return b"".join(parts)


def oversized_block(data: bytes) -> bytes:
    """An LZ4 frame whose first block header claims 2 GiB, far past the frame's 64 KiB maximum."""
    frame = lz4.frame.compress(data, block_size=lz4.frame.BLOCKSIZE_MAX64KB)
    flags = frame[4]
    header_end = 7 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0)  # content size, dictionary id
    return frame[:header_end] + struct.pack("<I", 0x7FFFFFFF) + frame[header_end + 4:]


def _assert_bounded(result) -> None:
    assert "MemoryError" not in result.stderr and result.returncode != 4, result.stderr[-3000:]


@pytest.mark.parametrize("craft", [
    pytest.param(lambda raw: declare_content_size(raw, 1 << 62), id="declares 4 EiB"),
    pytest.param(lambda raw: declare_content_size(raw, len(raw) - 4096), id="declares less than it holds"),
    pytest.param(oversized_block, id="block claims 2 GiB"),
])
@pytest.mark.parametrize("target", ["wal", "snapshot"])
def test_lz4_frame_lying_about_its_size_is_corrupt_object(v3_file_replica, clone, craft, target):
    replica = clone(v3_file_replica)
    key = _wal_key(replica, 3) if target == "wal" else _snapshot_key(replica)
    write_object(replica, key, craft(lz4.frame.decompress(read_object(replica, key))))
    result = verify(replica.url(), "--json", memory_limit=MEMORY_LIMIT)
    _assert_bounded(result)
    assert ("corrupt_object", key) in error_kinds(result, 1)


def test_wal_decompression_bomb_is_corrupt_object_in_bounded_memory(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    key = _wal_key(replica, 3)
    header = lz4.frame.decompress(read_object(replica, key))[:32]  # a valid WAL header, then 1 GiB of zeros
    write_object(replica, key, decompression_bomb(header, BOMB_BYTES))
    result = verify(replica.url(), "--json", memory_limit=MEMORY_LIMIT)
    _assert_bounded(result)
    assert error_kinds(result, 1)[0] == ("corrupt_object", key)


def test_snapshot_decompression_bomb_is_corrupt_object_in_bounded_memory(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    key = _snapshot_key(replica)
    write_object(replica, key, decompression_bomb(lz4.frame.decompress(read_object(replica, key)), BOMB_BYTES))
    result = verify(replica.url(), "--json", memory_limit=MEMORY_LIMIT)
    _assert_bounded(result)
    assert ("corrupt_object", key) in error_kinds(result, 1)


def test_undecodable_segment_is_reported_once(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    key = _wal_key(replica, 3)
    assert _wal_key(replica, 3, 0x1038) in _listing(replica)  # index 3 has a second segment
    write_object(replica, key, declare_content_size(lz4.frame.decompress(read_object(replica, key)), 1 << 62))
    assert error_kinds(verify(replica.url(), "--json"), 1) == [("corrupt_object", key)]


# ============================================================ file replicas stay in their root


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(path).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*"))}


def test_symlinked_generations_directory_is_not_followed(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    outside = tmp_path / "outside"
    shutil.move(replica.replica_dir / "generations", outside)  # a complete, restorable copy
    (replica.replica_dir / "generations").symlink_to(outside, target_is_directory=True)
    before = _tree(outside)
    finding = only_finding(verify(replica.url(), "--json"), 1)
    assert finding["kind"] == "no_backups"
    assert _tree(outside) == before


def test_symlinked_objects_are_not_read(v3_file_replica, clone, tmp_path):
    replica = clone(v3_file_replica)
    outside = tmp_path / "outside"
    outside.mkdir()
    for key in (_snapshot_key(replica), _wal_key(replica, 2)):
        copy = outside / Path(key).name  # the genuine object, but outside the root
        shutil.move(replica.replica_dir / key, copy)
        (replica.replica_dir / key).symlink_to(copy)
    before = _tree(outside)
    result = verify(replica.url(), "--json")
    assert report_of(result, 1)["databases"][0]["restored"] is None  # nothing restorable inside the root
    assert _tree(outside) == before


def test_symlink_to_a_system_file_is_not_read(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    key = _snapshot_key(replica)
    (replica.replica_dir / key).unlink()
    (replica.replica_dir / key).symlink_to("/etc/passwd")
    result = verify(replica.url(), "--json")
    assert result.returncode == 1 and "root:" not in result.stdout + result.stderr


def test_odd_names_and_special_files_in_a_replica_are_ignored(v3_file_replica, clone):
    replica = clone(v3_file_replica)
    wal_dir = replica.replica_dir / "generations" / replica.generations[-1] / "wal"
    for name in ("café ☕.wal.lz4", "new\nline.wal.lz4", " 00000001_00000000.wal.lz4", "..wal.lz4",
                 "00000001_00000000.wal.lz4.tmp", "-rf", "%2e%2e%2fetc"):
        (wal_dir / name).write_bytes(b"junk")
    os.mkfifo(wal_dir / "00000009_00000000.wal.lz4")  # opening a FIFO would hang the run
    (wal_dir / os.fsdecode(b"bad-\xff\xfe-utf8.wal.lz4")).write_bytes(b"junk")
    (replica.replica_dir / "generations" / "0123456789abcdef").symlink_to("/", target_is_directory=True)
    result = verify(replica.url(), "--json", timeout=60)
    (db,) = report_of(result, 0)["databases"]
    assert db["restored"]["sha256"] == v3_file_replica.reference_sha256


@pytest.mark.parametrize("key", ["../outside", "a/../../outside", "/etc/passwd", "generations/\x00x", "",
                                 "generations/../../outside"])
def test_local_store_refuses_keys_outside_its_root(tmp_path, key):
    root = tmp_path / "replica"
    root.mkdir()
    (tmp_path / "outside").write_text("secret")
    store = LocalStore(root)
    with pytest.raises(StorageUnavailable):
        store.open(key)
    with pytest.raises(StorageUnavailable):
        store.put(key, b"x")
    assert (tmp_path / "outside").read_text() == "secret"
    assert store.delete([key]) and (tmp_path / "outside").exists()


def test_local_store_refuses_a_symlink_leading_outside(tmp_path):
    root = tmp_path / "replica"
    (root / "generations").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "generations" / "g").symlink_to(tmp_path / "outside", target_is_directory=True)
    store = LocalStore(root)
    for action in (lambda: store.open("generations/g/x"), lambda: store.put("generations/g/x", b"x")):
        with pytest.raises(StorageUnavailable):
            action()
    assert list((tmp_path / "outside").iterdir()) == []
    assert store.list("") == []


def test_missing_file_replica_creates_nothing_outside_it(tmp_path):
    missing = tmp_path / "no-such-parent" / "replica"
    result = verify(missing.as_uri(), "--json")
    assert "does not exist" in config_error_line(result)  # a path that cannot hold backups: issue 20, 12
    assert not (tmp_path / "no-such-parent").exists()


# ============================================================ S3 keys with odd names


def test_odd_s3_keys_next_to_a_replica_are_ignored(v3_s3_replica, clone):
    # moto cannot store a key with a newline (its router answers 404); a tab stands in for control characters.
    replica = clone(v3_s3_replica)
    base = f"{replica.prefix}/generations/{replica.generations[-1]}"
    for key in (f"{base}/wal/../../../../etc/passwd", f"{base}/snapshots/00000000.snapshot.lz4\t",
                f"{base}/wal/00000001_00000000.wal.lz4 ", f"{base}/wal/café ☕", f"{base}/wal/%00%2e%2e",
                f"{replica.prefix}/generations//wal/00000001_00000000.wal.lz4", f"{replica.prefix}/0000/x.ltx"):
        replica.s3.client().put_object(Bucket=replica.bucket, Key=key, Body=b"junk")
    s3 = replica.s3
    env = s3_env(s3.endpoint, s3.access_key_id, s3.secret_access_key)
    (db,) = report_of(verify(replica.url(), "--json", env=env), 0)["databases"]
    assert db["restored"]["sha256"] == v3_s3_replica.reference_sha256


# ============================================================ properties: only ConfigError escapes


HOSTILE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from([
    "", " ", "\x00", "..", "../..", "/", "//", "s3://", "s3:///", "file://", "file:///", "${X}", "${{A.B}}",
    "$", "~", "~root", "[::1]", "[", "%", "%00", "a\nb", "-1s", "1e9h", "nan", "inf", "9" * 400, "\u202e",
])
HOSTILE_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=6,
)
REPLICA_KEYS = sorted(config_litestream_yml.REPLICA_KEYS_READ | {"age", "unknown", "dir"})


@given(replica=st.dictionaries(st.sampled_from(REPLICA_KEYS), HOSTILE_VALUE, max_size=5),
       top=st.dictionaries(st.sampled_from(sorted(config_litestream_yml.TOP_KEYS_READ - {"dbs"})), HOSTILE_VALUE, max_size=3),
       db_path=HOSTILE_VALUE)
@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_replica_mapping_raises_only_config_errors(replica, top, db_path):
    document = {**top, "dbs": [{"path": db_path, "replicas": [replica]}]}
    try:
        text = yaml.safe_dump(document, allow_unicode=True)
    except yaml.YAMLError:
        return
    try:
        cfg = config_litestream_yml.parse(text, {}, source="fuzz.yml", cwd="/work")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    (result,) = cfg.dbs[0].replicas
    assert result.type in ("s3", "file") and (result.type == "file" or result.bucket)


@given(text=st.lists(st.sampled_from(["app=", "a.b-c_1=", "=", ",", " ", "\n", "s3://", "file://", "b", "/",
                                      "p", "?", "region=auto", "&", "endpoint=http://h:1", "%2C", "${{X.Y}}",
                                      "@", ":", "x", "..", "\x00"]), max_size=16).map("".join),
       env=st.dictionaries(st.sampled_from(["AWS_S3_URL_STYLE", "BUCKET_NAME", "AWS_ENDPOINT_URL", "AWS_REGION",
                                            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]),
                           HOSTILE_TEXT, max_size=4))
@hsettings(max_examples=500, deadline=None)
def test_restorable_replicas_raise_only_config_errors(text, env):
    try:
        cfg = config_sources.config_from_env({**env, "RESTORABLE_REPLICAS": text})
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    labels = [db.path for db in cfg.dbs]
    assert cfg.dbs and len(set(labels)) == len(labels)
    for db in cfg.dbs:
        (replica,) = db.replicas
        assert replica.type == "file" and replica.path.startswith("/") or replica.bucket


@given(url=st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(["s3://", "file://", "S3://", "", "s3:"]),
                     HOSTILE_TEXT))
@hsettings(max_examples=500, deadline=None)
def test_replica_urls_raise_only_config_errors(url):
    try:
        config_sources.config_from_urls([url], {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": SECRET})
    except ConfigError as exc:
        assert "\n" not in str(exc) and SECRET not in str(exc)


@given(value=HOSTILE_VALUE)
@hsettings(max_examples=500, deadline=None)
def test_durations_raise_only_config_errors(value):
    try:
        seconds = parse_duration(value, "k")
    except ConfigError as exc:
        assert str(exc).startswith("k: ") and "\n" not in str(exc)
    else:
        assert seconds >= 0 and seconds == seconds and seconds != float("inf")
        assert format_duration(seconds)


@given(document=st.dictionaries(st.sampled_from(["defaults", "dbs", "other"]), HOSTILE_VALUE, max_size=2)
       | HOSTILE_VALUE)
@hsettings(max_examples=400, deadline=None)
def test_settings_documents_raise_only_config_errors(document):
    try:
        parse_settings(document, "restorable.yml")
    except ConfigError as exc:
        assert "\n" not in str(exc)


@given(env=st.dictionaries(st.sampled_from(["RESTORABLE_MAX_AGE", "RESTORABLE_ALLOW_EMPTY", "RESTORABLE_RETENTION",
                                            "RESTORABLE_ENFORCE_RETENTION"]), HOSTILE_TEXT, max_size=4))
@hsettings(max_examples=300, deadline=None)
def test_settings_overrides_raise_only_config_errors(env):
    try:
        load_settings(None, env, default_path=Path("/nonexistent/restorable.yml"))
    except ConfigError as exc:
        assert "\n" not in str(exc)
