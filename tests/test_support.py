"""The test fixtures produce what they claim: a real S3 server, real binaries, real replicas.

These parse replica layouts with their own small regexes, independent of ``lib``, so a
broken fixture fails here loudly rather than as a puzzling failure in a restore test.
"""
from __future__ import annotations

import re
import sqlite3
import urllib.request
from collections import defaultdict
from pathlib import Path

import lz4.frame
import pytest
import yaml

from tests.support import REPO_ROOT, restorable_env, run_job
from tests.support.litestream import V3, V5, LitestreamError, litestream_bin, run_litestream
from tests.support.replicas import (
    BuiltReplica,
    database_row_counts,
    delete_object,
    integrity_check,
    litestream_restore,
    read_object,
    replica_listing,
    sha256_file,
)

V3_SNAPSHOT = re.compile(r"^generations/([0-9a-f]{16})/snapshots/([0-9a-f]{8})\.snapshot\.lz4$")
V3_SEGMENT = re.compile(r"^generations/([0-9a-f]{16})/wal/([0-9a-f]{8})_([0-9a-f]{8})\.wal\.lz4$")
V5_FILE_LTX = re.compile(r"^ltx/(\d)/([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")
V5_S3_LTX = re.compile(r"^([0-9a-f]{4})/([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")

ALL_REPLICAS = [
    "v3_file_replica", "v3_s3_replica", "v3_file_replica_512", "v3_file_replica_65536",
    "v3_multigen_file_replica", "v5_file_replica", "v5_s3_replica",
]
V3_REPLICAS = [name for name in ALL_REPLICAS if name.startswith("v3")]


def v3_layout(replica: BuiltReplica) -> dict[str, dict]:
    """``{generation: {"snapshots": [index], "wal": {index: [offset]}}}``; fails on a foreign key."""
    gens: dict[str, dict] = defaultdict(lambda: {"snapshots": [], "wal": defaultdict(list)})
    for key in replica_listing(replica):
        if m := V3_SNAPSHOT.match(key):
            gens[m[1]]["snapshots"].append(int(m[2], 16))
        elif m := V3_SEGMENT.match(key):
            gens[m[1]]["wal"][int(m[2], 16)].append(int(m[3], 16))
        else:
            pytest.fail(f"unexpected key {key!r} in a v0.3 replica")
    return gens


def v5_layout(replica: BuiltReplica) -> dict[int, list[tuple[int, int]]]:
    """``{level: [(min_txid, max_txid)]}`` of a v0.5 replica; fails on a foreign key."""
    pattern = V5_FILE_LTX if replica.kind == "file" else V5_S3_LTX
    levels: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for key in replica_listing(replica):
        m = pattern.match(key)
        assert m, f"unexpected key {key!r} in a v0.5 {replica.kind} replica"
        level = int(m[1]) if replica.kind == "file" else int(m[1], 16)
        levels[level].append((int(m[2], 16), int(m[3], 16)))
    return {level: sorted(files) for level, files in levels.items()}


# ----------------------------------------------------------------------- S3 server
def test_s3_server_serves_real_http_on_loopback(s3_server):
    assert s3_server.endpoint.startswith("http://127.0.0.1:")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(s3_server.endpoint + "/", timeout=5) as resp:
        assert resp.status == 200
        assert b"ListAllMyBucketsResult" in resp.read()


def test_s3_server_buckets_are_fresh_and_copy_prefix_copies_a_directory(s3_server):
    src, dst = s3_server.make_bucket("src"), s3_server.make_bucket("dst")
    assert src != dst
    client = s3_server.client()
    assert client.list_objects_v2(Bucket=dst).get("KeyCount") == 0
    client.put_object(Bucket=src, Key="a/b/one", Body=b"1", Metadata={"litestream-timestamp": "t"})
    client.put_object(Bucket=src, Key="a/b/deep/two", Body=b"22")
    client.put_object(Bucket=src, Key="a/bc/other", Body=b"x")  # sibling prefix, not under a/b/

    s3_server.copy_prefix(src, "a/b", dst, "z")

    assert s3_server.list_keys(dst) == ["z/deep/two", "z/one"]
    assert client.get_object(Bucket=dst, Key="z/deep/two")["Body"].read() == b"22"
    assert client.head_object(Bucket=dst, Key="z/one")["Metadata"] == {"litestream-timestamp": "t"}


