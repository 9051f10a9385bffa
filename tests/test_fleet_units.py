"""dir: entries in litestream.yml, Go's glob rules, replica paths, and the prelisted store (no replica needed)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lib.config.directories import DirSpec, go_match, tenant_replica_path
from lib.config.litestream_yml import parse
from lib.config.model import ReplicaConfig
from lib.errors import ConfigError, ObjectNotFound
from lib.fleet.prelisted import Prelisting, PrelistedStore
from lib.fleet.sizing import TARGET_MEMORY_BYTES, _cgroup_cpu_quota, _cgroup_memory_left, _meminfo_available, \
    default_parallel
from lib.storage.base import ObjectInfo
from lib.storage.local import LocalStore

NOW = datetime(2026, 12, 3, tzinfo=timezone.utc)


def _yaml(entry: str) -> str:
    return f"dbs:\n  - {entry}\n    replica:\n      url: s3://bucket/tenants\n"


def test_a_dir_entry_is_a_template_with_its_keys():
    config = parse(_yaml("dir: /var/lib/tenants\n    pattern: '*.db'\n    recursive: true\n    watch: true"), {})
    [db] = config.dbs
    assert db.directory == DirSpec("/var/lib/tenants", "*.db", True, True, "/var/lib/tenants")
    assert db.replicas[0].path == "tenants"


@pytest.mark.parametrize("entry, words", [
    ("dir: /var/lib/tenants", ["pattern", "required"]),
    ("dir: /var/lib/tenants\n    path: /data/app.db\n    pattern: '*.db'", ["path:", "dir:"]),
    ("dir: /var/lib/tenants\n    pattern: '[a-'", ["pattern", "glob"]),
])
def test_bad_dir_entries_are_one_line_config_errors(entry, words):
    with pytest.raises(ConfigError) as caught:
        parse(_yaml(entry), {})
    assert all(w in str(caught.value) for w in words) and "\n" not in str(caught.value)


def test_unset_variable_in_dir_is_an_error_like_path():
    with pytest.raises(ConfigError, match="TENANTS_DIR"):
        parse(_yaml("dir: $TENANTS_DIR\n    pattern: '*.db'"), {})


@pytest.mark.parametrize("pattern, name, matched", [
    ("*.db", "a.db", True), ("*.db", "a.sqlite", False), ("tenant-?.db", "tenant-1.db", True),
    ("[^x]*.db", "a.db", True), ("[^x]*.db", "x.db", False), ("\\*.db", "*.db", True), ("\\*.db", "a.db", False),
])
def test_go_glob(pattern, name, matched):
    assert go_match(pattern, name) is matched


def test_recursive_false_keeps_only_top_level_tenants():
    spec = DirSpec("/d", "*.db", recursive=False)
    assert spec.matches("a.db") and not spec.matches("team/a.db")
    assert DirSpec("/d", "*.db", recursive=True).matches("team/deep/a.db")


@pytest.mark.parametrize("kind, path, expected", [
    ("s3", "tenants", "tenants/team/a.db"), ("s3", "", "team/a.db"), ("s3", ".", "team/a.db"),
    ("s3", "/tenants/", "/tenants/team/a.db"), ("file", "/backups", "/backups/team/a.db"),
])
def test_tenant_replica_path_as_litestream_joins_it(kind, path, expected):
    replica = ReplicaConfig(name=kind, type=kind, path=path, bucket="b" if kind == "s3" else None)
    assert tenant_replica_path(replica, "team/a.db") == expected


def test_prelisting_serves_each_store_once_and_nothing_after_a_vanished_object(tmp_path):
    (tmp_path / "ltx" / "0").mkdir(parents=True)
    real = tmp_path / "ltx" / "0" / "0000000000000001-0000000000000001.ltx"
    real.write_bytes(b"x")
    gone = ObjectInfo("ltx/0/0000000000000002-0000000000000002.ltx", 1, NOW)
    prelisting = Prelisting([gone], NOW, ["ltx/", "generations/"])
    first = PrelistedStore(LocalStore(tmp_path), prelisting)
    assert first.list("ltx/") == [gone] and first.server_now() == NOW
    assert [o.key for o in first.list("ltx/")] == ["ltx/0/0000000000000001-0000000000000001.ltx"]  # re-listing
    assert first.list("history/") == []  # never answered from the prelisting
    again = PrelistedStore(LocalStore(tmp_path), prelisting)  # the re-listing made it stale for everyone
    assert [o.key for o in again.list("ltx/")] == ["ltx/0/0000000000000001-0000000000000001.ltx"]


def test_a_vanished_object_makes_every_later_listing_real(tmp_path):
    (tmp_path / "ltx").mkdir()
    gone = ObjectInfo("ltx/0/0000000000000002-0000000000000002.ltx", 1, NOW)
    prelisting = Prelisting([gone], NOW, ["ltx/"])
    first = PrelistedStore(LocalStore(tmp_path), prelisting)
    second = PrelistedStore(LocalStore(tmp_path), prelisting)
    assert first.list("ltx/") == [gone] and second.list("ltx/") == [gone]  # each store once
    with pytest.raises(ObjectNotFound):
        first.open("history/latest.json")  # not in the listing: says nothing about it
    assert PrelistedStore(LocalStore(tmp_path), prelisting).list("ltx/") == [gone]
    with pytest.raises(ObjectNotFound):
        second.open(gone.key)
    assert PrelistedStore(LocalStore(tmp_path), prelisting).list("ltx/") == []


def test_a_relisting_that_matches_keeps_the_prelisting_for_other_stores(tmp_path):
    (tmp_path / "ltx" / "0").mkdir(parents=True)
    path = tmp_path / "ltx" / "0" / "0000000000000001-0000000000000001.ltx"
    path.write_bytes(b"x")
    [listed] = LocalStore(tmp_path).list("ltx/")
    prelisting = Prelisting([listed], NOW, ["ltx/"])
    first = PrelistedStore(LocalStore(tmp_path), prelisting)
    assert first.list("ltx/") == [listed] and first.list("ltx/") == [listed]  # the second one is real
    path.unlink()
    assert PrelistedStore(LocalStore(tmp_path), prelisting).list("ltx/") == [listed]  # still served


def test_default_parallel_is_one_per_cpu_bounded_by_memory():
    assert default_parallel(2, 24 << 30) == 2  # this box: the CPUs decide
    assert default_parallel(8, 3 * TARGET_MEMORY_BYTES + 1) == 3  # a small container on a big host: memory decides
    assert default_parallel(4, 100 << 20) == 1  # never below one
    assert default_parallel(4, None) == 4  # memory unknown: the CPUs


def test_container_limits_are_read_from_cgroup_files():
    assert _cgroup_cpu_quota("150000 100000\n") == 2  # --cpus 1.5: two threads can still run
    assert _cgroup_cpu_quota("max 100000\n") is None and _cgroup_cpu_quota("-1 100000") is None
    assert _cgroup_cpu_quota(None) is None
    assert _cgroup_memory_left("1073741824\n", "268435456\n") == 768 << 20
    assert _cgroup_memory_left("max\n", "5") is None
    assert _meminfo_available("MemTotal: 100 kB\nMemAvailable:    2048 kB\n") == 2 << 20
