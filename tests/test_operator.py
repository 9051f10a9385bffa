"""Operator experience: every replica gets its own verdict; `jobs.status` agrees with litestream's listings."""
from __future__ import annotations

import json
from collections import defaultdict

import yaml

from tests.support import run_job
from tests.support.litestream import run_litestream
from tests.support.replicas import delete_object, replica_listing


def two_replica_config(tmp_path, good, bad, missing_dir=None):
    replicas = [{"name": "good", "type": "file", "path": str(good.replica_dir)},
                {"name": "bad", "type": "file", "path": str(bad.replica_dir)}]
    if missing_dir is not None:
        replicas.append({"name": "gone", "type": "file", "path": str(missing_dir)})
    path = tmp_path / "litestream.yml"
    path.write_text(yaml.safe_dump({"dbs": [{"path": str(good.db_path), "replicas": replicas}]}))
    return path


def middle_segment(replica) -> str:
    keys = sorted(k for k in replica_listing(replica) if "/wal/" in k and not k.endswith("_00000000.wal.lz4"))
    return keys[len(keys) // 2]


def test_each_replica_has_its_verdict_and_the_database_takes_the_worst(v3_file_replica, clone, tmp_path,
                                                                        restorable_env):
    good, bad = clone(v3_file_replica), clone(v3_file_replica)
    delete_object(bad, middle_segment(bad))
    (tmp_path / "never-written").mkdir()  # empty: no backups (a missing folder is a config error)
    config = two_replica_config(tmp_path, good, bad, missing_dir=tmp_path / "never-written")
    proc = run_job("jobs.verify", "--config", config, "--json", "--max-age", "7d", env=restorable_env)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    verdicts = {d["replica"]: d for d in report["databases"]}
    assert verdicts["good"]["status"] == "ok"
    assert verdicts["good"]["restored"]["sha256"] == v3_file_replica.reference_sha256
    assert verdicts["bad"]["status"] == "failed"
    assert {f["kind"] for f in verdicts["bad"]["findings"]} == {"wal_gap"}
    assert [f["kind"] for f in verdicts["gone"]["findings"]] == ["no_backups"]
    assert report["database_statuses"] == {str(good.db_path): "failed"}

    only_good = run_job("jobs.verify", "--config", config, "--replica", "good", "--max-age", "7d",
                        env=restorable_env)
    assert only_good.returncode == 0, only_good.stdout + only_good.stderr
    assert "replica=bad" not in only_good.stdout


def status_json(replica, env) -> dict:
    proc = run_job("jobs.status", "--config", replica.config_path, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)["replicas"]
    return entry


def test_status_of_a_v03_replica_matches_litestream_generations(v3_multigen_file_replica, restorable_env):
    replica = v3_multigen_file_replica
    theirs = run_litestream(replica.version, "generations", "-config", replica.config_path, replica.db_path).stdout
    rows = [line.split() for line in theirs.strip().splitlines()[1:]]
    expected = {gen: (start, end) for _name, gen, _lag, start, end in rows}
    ours = status_json(replica, restorable_env)
    assert ours["format"] == "v0.3"
    got = {r["generation"]: (r["start"][:19] + "Z", r["end"][:19] + "Z") for r in ours["rows"]}
    assert got == expected
    assert ours["restore_point"].startswith(replica.generations[-1] + "/")
    assert ours["bytes"] == sum(replica_listing(replica).values())
    assert ours["monthly_cost_usd"] >= 0


def test_status_of_a_v05_replica_matches_litestream_ltx(v5_s3_replica, restorable_env):
    replica = v5_s3_replica
    env = {"AWS_ACCESS_KEY_ID": replica.s3.access_key_id, "AWS_SECRET_ACCESS_KEY": replica.s3.secret_access_key}
    theirs = json.loads(run_litestream(replica.version, "ltx", "-config", replica.config_path, "-level", "all",
                                       "-json", replica.db_path, env=env).stdout)
    levels = defaultdict(list)
    for f in theirs:
        levels[f["level"]].append(f)
    expected = {lvl: (len(fs), min(f["min_txid"] for f in fs), max(f["max_txid"] for f in fs),
                      sum(f["size"] for f in fs)) for lvl, fs in levels.items()}
    ours = status_json(replica, restorable_env)
    assert ours["format"] == "v0.5"
    got = {r["level"]: (r["files"], r["min_txid"], r["max_txid"], r["bytes"]) for r in ours["rows"]}
    assert got == expected
    assert ours["restore_point"] == max(f["max_txid"] for f in theirs)