# ------------------------------------------------------------------- binaries, jobs
@pytest.mark.parametrize("version, expected", [(V3, "v0.3.13"), (V5, "0.5.17")])
def test_litestream_binaries_are_the_pinned_versions(version, expected):
    assert litestream_bin(version).is_file()
    assert run_litestream(version, "version").stdout.strip() == expected


def test_litestream_05_runs_with_aws_ca_bundle_stripped(v5_s3_replica, monkeypatch, tmp_path):
    # 0.5.17 cannot even build its S3 client when AWS_CA_BUNDLE is set; our runner drops it.
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    args = ("ltx", "-config", v5_s3_replica.config_path, v5_s3_replica.db_path)
    assert "0000000000000001" in run_litestream(V5, *args).stdout
    with pytest.raises(LitestreamError, match="RootCAs"):
        run_litestream(V5, *args, env={"AWS_CA_BUNDLE": str(bundle)})


def test_run_job_runs_a_module_from_the_repo_root_with_a_clean_env(monkeypatch):
    monkeypatch.setenv("SENTRY_DSN", "https://key@sentry.invalid/1")
    env = restorable_env()
    assert "SENTRY_DSN" not in env
    assert str(REPO_ROOT) in env["PYTHONPATH"].split(":")

    proc = run_job("tests.support.litestream", V3, env=env)

    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == litestream_bin(V3)


# --------------------------------------------------------------------- v0.3 shapes
def test_v3_file_replica_has_several_indexes_and_multi_segment_indexes(v3_file_replica):
    gens = v3_layout(v3_file_replica)
    assert list(gens) == v3_file_replica.generations and len(gens) == 1
    (gen,) = gens.values()
    assert gen["snapshots"] == [0]
    indexes = sorted(gen["wal"])
    assert indexes == list(range(len(indexes))) and len(indexes) >= 3
    assert all(offsets[0] == 0 for offsets in gen["wal"].values())
    assert max(len(offsets) for offsets in gen["wal"].values()) > 1


@pytest.mark.parametrize("name", V3_REPLICAS)
def test_v3_objects_are_lz4_frames_of_sqlite_data(name, request):
    replica = request.getfixturevalue(name)
    gen = replica.generations[-1]
    layout = v3_layout(replica)[gen]
    snapshot = lz4.frame.decompress(read_object(replica, f"generations/{gen}/snapshots/{min(layout['snapshots']):08x}.snapshot.lz4"))
    assert snapshot[:16] == b"SQLite format 3\x00"
    header_page_size = int.from_bytes(snapshot[16:18], "big")
    assert (65536 if header_page_size == 1 else header_page_size) == replica.page_size
    assert len(snapshot) % replica.page_size == 0
    wal = lz4.frame.decompress(read_object(replica, f"generations/{gen}/wal/{max(layout['wal']):08x}_00000000.wal.lz4"))
    assert int.from_bytes(wal[:4], "big") in (0x377F0682, 0x377F0683)  # WAL header magic
    assert int.from_bytes(wal[8:12], "big") == replica.page_size


def test_v3_s3_replica_objects_really_are_in_the_moto_bucket(v3_s3_replica):
    replica = v3_s3_replica
    # Only the replica's own prefix: jobs under test may keep their own objects beside it.
    keys = replica.s3.list_keys(replica.bucket, replica.prefix + "/")
    assert keys and all(k.startswith(f"{replica.prefix}/generations/") for k in keys)
    assert sorted(f"{replica.prefix}/{k}" for k in replica_listing(replica)) == keys
    (gen,) = v3_layout(replica).values()
    assert gen["snapshots"] == [0] and len(gen["wal"]) >= 3


