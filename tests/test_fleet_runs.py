"""Fleet runs over a ``dir:`` replica written by litestream 0.5.17: shards, samples, the time
budget and archived tenants, all through ``python -m jobs.verify``."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from lib.fleet.select import Shard
from tests.support.faultproxy import delay
from tests.test_fleet_dir import TENANTS, _config, _statuses, _verify, fleet  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def _file_copy(fleet, tmp_path: Path) -> Path:  # noqa: F811
    """A private copy of the file replica: history is written beside each tenant's folder."""
    root = tmp_path / "replica"
    shutil.copytree(fleet["file_root"], root)
    return _config(tmp_path, fleet["data"], {"type": "file", "path": str(root)})


def _age(root: Path, rels, when: float | None) -> None:
    """Set the mtime of every LTX file of the tenants ``rels`` to ``when`` (None: now)."""
    for rel in rels:
        for ltx in (root / rel).rglob("*.ltx"):
            os.utime(ltx, None if when is None else (when, when))


def test_shard_partition_is_stable_and_complete():
    names = [(f"tenant-{i}.db", "s3") for i in range(1000)]
    for count in (1, 2, 3, 7):
        owners = [[i for i in range(count) if Shard(i, count).holds(db, rep)] for db, rep in names]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(1 for o in owners if o == [i]) for i in range(count)]
        assert min(sizes) > 1000 / count * 0.8


@pytest.mark.parametrize("count", [2, 3])
def test_shards_together_verify_every_target_exactly_once(fleet, tmp_path, count):  # noqa: F811
    config = _file_copy(fleet, tmp_path)
    seen: list[str] = []
    for index in range(count):
        code, report = _verify(config, "--shard", f"{index}/{count}")
        assert code == 0
        seen += list(_statuses(report))
    assert sorted(seen) == sorted(TENANTS)


def test_shard_from_the_environment_and_a_bad_one(fleet, tmp_path):  # noqa: F811
    from tests.support import restorable_env, run_job

    config = _file_copy(fleet, tmp_path)
    bad = run_job("jobs.verify", "--config", config, env=restorable_env({"RESTORABLE_SHARD": "3/3"}))
    assert bad.returncode == 3
    assert "RESTORABLE_SHARD" in bad.stderr and "0 to 2" in bad.stderr and "Traceback" not in bad.stderr


def test_sample_verifies_the_oldest_verified_first(fleet, tmp_path):  # noqa: F811
    config = _file_copy(fleet, tmp_path)
    order = []
    for _ in range(len(TENANTS)):
        code, report = _verify(config, "--sample", "1")
        assert code == 0
        order += list(_statuses(report))
    assert sorted(order) == sorted(TENANTS)  # every target within ceil(3 / 1) runs
    code, report = _verify(config, "--sample", "34%")  # 34% of 3, rounded up: 2
    assert list(_statuses(report)) == order[:2]


def test_budget_leaves_unstarted_targets_not_verified_and_first_next_run(fleet, tmp_path, proxy):  # noqa: F811
    replica = {**fleet["s3"], "endpoint": proxy.endpoint}
    config = _config(tmp_path, fleet["data"], replica)
    proxy.set_rules([delay(120, method="GET", key=r"\.ltx$")])
    code, report = _verify(config, "--parallel", "1", "--max-runtime", "4s")
    statuses = _statuses(report)
    hung = [db for db, status in statuses.items() if status == "inconclusive"]
    assert len(hung) == 1, statuses
    rest = {db: r for db, r in ((r["db"], r) for r in report["databases"]) if db not in hung}
    assert {r["status"] for r in rest.values()} == {"warning"}
    assert all(f["kind"] == "not_verified" for r in rest.values() for f in r["findings"])
    assert code == 2  # the hung one, not the unstarted ones
    proxy.clear()
    code, report = _verify(config, "--sample", "2")
    assert sorted(_statuses(report)) == sorted(rest)  # never verified: they go first
    assert code == 0


def test_a_run_that_verified_nothing_is_inconclusive():
    from lib.fleet.budget import not_verified, nothing_verified
    from lib.report.model import DbResult, Report

    class _Replica:
        def describe(self):
            return "s3://b/t"

    results = [DbResult(db=f"t{i}.db", replica="s3", findings=[not_verified(_Replica())]) for i in range(3)]
    nothing_verified(results)
    assert Report(results=results).exit_code() == 2


def test_long_idle_tenants_are_archived_but_not_a_quiet_folder(fleet, tmp_path):  # noqa: F811
    config = _file_copy(fleet, tmp_path)
    root = tmp_path / "replica"
    old = time.time() - 2 * 86400
    _age(root, ("team-a/beta.db", "team-b/deep/gamma.db"), old)
    _age(root, ("alpha.db",), None)
    code, report = _verify(config, "--max-age", "1h")
    assert _statuses(report)["team-a/beta.db"] == "failed" and code == 1
    code, report = _verify(config, "--max-age", "1h", "--archive-after", "1s")
    assert _statuses(report) == {"alpha.db": "ok", "team-a/beta.db": "warning", "team-b/deep/gamma.db": "warning"}
    kinds = {f["kind"] for r in report["databases"] for f in r["findings"]}
    assert "archived" in kinds and code == 0
    _age(root, ("alpha.db",), old)
    code, report = _verify(config, "--max-age", "1h", "--archive-after", "1s")
    assert set(_statuses(report).values()) == {"failed"} and code == 1  # every tenant idle: Litestream is down


def test_archive_after_per_tenant_block_over_the_runs(fleet, tmp_path):  # noqa: F811
    """restorable.yml's archive-after (a glob's block, a tenant's own ``off``, the folder's
    block) decides for its tenants, with or without the run's --archive-after."""
    import yaml

    config = _file_copy(fleet, tmp_path)
    root = tmp_path / "replica"
    old = time.time() - 2 * 86400
    _age(root, ("team-a/beta.db", "team-b/deep/gamma.db"), old)
    settings = tmp_path / "restorable.yml"
    settings.write_text('dbs:\n  "team-a/*.db": {archive-after: 1d}\n'
                        '  team-b/deep/gamma.db: {archive-after: off}\n')  # YAML's bare off is false
    for flags in ((), ("--archive-after", "1s")):
        code, report = _verify(config, "--settings", settings, "--max-age", "1h", *flags)
        assert _statuses(report) == {"alpha.db": "ok", "team-a/beta.db": "warning",
                                     "team-b/deep/gamma.db": "failed"}, flags
        [beta] = [r for r in report["databases"] if r["db"] == "team-a/beta.db"]
        assert [f["kind"] for f in beta["findings"] if f["severity"] != "info"] == ["archived"]
        assert code == 1
    settings.write_text(yaml.safe_dump({"dbs": {str(fleet["data"]): {"archive-after": "3d"}}}))
    code, report = _verify(config, "--settings", settings, "--max-age", "1h", "--archive-after", "1s")
    assert _statuses(report) == {"alpha.db": "ok", "team-a/beta.db": "failed", "team-b/deep/gamma.db": "failed"}
