"""The Litestream 0.5 settings (snapshot, retention, L0, levels, informational keys) read as 0.5.17 reads them.

The defaults and the refusals are checked against the real 0.5.17 binary: its debug log
names the L0 retention, every compaction level's interval and the snapshot retention
window it enforces, and it refuses to start on the configs restorable refuses.
"""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lib.config.environment import _Context
from lib.config.known_keys import unknown_keys
from lib.config.litestream_v5 import V5Settings, read_v5_settings
from lib.config.litestream_yml import _TextLoader, parse
from lib.errors import ConfigError
from lib.retention.policy import policy_for
from tests.support import run_job
from tests.support.litestream import V5, litestream_bin, litestream_env, run_litestream


def load_yaml_text(text: str) -> dict:
    """The document as restorable's litestream.yml reader loads it (scalars stay text)."""
    return yaml.load(text, Loader=_TextLoader)


def _settings(text: str, db_index: int = 0) -> V5Settings:
    document = load_yaml_text(text)
    return read_v5_settings(document, db_index, _Context(source="litestream.yml", cwd=Path("/")))


DB = "dbs:\n  - path: /data/app.db\n    replica: {type: file, path: /backups/app}\n"


def test_defaults_are_litestream_0_5_17s():
    s = _settings(DB)
    assert (s.snapshot_interval, s.snapshot_retention) == (86400, 86400)
    assert s.retention_enabled is True
    assert (s.l0_retention, s.l0_retention_check_interval) == (300, 15)
    assert s.level_intervals == (30, 300, 3600)
    assert s.origin("snapshot_retention").startswith("default")


def test_every_key_is_read_with_its_origin():
    s = _settings(
        "snapshot: {interval: 6h, retention: 72h}\nretention: {enabled: false}\n"
        "l0-retention: 0s\nl0-retention-check-interval: 1m\nlevels: [{interval: 10s}, {interval: 2m}]\n"
        "validation: {interval: 12h}\nheartbeat-url: https://hc-ping.com/8c2f7e0a-secret\n"
        "dbs:\n  - path: /data/app.db\n    restore-if-db-not-exists: true\n"
        "    replica: {type: file, path: /backups/app, auto-recover: true}\n")
    assert (s.snapshot_interval, s.snapshot_retention, s.retention_enabled) == (6 * 3600, 72 * 3600, False)
    assert (s.l0_retention, s.l0_retention_check_interval, s.level_intervals) == (0, 60, (10, 120))
    assert s.level_interval(2) == 120 and s.level_interval(9) is None
    assert (s.validation_interval, s.auto_recover, s.restore_if_db_not_exists) == (12 * 3600, True, True)
    assert s.origin("snapshot_retention") == "litestream.yml: snapshot.retention"
    assert s.origin("auto_recover") == "litestream.yml: dbs[0].replica.auto-recover"
    shown = s.shown()
    assert shown["heartbeat-url"]["value"] == "****"
    assert "8c2f7e0a" not in repr(s) and "8c2f7e0a" not in str(shown)
    assert s.secrets() == ["https://hc-ping.com/8c2f7e0a-secret"]
    assert shown["snapshot.retention"] == {"value": "3d", "from": "litestream.yml: snapshot.retention"}


def test_a_databases_snapshot_setting_applies_to_all_like_litestream():
    text = ("dbs:\n  - path: /a.db\n    replica: {path: /r/a}\n"
            "  - path: /b.db\n    snapshot: {retention: 48h}\n    replica: {path: /r/b}\n")
    first = _settings(text, 0)
    assert first.snapshot_retention == 48 * 3600
    assert "dbs[1].snapshot.retention" in first.origin("snapshot_retention")
    top = _settings("snapshot: {retention: 2h}\n" + text, 1)
    assert top.snapshot_retention == 7200


CONFLICT = ("dbs:\n  - path: {d}/a.db\n    snapshot: {{interval: 1h}}\n    replica: {{type: file, path: {d}/ra}}\n"
            "  - path: {d}/b.db\n    snapshot: {{interval: 2h}}\n    replica: {{type: file, path: {d}/rb}}\n")

ZERO_LEVEL = "levels: [{{interval: 0s}}]\ndbs:\n  - path: {d}/a.db\n    replica: {{type: file, path: {d}/ra}}\n"