def test_v3_multigen_replica_has_two_generations_each_restorable(v3_multigen_file_replica, tmp_path):
    replica = v3_multigen_file_replica
    gens = v3_layout(replica)
    assert len(gens) == 2 and set(gens) == set(replica.generations)
    assert all(g["snapshots"] for g in gens.values())
    older, newer = replica.generations

    latest = database_row_counts(litestream_restore(replica, tmp_path / "latest.db", generation=newer))
    first = database_row_counts(litestream_restore(replica, tmp_path / "first.db", generation=older))

    assert latest == replica.row_counts
    # The first generation ends with its last batch plus the tail write.
    last_of_first = replica.checkpoints[len(replica.checkpoints) // 2 - 1][1]
    assert first == {**last_of_first, "events": last_of_first["events"] + 1}
    assert first["items"] < latest["items"]


# --------------------------------------------------------------------- v0.5 shapes
@pytest.mark.parametrize("name", ["v5_file_replica", "v5_s3_replica"])
def test_v5_replica_has_contiguous_l0_a_compaction_and_a_snapshot(name, request):
    replica = request.getfixturevalue(name)
    levels = v5_layout(replica)
    l0 = levels[0]
    assert all(lo == hi for lo, hi in l0)
    assert [lo for lo, _ in l0] == list(range(1, len(l0) + 1))
    assert levels.get(1), "no L1 compaction"
    assert levels.get(9) and all(lo == 1 for lo, _ in levels[9]), "no L9 snapshot"
    first = read_object(replica, ("ltx/0/" if replica.kind == "file" else "0000/") + f"{1:016x}-{1:016x}.ltx")
    assert first[:4] == b"LTX1"
    if replica.kind == "s3":
        keys = replica.s3.list_keys(replica.bucket, replica.prefix + "/")
        pattern = re.compile(re.escape(replica.prefix) + r"/000[0-9]/[0-9a-f]{16}-[0-9a-f]{16}\.ltx")
        assert keys and all(pattern.fullmatch(k) for k in keys), keys


# ------------------------------------------------------------ restores match the data
@pytest.mark.parametrize("name", ALL_REPLICAS)
def test_litestream_restore_reproduces_the_reference(name, request, tmp_path):
    replica = request.getfixturevalue(name)
    out = litestream_restore(replica, tmp_path / "restored.db")
    assert integrity_check(out) == ["ok"]
    assert database_row_counts(out) == replica.row_counts
    assert replica.row_counts["items"] > 0 and set(replica.row_counts) == {"items", "events"}
    assert sha256_file(out) == replica.reference_sha256
    con = sqlite3.connect(f"{out.as_uri()}?immutable=1", uri=True)
    try:
        assert con.execute("PRAGMA page_size").fetchone()[0] == replica.page_size
    finally:
        con.close()


@pytest.mark.parametrize("name", ALL_REPLICAS)
def test_each_checkpoint_restores_to_its_row_counts(name, request, tmp_path):
    replica = request.getfixturevalue(name)
    assert len(replica.checkpoints) >= 4
    times = [t for t, _ in replica.checkpoints]
    assert times == sorted(times)
    for i, (when, counts) in enumerate(replica.checkpoints):
        out = litestream_restore(replica, tmp_path / f"at-{i}.db", timestamp=when)
        assert database_row_counts(out) == counts, f"checkpoint {i} at {when.isoformat()}"


# ------------------------------------------------------------------------- clones
@pytest.mark.parametrize("name", ["v3_file_replica", "v3_s3_replica", "v5_file_replica", "v5_s3_replica"])
def test_clone_is_an_independent_copy(name, request, clone, tmp_path):
    original = request.getfixturevalue(name)
    copy = clone(original)
    assert copy.config_path != original.config_path
    assert (copy.replica_dir, copy.bucket) != (original.replica_dir, original.bucket)
    assert replica_listing(copy) == replica_listing(original)
    cfg = yaml.safe_load(copy.config_path.read_text())["dbs"][0]
    replica_cfg = cfg["replicas"][0] if "replicas" in cfg else cfg["replica"]
    assert replica_cfg.get("bucket") == copy.bucket or replica_cfg["path"] == str(copy.replica_dir)
    assert sha256_file(litestream_restore(copy, tmp_path / "copy.db")) == original.reference_sha256

    # Damage the copy: drop its snapshot(s); the original must still restore.
    snapshots = [k for k in replica_listing(copy) if "/snapshots/" in k or k.startswith(("ltx/9/", "0009/"))]
    assert snapshots
    for key in snapshots:
        delete_object(copy, key)
    assert set(replica_listing(original)) - set(replica_listing(copy)) == set(snapshots)
    if original.is_v3:
        with pytest.raises(LitestreamError, match="no snapshots available"):
            litestream_restore(copy, tmp_path / "broken.db")
    assert sha256_file(litestream_restore(original, tmp_path / "again.db")) == original.reference_sha256
