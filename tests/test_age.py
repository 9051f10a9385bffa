"""age-encrypted v0.3 replicas written by the real litestream 0.3.13 (``age: {identities, recipients}``).

restorable restores them natively, byte-identical to ``litestream restore``, with the identity
from the replica's ``age.identities`` or from ``$RESTORABLE_AGE_IDENTITIES`` (an app that only
writes needs nothing but the recipient). A missing or wrong identity is a config error (exit 3)
naming what to set, never "corrupt"; the identity never appears in any output.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyrage
import pytest
import yaml
from pyrage import x25519

from lib.errors import ConfigError, CorruptObject
from lib.litestream.v3 import age
from lib.report.scrub import Scrubber
from tests.support import restorable_env, run_job
from tests.support.litestream import V3
from tests.support.replicas import BuiltReplica, build_replica, read_object, replica_listing, write_object

IDENTITY = x25519.Identity.generate()
RECIPIENT = str(IDENTITY.to_public())
SECRET = str(IDENTITY)

@pytest.fixture(scope="module")
def age_replica(tmp_path_factory) -> BuiltReplica:
    return build_replica(V3, "file", tmp_path_factory.mktemp("v3-age"),
                         extra_replica_config={"age": {"identities": [SECRET], "recipients": [RECIPIENT]}})


@pytest.fixture(scope="module")
def age_s3_replica(tmp_path_factory, s3_server) -> BuiltReplica:
    return build_replica(V3, "s3", tmp_path_factory.mktemp("v3-age-s3"), s3=s3_server,
                         extra_replica_config={"age": {"identities": [SECRET], "recipients": [RECIPIENT]}})


def _config(replica: BuiltReplica, path: Path, age_block: dict | None) -> Path:
    """The replica's litestream.yml with its ``age:`` block replaced by ``age_block`` (None: removed)."""
    document = yaml.safe_load(replica.config_path.read_text())
    entry = document["dbs"][0]["replicas"][0]
    entry.pop("age", None)
    if age_block is not None:
        entry["age"] = age_block
    path.write_text(yaml.safe_dump(document))
    return path


def _env(replica: BuiltReplica, extra: dict | None = None) -> dict:
    env = restorable_env(replica.s3.credentials_env() if replica.s3 else None)
    env.update(extra or {})
    return env


def _assert_secret_absent(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and SECRET.lower() not in text.lower()


@pytest.mark.slow
def test_every_object_litestream_wrote_is_age_over_lz4(age_replica):
    keys = age.parse_identities([SECRET], "test")
    listing = replica_listing(age_replica)
    assert listing and all(key.endswith(".lz4") for key in listing)
    for key in listing:
        data = read_object(age_replica, key)
        assert age.is_encrypted(data)
        assert age.decrypt_whole(key, data, keys)[:4] == b"\x04\x22\x4d\x18"
        streamed = b"".join(age.decrypt_chunks(key, iter([data[i:i + 777] for i in range(0, len(data), 777)]), keys))
        assert streamed == age.decrypt_whole(key, data, keys)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "s3"])
def test_restore_is_byte_identical_to_litestream_restore(kind, request, tmp_path):
    replica = request.getfixturevalue("age_replica" if kind == "file" else "age_s3_replica")
    out = tmp_path / "restored.db"
    proc = run_job("jobs.restore", "--config", replica.config_path, "--db", replica.db_path, "-o", out, "--sha256",
                   env=_env(replica))
    assert proc.returncode == 0, proc.stderr
    assert age_sha(out) == replica.reference_sha256
    _assert_secret_absent(proc.stdout, proc.stderr)


def age_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_verify_with_the_identity_from_the_environment_only(age_replica, tmp_path):
    """The app's config holds only the recipient; the identity comes from RESTORABLE_AGE_IDENTITIES."""
    config = _config(age_replica, tmp_path / "litestream.yml", {"recipients": [RECIPIENT]})
    proc = run_job("jobs.verify", "--config", config, "--json", "--drill", "none",
                   env=_env(age_replica, {age.IDENTITY_VAR: f"# restorable's copy\n{SECRET}\n"}))
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["databases"][0]["restored"]["sha256"] == age_replica.reference_sha256
    _assert_secret_absent(proc.stdout, proc.stderr)