ZERO_SNAPSHOT = "snapshot: {{interval: 0s}}\ndbs:\n  - path: {d}/a.db\n    replica: {{type: file, path: {d}/ra}}\n"


@pytest.mark.parametrize("template, key", [(CONFLICT, "dbs[1].snapshot.interval"), (ZERO_LEVEL, "levels[0].interval"),
                                           (ZERO_SNAPSHOT, "snapshot.interval")],
                         ids=["conflicting-databases", "zero-level", "zero-snapshot"])
def test_configs_litestream_0_5_17_refuses_are_config_errors(tmp_path, template, key):
    text = template.format(d=tmp_path)
    with pytest.raises(ConfigError, match=re.escape(key)):
        _settings(text)
    config = tmp_path / "litestream.yml"
    config.write_text(text)
    proc = run_litestream(V5, "replicate", "-config", config, check=False, timeout=60)
    assert proc.returncode != 0 and "Error:" in proc.stdout + proc.stderr


def _startup_log(tmp_path: Path, config_text: str) -> str:
    """Start ``litestream replicate`` at debug level and return its log once the monitors are up."""
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    config = tmp_path / "litestream.yml"
    config.write_text("logging: {level: debug}\n" + config_text.replace("{db}", str(db)).replace("{replica}", str(tmp_path / "replica")))
    proc = subprocess.Popen([str(litestream_bin(V5)), "replicate", "-config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=litestream_env(), text=True)
    lines: list[str] = []
    try:
        wanted = ("L0 retention monitor", "level=1 interval", "enforcing snapshot retention")
        for line in proc.stdout:  # waits for lines, not for time
            lines.append(line)
            if all(any(w in seen for seen in lines) for w in wanted):
                break
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return "".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["", "snapshot: {retention: 6h, interval: 2h}\nl0-retention: 1m\n"
                                   "l0-retention-check-interval: 5s\nlevels: [{interval: 10s}, {interval: 3m}]\n"],
                         ids=["defaults", "set"])
def test_settings_match_what_the_0_5_17_binary_runs_with(tmp_path, extra):
    started = time.time()
    text = extra + "dbs:\n  - path: sqlite://{db}\n    replica: {type: file, path: {replica}}\n"
    log = _startup_log(tmp_path, text)
    s = _settings(text.replace("{db}", "/x.db").replace("{replica}", "/r"))
    l0 = re.search(r"L0 retention monitor.* interval=(\S+) retention=(\S+)", log)
    assert _go(l0.group(1)) == s.l0_retention_check_interval and _go(l0.group(2)) == s.l0_retention
    for level, interval in enumerate(s.level_intervals, start=1):
        assert re.search(rf"compaction monitor.* level={level} interval=(\S+)", log), log
        got = re.search(rf"compaction monitor.* level={level} interval=(\S+)", log).group(1)
        assert _go(got) == interval
    snap = re.search(r"compaction monitor.* level=9 interval=(\S+)", log).group(1)
    assert _go(snap) == s.snapshot_interval
    cutoff = re.search(r"enforcing snapshot retention.* timestamp=(\S+)", log).group(1)
    window = started - time.mktime(time.strptime(cutoff[:19], "%Y-%m-%dT%H:%M:%S")) + time.timezone
    assert abs(window - s.snapshot_retention) < 120
    assert "initialized db\" path=" + str(tmp_path / "app.db") in log  # sqlite:// stripped


def _go(text: str) -> float:
    """Seconds of a Go duration as slog prints it (``1h0m0s``, ``5m0s``, ``30s``)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", text))


def test_unknown_keys_are_named_and_known_ones_of_either_release_are_not():
    document = load_yaml_text(
        "retension: 24h\nsnapshot: {interval: 1h, retain: 2h}\nlogging: {level: info}\n"
        "dbs:\n  - path: /a.db\n    checkpoint-intervall: 1m\n"
        "    replicas:\n      - url: s3://b/a\n        retention: 72h\n        snapshot-interval: 1h\n"
        "        sse-customer-key: k\n        age: {identities: [x], recipient: [y]}\n")
    assert unknown_keys(document) == ["retension", "snapshot.retain", "dbs[0].checkpoint-intervall",
                                      "dbs[0].replicas[0].age.recipient"]


# ------------------------------------------------------------------ used, not only read


def _parse(text: str, environ: dict | None = None, cwd: str = "/srv"):
    return parse(text, environ or {}, cwd=cwd)


def test_sqlite_url_paths_name_the_database_file():
    config = _parse("dbs:\n  - path: sqlite:///data/app.db\n    replica: {path: /r/a}\n"
                    "  - path: sqlite3://rel/b.db\n    replica: {path: /r/b}\n")
    assert [db.path for db in config.dbs] == ["/data/app.db", "/srv/rel/b.db"]
    assert config.dbs[0].written_path == "sqlite:///data/app.db"


def test_the_v5_retention_window_is_snapshot_retention_not_the_replicas():
    config = _parse("snapshot: {retention: 72h, interval: 6h}\nl0-retention: 1m\n"
                    "dbs:\n  - path: /a.db\n    replica: {path: /r/a, retention: 1h}\n")
    db = config.dbs[0]
    v5 = policy_for(db.replicas[0], None, v5=db.v5)
    assert (v5.window_seconds, v5.check_seconds, v5.l0_retention_seconds) == (72 * 3600, 6 * 3600, 60)
    assert "snapshot.retention" in v5.source and "0.5 ignores" in v5.source
    assert policy_for(db.replicas[0], None).window_seconds == 3600  # a v0.3 replica keeps its own key


def test_retention_disabled_means_nothing_is_overdue_and_says_who_bounds_the_bucket():
    config = _parse("retention: {enabled: false}\ndbs:\n  - path: /a.db\n    replica: {path: /r/a}\n")
    policy = policy_for(config.dbs[0].replicas[0], None, v5=config.dbs[0].v5)
    assert policy.window_seconds is None and "deletes nothing" in policy.source and "lifecycle" in policy.source


def test_unknown_keys_become_warnings_of_the_database_they_belong_to():
    config = _parse("retension: 1h\ndbs:\n  - path: /a.db\n    replica: {path: /r/a, sync-intervall: 1s}\n"
                    "  - path: /b.db\n    replica: {path: /r/b}\n")
    first, second = (db.warnings for db in config.dbs)
    assert any("retension" in w for w in first) and any("sync-intervall" in w for w in first)
    assert any("retension" in w for w in second) and not any("sync-intervall" in w for w in second)


def test_print_config_shows_the_0_5_settings_and_the_unknown_keys(tmp_path):
    (tmp_path / "r").mkdir()
    config = tmp_path / "litestream.yml"
    config.write_text("heartbeat-url: https://hc-ping.com/0f3e-secret-ping\nsnapshot: {retention: 72h}\n"
                      f"dbs:\n  - path: sqlite://{tmp_path}/app.db\n    replica: {{path: {tmp_path}/r, retension: 1h}}\n")
    proc = run_job("jobs.verify", "--config", config, "--print-config")
    assert proc.returncode == 0, proc.stderr
    assert "snapshot.retention: 3d  # from " in proc.stdout and "heartbeat-url: '****'" in proc.stdout
    assert "# warning: " in proc.stdout and "dbs[0].replica.retension: unknown key" in proc.stdout
    assert "0f3e-secret-ping" not in proc.stdout
    assert f"path: {tmp_path}/app.db" in proc.stdout


def test_an_unknown_key_is_a_warning_in_the_report(tmp_path):
    fixture = tmp_path / "replica"  # a copy: a run writes its history next to a file replica
    shutil.copytree(Path(__file__).resolve().parents[2] / "shared" / "peer-fixtures" / "restore-snapshot-only" / "replica", fixture)
    config = tmp_path / "litestream.yml"
    config.write_text(f"dbs:\n  - path: /a.db\n    replicas: [{{path: {fixture}, snapshot-intervall: 1h}}]\n")
    proc = run_job("jobs.verify", "--config", config, "--json", "--max-age", "100000d")
    [db] = json.loads(proc.stdout)["databases"]
    [finding] = [f for f in db["findings"] if f["kind"] == "config"]
    assert finding["severity"] == "warning" and "snapshot-intervall" in finding["message"]
