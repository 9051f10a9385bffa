"""Conformance with Litestream's own test data (../shared/peer-fixtures/, see its README.md and MANIFEST.json).

Every fixture either restores as Litestream's own Go tests expect (the same bytes), or
restorable reports a finding where the real litestream binary silently returns a damaged or
truncated database. Each fixture's row in ``EXPECTED`` says which, and is checked against
restorable (``jobs.verify --json``) and against the real binary (``litestream restore``).
A fixture added to the manifest fails ``test_every_fixture_is_classified`` until it gets a row.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.support import REPO_ROOT, restorable_env
from tests.support.litestream import V3, V5, run_litestream

# Read-only, beside the checkout (CI has a copy of shared/ there too); copied before use.
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "peer-fixtures"
MANIFEST = json.loads((FIXTURES / "MANIFEST.json").read_text())
BY_NAME = {f["name"]: f for f in MANIFEST["fixtures"]}

EMPTY_DB = "14f2ffb8d08da06a8e06bf002aef305d7f5ad26c76afadce4c1a4f87a52d74de"  # the 1-page snapshot
RESTORE_OK = "b8a2decaed59e8109608a05c6c5014be4e8c2f4c08d598fa6ff89df5623ed5cf"  # testdata/restore/ok/00000002.db


@dataclass(frozen=True)
class Expect:
    """What restorable says (``status``, error/warning ``kinds``, restored ``sha``) and what litestream does.

    ``litestream`` is ``"ok"`` (restores ``sha`` too), ``"silent"`` (exits 0 with the
    ``litestream_sha`` database although restorable reports damage) or ``"error"``.
    """

    status: str
    kinds: frozenset = frozenset()
    sha: str | None = None
    litestream: str = "ok"
    litestream_sha: str | None = None
    generation: str | None = None


def ok(sha, **kw):
    return Expect("ok", sha=sha, **kw)


def failed(*kinds, sha=None, litestream="error", litestream_sha=None):
    return Expect("failed", frozenset(kinds), sha, litestream, litestream_sha)


EXPECTED = {
    "restore-ok": ok(RESTORE_OK),
    "restore-snapshot-only": ok(EMPTY_DB),
    # 0.3.13 skips the nested wal/IIIIIIII/ directories and restores the snapshot alone.
    "restore-ok-nested8": Expect("warning", frozenset({"unknown_objects"}), EMPTY_DB, "silent", EMPTY_DB),
    "restore-ok-nested16": failed("no_backups"),
    "wal-downloader-ok": failed("missing_snapshot"),
    "wal-downloader-ok+snap": ok(RESTORE_OK),
    "wal-downloader-one+snap": ok("95b69453b16c3b20581c8b76770e4aeace445622f908076f9dd412f9c44d79be"),
    "wal-downloader-missing-initial-index+snap": failed("wal_gap"),
    "wal-downloader-missing-middle-index+snap": failed("wal_gap"),
    "wal-downloader-missing-ending-index+snap": ok("76406554c3532f193f48583945be8818ad0d13dcf9dd159373c359c78492d479"),
    "wal-downloader-missing-offset+snap": failed(
        "wal_gap", litestream="silent",
        litestream_sha="628653ca93d26ec4d188f162dd9ad18cc1cf4ec37c58941212388968a67fe637"),
    # Every .lz4 of these three is the compressed empty database: the "WAL segments" hold a page, not a WAL.
    "generation-time-bounds-ok": failed("corrupt_object", litestream="silent", litestream_sha=EMPTY_DB),
    "find-latest-generation-ok": ok(EMPTY_DB, generation="0000000000000001"),
    "max-index-ok": failed("corrupt_object", litestream="silent", litestream_sha=EMPTY_DB),
    # Litestream's own reading: the snapshot is the restore point (FindMaxIndexByGeneration == 1).
    "max-index-snapshot-later-than-wal": Expect("warning", frozenset({"snapshot_ahead"}), EMPTY_DB,
                                                generation="0000000000000000"),
    "ltx-store-0d-L0": failed("missing_snapshot"),
    "ltx-store-0d-L9": failed("corrupt_object"),
    "cmd-restore-replica-url": ok(EMPTY_DB),
    "wal-reader-ok+snap": ok("251688f5628345349360146859f22778e97b16751bdbeb49b57f2e747b7c03e5"),
    # SQLite (and litestream) stop at the first bad frame; restorable stops there too and says so.
    "wal-reader-salt-mismatch+snap": failed("corrupt_object", sha=EMPTY_DB, litestream="silent",
                                            litestream_sha=EMPTY_DB),
    "wal-reader-frame-checksum-mismatch+snap": failed("corrupt_object", sha=EMPTY_DB, litestream="silent",
                                                      litestream_sha=EMPTY_DB),
    "wal-reader-frame-salts+snap": failed(
        "corrupt_object", sha="561fbcba607a0462228ceef2ff00792742e73396d463d9f3bdc4c1270ec87aca",
        litestream="silent", litestream_sha="561fbcba607a0462228ceef2ff00792742e73396d463d9f3bdc4c1270ec87aca"),
}

# Fixtures invoked through their litestream.yml (LITESTREAM_TESTDIR), checked one by one below.
CONFIG_FIXTURES = ("cmd-restore-latest-replica", "cmd-restore-replica-name", "cmd-restore-no-backups")

URL_FIXTURES = sorted(EXPECTED)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_fixture_is_classified():
    assert set(BY_NAME) == set(EXPECTED) | set(CONFIG_FIXTURES)


def test_the_vendored_bytes_are_the_manifests():
    for fixture in MANIFEST["fixtures"]:
        for file in fixture["files"]:
            path = FIXTURES / fixture["name"] / file["dest"]
            assert _sha256(path) == file["sha256"], path


@pytest.fixture(scope="module")
def peers(tmp_path_factory) -> Path:
    """A writable copy of every fixture with the manifest's mtimes applied (git keeps none)."""
    root = tmp_path_factory.mktemp("peers")
    for fixture in MANIFEST["fixtures"]:
        dest = root / fixture["name"]
        shutil.copytree(FIXTURES / fixture["name"], dest)
        for rel, stamp in fixture["mtimes"].items():
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            os.utime(dest / rel, (moment, moment))
    return root