@pytest.mark.slow
def test_print_config_masks_the_identity(age_replica):
    proc = run_job("jobs.verify", "--config", age_replica.config_path, "--print-config", env=_env(age_replica))
    assert proc.returncode == 0, proc.stderr
    assert "age" in proc.stdout and RECIPIENT in proc.stdout
    _assert_secret_absent(proc.stdout, proc.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("age_block, env_identity, expected", [
    ({"recipients": [RECIPIENT]}, None, "age.identities"),
    (None, None, "RESTORABLE_AGE_IDENTITIES"),
    ({"identities": [str(x25519.Identity.generate())], "recipients": [RECIPIENT]}, None, "another key"),
    ({"recipients": [RECIPIENT]}, str(x25519.Identity.generate()), "another key"),
], ids=["recipients-only", "no-age-block", "wrong-identity", "wrong-env-identity"])
def test_a_missing_or_wrong_identity_is_a_config_error_not_corruption(age_replica, tmp_path, age_block,
                                                                       env_identity, expected):
    config = _config(age_replica, tmp_path / "litestream.yml", age_block)
    extra = {age.IDENTITY_VAR: env_identity} if env_identity else {}
    proc = run_job("jobs.verify", "--config", config, "--json", env=_env(age_replica, extra))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert expected in proc.stderr and "corrupt" not in (proc.stdout + proc.stderr).lower()
    assert "Traceback" not in proc.stderr
    _assert_secret_absent(proc.stdout, proc.stderr)


@pytest.mark.slow
def test_a_damaged_encrypted_object_is_corrupt(age_replica, clone):
    damaged = clone(age_replica)
    key = max((k for k in replica_listing(damaged) if "/wal/" in k))
    data = bytearray(read_object(damaged, key))
    data[-20] ^= 0xFF  # inside the last STREAM chunk: its tag no longer verifies
    write_object(damaged, key, bytes(data))
    proc = run_job("jobs.verify", "--config", damaged.config_path, "--json", env=_env(damaged))
    report = json.loads(proc.stdout)
    findings = report["databases"][0]["findings"]
    assert proc.returncode == 1, proc.stdout
    assert any(f["kind"] == "corrupt_object" and key.split("/")[-1] in (f.get("object") or "") for f in findings)
    _assert_secret_absent(proc.stdout, proc.stderr)


def test_identity_parsing_names_the_key_and_never_the_value():
    bad = "AGE-SECRET-KEY-1NOTAKEY"
    with pytest.raises(ConfigError, match=r"dbs\[0\]\.replicas\[0\]\.age\.identities: line 1") as info:
        age.parse_identities([bad], "litestream.yml: dbs[0].replicas[0].age.identities")
    assert bad not in str(info.value)
    with pytest.raises(ConfigError, match="holds no age identity"):
        age.parse_identities(["# only a comment\n"], "x")
    keys = age.parse_identities([f"# created: today\n{SECRET}\n\n"], "x")
    assert keys.texts == (SECRET,) and SECRET not in repr(keys)


def test_truncated_ciphertext_is_corrupt_not_a_key_problem():
    keys = age.parse_identities([SECRET], "x")
    data = pyrage.encrypt(b"\x04\x22\x4d\x18" + bytes(100_000), [IDENTITY.to_public()])
    with pytest.raises(CorruptObject):
        age.decrypt_whole("k", data[:-10], keys)
    with pytest.raises(CorruptObject):
        b"".join(age.decrypt_chunks("k", iter([data[:-10]]), keys))
    with pytest.raises(ConfigError, match="no age identity is configured"):
        age.decrypt_whole("k", data, None)


def test_an_identity_is_scrubbed_from_any_text_even_when_not_configured():
    text = f"decrypting with {SECRET} failed; also {SECRET.lower()}"
    assert Scrubber().text(text) == "decrypting with [redacted] failed; also [redacted]"
