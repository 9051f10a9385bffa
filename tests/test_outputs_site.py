"""The status page: built after each verification (RESTORABLE_STATUS_SITE) and by jobs.report
from the history, loaded from disk in headless Chromium, whose DOM must show every database
and its status; a phone-sized screenshot is kept in tests/artifacts/."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, run_job

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("no headless Chromium: .ci/run installs chromium-headless-shell (scripts/install_chromium.sh)")
    pytest.skip("no headless Chromium here; install it with: bash scripts/install_chromium.sh")


def browse(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    profile.mkdir()
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


class Sections(HTMLParser):
    """Every element with a data-db attribute, and every timeline cell's class and title."""

    def __init__(self):
        super().__init__()
        self.databases: list[dict[str, str]] = []
        self.cells: list[dict[str, str]] = []
        self.svgs = 0
        self.overall = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-db" in attrs:
            self.databases.append(attrs)
        if "cell" in (attrs.get("class") or "").split():
            self.cells.append(attrs)
        if tag == "svg":
            self.svgs += 1
        if attrs.get("id") == "overall":
            self.overall = attrs.get("data-status")


def verify(urls, env):
    return run_job("jobs.verify", "--max-age", "7d", *urls, env=env)


def test_the_page_shows_every_database_and_status_in_a_real_browser(v3_file_replica, v5_file_replica, clone,
                                                                     restorable_env, tmp_path):
    good, broken, v5 = clone(v3_file_replica), clone(v3_file_replica), clone(v5_file_replica)
    urls = [f"file://{r.replica_dir}" for r in (good, broken, v5)]
    site = tmp_path / "site"
    env = {**restorable_env, "RESTORABLE_STATUS_SITE": str(site)}

    assert verify(urls, env).returncode == 0
    assert verify(urls, env).returncode == 0
    shutil.rmtree(broken.replica_dir / "generations")
    proc = verify(urls, env)
    assert proc.returncode == 1, proc.stderr
    assert "status page written to" in proc.stderr

    status = json.loads((site / "status.json").read_text())
    assert status["status"] == "failed"
    assert {d["db"]: d["status"] for d in status["databases"]} == {urls[0]: "ok", urls[1]: "failed", urls[2]: "ok"}
    failed = next(d for d in status["databases"] if d["status"] == "failed")
    assert failed["last_finding"].startswith("[no_backups] no Litestream backups found")
    assert [r["status"] for r in failed["runs"]] == ["ok", "ok", "failed"]
    assert failed["last_good_at"] is not None
    ok = next(d for d in status["databases"] if d["db"] == urls[0])
    assert ok["restore_point"].startswith("generation ") and ok["backup_age_seconds"] >= 0
    assert len(ok["series"]["restore_seconds"]) == 3 and len(ok["series"]["bucket_bytes"]) == 3
    assert (site / "badge.svg").read_text().count("failed") >= 1
    assert len(list((site / "badges").glob("*.svg"))) == 3

    dom = browse(site / "index.html", tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = Sections()
    parsed.feed(dom.stdout)
    assert {d["data-db"]: d["data-status"] for d in parsed.databases} == \
        {urls[0]: "ok", urls[1]: "failed", urls[2]: "ok"}
    assert parsed.overall == "failed"
    assert len(parsed.cells) == 9 and sum("failed" in c["class"] for c in parsed.cells) == 1
    failed_cell = next(c for c in parsed.cells if "failed" in c["class"])
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z failed: no_backups$", failed_cell["title"])
    assert parsed.svgs == 12  # four charts per database, inline
    assert "http://" not in (site / "index.html").read_text().replace("http://www.w3.org/2000/svg", "")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    snap = browse(site / "index.html", tmp_path, f"--screenshot={shot}", "--window-size=412,1400")
    assert snap.returncode == 0, snap.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_jobs_report_builds_the_same_site_from_the_history(v3_file_replica, clone, restorable_env, tmp_path):
    replica = clone(v3_file_replica)
    assert run_job("jobs.verify", "--config", replica.config_path, "--max-age", "7d", env=restorable_env).returncode == 0

    proc = run_job("jobs.report", "--config", replica.config_path, "--html", tmp_path / "out", env=restorable_env)

    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["badge.svg", "badges", "index.html", "status.json"]
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert [(d["db"], d["status"]) for d in status["databases"]] == [(str(replica.db_path), "ok")]


def test_a_database_without_history_is_unknown_not_ok(v3_file_replica, clone, restorable_env, tmp_path):
    replica = clone(v3_file_replica)

    proc = run_job("jobs.report", "--config", replica.config_path, "--html", tmp_path / "out", env=restorable_env)

    assert proc.returncode == 0, proc.stderr
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["status"] == "unknown" and status["databases"][0]["checked_at"] is None


def test_jobs_report_without_history_is_a_config_error(v3_file_replica, restorable_env, tmp_path):
    proc = run_job("jobs.report", "--config", v3_file_replica.config_path, "--html", tmp_path / "out",
                   env={**restorable_env, "RESTORABLE_HISTORY": "off"})

    assert proc.returncode == 3
    assert proc.stderr.strip() == ("restorable: error: RESTORABLE_HISTORY=off: the status page is built from the "
                                   "history; unset it")


def test_the_site_can_be_published_to_a_bucket_prefix(v3_s3_replica, restorable_env, tmp_path):
    s3 = v3_s3_replica.s3
    env = {**restorable_env, **s3.credentials_env()}
    destination = f"s3://{v3_s3_replica.bucket}/status-page?endpoint={s3.endpoint}&forcePathStyle=true"

    proc = run_job("jobs.report", "--config", v3_s3_replica.config_path, "--html", destination, env=env)

    assert proc.returncode == 0, proc.stderr
    keys = set(s3.list_keys(v3_s3_replica.bucket, "status-page/"))
    assert {"status-page/index.html", "status-page/status.json", "status-page/badge.svg"} <= keys
