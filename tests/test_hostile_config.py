"""Hostile and careless configuration (issue 20): every case ends with the right exit code
and a one-line message that names the fix, and never prints a secret.

Jobs run as real processes against replicas written by the real litestream binary; the
one S3 case that needs storage talks to the session's moto server through the fault proxy.
"""
from __future__ import annotations

import json
import os
import time

import pytest
import yaml

from lib.config.litestream_yml import parse
from lib.errors import ConfigError
from tests.support import restorable_env, run_job
from tests.support.faultproxy import delay

EXIT_OK, EXIT_FAILED, EXIT_INCONCLUSIVE, EXIT_CONFIG = 0, 1, 2, 3

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

# Long enough that a message shortens it (lib.config.urls.show keeps 80 characters).
SESSION_TOKEN = "FwoGZXIvYXdzEBYaDH" + "Qk9vT2xhbmRTZWNyZXQ" * 16


def job_env(tmp_path, **extra: str) -> dict[str, str]:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return restorable_env({"RESTORABLE_SCRATCH_DIR": str(scratch), "RESTORABLE_HISTORY": "off", **extra})


def error_line(result) -> str:
    """The job's one error line (and proof there is only one, and no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("restorable: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]

# ------------------------------------------------------------------ 14: secrets in exit-3 messages


def test_a_secret_in_restorable_replicas_is_not_printed(tmp_path):
    env = job_env(tmp_path, RESTORABLE_REPLICAS=AWS_SECRET, AWS_SECRET_ACCESS_KEY=AWS_SECRET,
                  AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE")

    result = run_job("jobs.verify", env=env)

    assert result.returncode == EXIT_CONFIG
    line = error_line(result)
    assert "RESTORABLE_REPLICAS entry 1" in line and "[redacted]" in line
    assert AWS_SECRET not in result.stderr + result.stdout


def test_a_long_secret_cut_short_in_a_message_is_not_printed_in_part(tmp_path):
    env = job_env(tmp_path, RESTORABLE_REPLICAS=SESSION_TOKEN, AWS_SESSION_TOKEN=SESSION_TOKEN,
                  AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE", AWS_SECRET_ACCESS_KEY=AWS_SECRET)

    result = run_job("jobs.restore", "-o", tmp_path / "out.db", env=env)

    assert result.returncode == EXIT_CONFIG
    assert "[redacted]" in error_line(result)
    assert SESSION_TOKEN[:16] not in result.stderr + result.stdout


def test_a_secret_given_as_a_replica_url_argument_is_not_printed(tmp_path):
    env = job_env(tmp_path, AWS_SECRET_ACCESS_KEY=AWS_SECRET, AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE")

    result = run_job("jobs.status", AWS_SECRET, env=env)

    assert result.returncode == EXIT_CONFIG
    error_line(result)
    assert AWS_SECRET not in result.stderr + result.stdout

# ------------------------------------------------------------ 4: settings that would never apply


def settings_file(tmp_path, blocks: dict) -> str:
    path = tmp_path / "restorable.yml"
    path.write_text(yaml.safe_dump({"dbs": blocks}))
    return str(path)


def test_a_settings_block_naming_no_database_is_a_config_error(v5_file_replica, tmp_path):
    settings = settings_file(tmp_path, {"/data/app.db": {"expect-tables": ["no_such_table"]}})
    env = job_env(tmp_path, RESTORABLE_REPLICAS=f"app={v5_file_replica.url()}")

    result = run_job("jobs.verify", "--settings", settings, "--max-age", "3650d", env=env)

    assert result.returncode == EXIT_CONFIG, result.stderr
    line = error_line(result)
    assert "dbs./data/app.db" in line and "key it by one of: app" in line


def test_the_same_block_keyed_by_the_database_name_applies(v5_file_replica, tmp_path):
    settings = settings_file(tmp_path, {"app": {"expect-tables": ["no_such_table"]}})
    env = job_env(tmp_path, RESTORABLE_REPLICAS=f"app={v5_file_replica.url()}")

    result = run_job("jobs.verify", "--settings", settings, "--max-age", "3650d", "--json", env=env)

    assert result.returncode == EXIT_FAILED, result.stderr
    assert "no_such_table" in result.stdout


def test_a_block_for_a_database_that_db_leaves_out_is_not_an_error(v5_file_replica, tmp_path):
    settings = settings_file(tmp_path, {"other": {"min-rows": {"items": 1}}})
    url = v5_file_replica.url()
    env = job_env(tmp_path, RESTORABLE_REPLICAS=f"app={url} other={url}")

    result = run_job("jobs.verify", "--settings", settings, "--max-age", "3650d", "--db", "app", env=env)

    assert result.returncode == EXIT_OK, result.stderr

# ------------------------------------------------- 12: a file replica path that is not a folder


@pytest.mark.parametrize("kind", ["missing", "regular file", "device"])
def test_a_file_replica_that_is_not_a_folder_is_a_config_error(tmp_path, kind):
    target = {"missing": tmp_path / "gone", "regular file": tmp_path / "app.db", "device": "/dev/null"}[kind]
    if kind == "regular file":
        target.write_bytes(b"SQLite format 3\x00")

    result = run_job("jobs.verify", f"file://{target}", env=job_env(tmp_path), timeout=60)

    assert result.returncode == EXIT_CONFIG, result.stderr
    assert str(target) in error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["scratch"] + (["app.db"] if kind == "regular file" else []))  # no <path>.restorable history


def test_restore_from_a_regular_file_replica_is_a_config_error(tmp_path):
    replica = tmp_path / "app.db"
    replica.write_bytes(b"SQLite format 3\x00")

    result = run_job("jobs.restore", f"file://{replica}", "-o", tmp_path / "out.db", env=job_env(tmp_path))

    assert result.returncode == EXIT_CONFIG
    assert "is a regular file" in error_line(result)

# ------------------------------------------------------------ 12: jobs.status has a deadline


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_status_with_a_hanging_listing_ends_inconclusive_at_its_max_runtime(v5_s3_replica, proxy, tmp_path, how):
    doc = yaml.safe_load(v5_s3_replica.config_path.read_text())
    doc["dbs"][0]["replica"]["endpoint"] = proxy.endpoint
    config = tmp_path / "litestream.yml"
    config.write_text(yaml.safe_dump(doc))
    proxy.set_rules([delay(600, method="GET", key=r"^$")])  # every listing hangs for 10 minutes
    # Long enough for start-up to reach the listing on a loaded machine; far below the stall.
    flags = ["--max-runtime", "8s"] if how == "flag" else []
    env = job_env(tmp_path, **({"RESTORABLE_MAX_RUNTIME": "8s"} if how == "environment" else {}))

    result = run_job("jobs.status", "--config", config, "--json", *flags, env=env, timeout=120)

    assert result.returncode == EXIT_INCONCLUSIVE, result.stderr
    assert proxy.matched("delay"), "the listing never reached the stalled request"
    [status] = json.loads(result.stdout)["replicas"]
    assert "maximum runtime" in status["error"]

# ----------------------------------------------------------------- 13: -o and the S3 region


@pytest.mark.parametrize("where", ["missing folder", "onto a folder", "under a file"])
def test_restore_to_an_output_that_cannot_be_written_is_refused_before_restoring(v5_file_replica, tmp_path, where):
    (tmp_path / "a-file").write_bytes(b"x")
    out = {"missing folder": tmp_path / "missing" / "out.db", "onto a folder": tmp_path,
           "under a file": tmp_path / "a-file" / "out.db"}[where]

    result = run_job("jobs.restore", v5_file_replica.url(), "-o", out, "--force", env=job_env(tmp_path))

    assert result.returncode == EXIT_CONFIG, result.stderr
    line = error_line(result)
    assert f"-o {out}" in line
    assert not [line for line in result.stderr.splitlines() if line.startswith("restored ")]
    assert (tmp_path / "a-file").read_bytes() == b"x"


@pytest.mark.parametrize("source", ["environment", "url"])
def test_an_s3_region_with_spaces_is_a_config_error(tmp_path, source):
    url = "s3://bucket/app.db" + ("?region=us%20east%201" if source == "url" else "")
    extra = {"AWS_REGION": "us east 1"} if source == "environment" else {}
    env = job_env(tmp_path, AWS_ENDPOINT_URL_S3="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE",
                  AWS_SECRET_ACCESS_KEY=AWS_SECRET, **extra)

    result = run_job("jobs.verify", url, env=env)

    assert result.returncode == EXIT_CONFIG, result.stderr
    line = error_line(result)
    assert "region 'us east 1' is not a valid region name" in line
    assert ("$AWS_REGION" if source == "environment" else "?region=") in line

# ------------------------------------------------------------ 15: unset ${VAR} references in linear time


def _cpu_seconds(text: str) -> float:
    started = time.process_time()
    try:
        parse(text, {}, source="litestream.yml", cwd="/")
    except ConfigError:
        pass
    return time.process_time() - started


@pytest.mark.parametrize("where", ["comments", "a value"])
def test_many_unset_references_cost_about_what_the_same_text_costs_without_them(where):
    """30,000 unset references took 10-20x the CPU of the same text without them (quadratic);
    now the extra cost is one more YAML pass. CPU time, so a loaded machine does not matter."""
    count = 30_000
    head = "dbs:\n  - path: /data/app.db\n    replica:\n      url: file:///backups/app\n"

    def text(sigil: str) -> str:
        refs = [f"{sigil}{{UNSET_{n}}}" for n in range(count)]
        if where == "comments":
            return head + "".join(f"# {ref}\n" for ref in refs)
        return head + '      bucket: "' + "".join(refs) + '"\n'

    baseline = min(_cpu_seconds(text("%")) for _ in range(2))  # same size, no references
    with_references = _cpu_seconds(text("$"))

    assert with_references < 4 * baseline + 0.2


def test_an_error_about_many_unset_variables_stays_one_short_line():
    text = "dbs:\n  - path: /data/app.db\n    replica:\n      url: file:///backups/app\n      bucket: \"" + \
        "".join(f"${{UNSET_{n}}}" for n in range(1000)) + "\"\n"

    with pytest.raises(ConfigError) as raised:
        parse(text, {}, source="litestream.yml", cwd="/")

    message = str(raised.value)
    assert "${UNSET_0}" in message and "and 994 more" in message
    assert "\n" not in message and len(message) < 400


def test_a_config_whose_unset_references_sit_in_comments_still_loads():
    text = "# ${UNSET_A} ${UNSET_B}\ndbs:\n  - path: /data/app.db\n    replica:\n      url: file:///backups/app\n"

    config = parse(text, {}, source="litestream.yml", cwd="/")

    assert [db.path for db in config.dbs] == ["/data/app.db"]


def test_unset_reference_under_a_deeply_nested_key_still_names_its_key():
    text = "dbs:\n  - path: /data/app.db\n    replica:\n      url: file:///backups/app\n" \
           "      bucket: ${UNSET_BUCKET}\n"

    with pytest.raises(ConfigError, match=r"dbs\[0\]\.replica\.bucket uses \$\{UNSET_BUCKET\}"):
        parse(text, {}, source="litestream.yml", cwd="/")


@pytest.mark.skipif(os.geteuid() != 0 and not os.access("/dev/null", os.R_OK), reason="needs /dev/null")
def test_dev_null_as_replica_path_in_litestream_yml_is_a_config_error(tmp_path):
    config = tmp_path / "litestream.yml"
    config.write_text("dbs:\n  - path: /data/app.db\n    replica:\n      path: /dev/null\n")

    result = run_job("jobs.status", "--config", config, env=job_env(tmp_path))

    assert result.returncode == EXIT_CONFIG
    line = error_line(result)
    assert "replica.path" in line and "not a folder" in line