def _verify(args: list[str], cwd: Path, env: dict | None = None) -> tuple[int, dict, str]:
    # --drill none: conformance is about the restore Litestream's tests describe; an older-point
    # drill on these 2000-dated one-object generations is a different question.
    proc = subprocess.run([sys.executable, "-m", "jobs.verify", "--json", "--max-age", "100000d", "--drill", "none",
                           *args],
                          cwd=cwd, env=restorable_env(env), capture_output=True, text=True, timeout=240)
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stderr
    except json.JSONDecodeError:
        raise AssertionError(f"jobs.verify exited {proc.returncode} without JSON:\n{proc.stderr[-3000:]}") from None


@pytest.fixture(scope="module")
def verdicts(peers) -> dict[str, dict]:
    """restorable's result for every URL fixture, from one ``jobs.verify`` over a config listing them all."""
    dbs = [{"path": str(peers / name / "db"), "replicas": [{"type": "file", "path": str(peers / name / "replica")}]}
           for name in URL_FIXTURES]
    config = peers / "all.yml"
    config.write_text(yaml.safe_dump({"dbs": dbs}))
    _, report, _ = _verify(["--config", str(config)], REPO_ROOT)
    return {Path(result["db"]).parent.name: result for result in report["databases"]}


def _kinds(result: dict, severity: str) -> set[str]:
    return {f["kind"] for f in result["findings"] if f["severity"] == severity}


@pytest.mark.parametrize("name", URL_FIXTURES)
def test_restorable_reads_the_fixture_as_expected(name, verdicts):
    expect, result = EXPECTED[name], verdicts[name]
    errors, warnings = _kinds(result, "error"), _kinds(result, "warning") - {"retention"}
    shown = json.dumps(result["findings"], indent=1)
    if expect.status == "ok":
        assert result["status"] in ("ok", "warning") and not errors and not warnings, shown
    elif expect.status == "warning":
        assert not errors and expect.kinds <= warnings, shown
    else:
        assert result["status"] == "failed" and expect.kinds <= errors, shown
    if expect.sha:
        assert (result.get("restored") or {}).get("sha256") == expect.sha, shown
    if expect.generation:
        assert result["generation"] == expect.generation
    assert "-0000001" not in shown


@pytest.mark.parametrize("name", URL_FIXTURES)
def test_the_real_litestream_agrees_or_is_silent_where_restorable_reports(name, peers, tmp_path):
    expect = EXPECTED[name]
    version = V5 if (peers / name / "replica" / "ltx").is_dir() else V3
    out = tmp_path / "out.db"
    proc = run_litestream(version, "restore", "-o", out, f"file://{peers / name / 'replica'}", check=False)
    if expect.litestream == "error":
        assert proc.returncode != 0 and not out.exists(), proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    wanted = expect.litestream_sha if expect.litestream == "silent" else expect.sha
    assert _sha256(out) == wanted


def test_latest_replica_and_replica_name_choose_what_litestream_chooses(peers):
    """TestRestoreCommand/LatestReplica and /ReplicaName: generation choice per replica."""
    cwd = peers / "cmd-restore-latest-replica"
    code, report, _ = _verify(["--config", "litestream.yml"], cwd, {"LITESTREAM_TESTDIR": str(cwd)})
    by_replica = {r["replica"]: r for r in report["databases"]}
    assert code == 0, report
    assert by_replica["replica0"]["generation"] == "0000000000000001"  # litestream's pick, 2000-01-03
    assert by_replica["replica1"]["generation"] == "0000000000000002"
    cwd = peers / "cmd-restore-replica-name"
    code, report, _ = _verify(["--config", "litestream.yml", "--replica", "replica1"], cwd,
                              {"LITESTREAM_TESTDIR": str(cwd)})
    [result] = report["databases"]
    assert code == 0 and result["replica"] == "replica1"
    assert result["position"].startswith("0000000000000001/00000001")
    assert result["restored"]["sha256"] == EMPTY_DB


def test_no_backups_is_an_error_like_litestreams(peers):
    """TestRestoreCommand/ErrNoBackups: ``no matching backups found``. The replica folder does not
    exist at all, which restorable refuses as a config error (exit 3, naming the folder): stricter
    than Litestream, never an "ok"."""
    cwd = peers / "cmd-restore-no-backups"
    proc = subprocess.run([sys.executable, "-m", "jobs.verify", "--json", "--config", "litestream.yml"], cwd=cwd,
                          env=restorable_env({"LITESTREAM_TESTDIR": str(cwd)}), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3 and f"{cwd / 'replica'} does not exist" in proc.stderr
    (cwd / "replica").mkdir()
    code, report, _ = _verify(["--config", "litestream.yml"], cwd, {"LITESTREAM_TESTDIR": str(cwd)})
    assert code == 1 and _kinds(report["databases"][0], "error") == {"no_backups"}
    proc = run_litestream(V3, "restore", "-config", cwd / "litestream.yml", "-o", cwd / "out.db", cwd / "db",
                          env={"LITESTREAM_TESTDIR": str(cwd)}, check=False)
    assert proc.returncode != 0 and "no matching backups found" in proc.stdout + proc.stderr
