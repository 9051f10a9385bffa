"""Configuration without a file: replica URLs, $RESTORABLE_REPLICAS, precedence, --print-config.

The end-to-end tests run ``python -m jobs.verify`` against real replicas written by the
real litestream (a moto S3 server process, or a directory) with no litestream.yml at all.
"""
from __future__ import annotations

import json

import pytest

from lib.config import litestream_yml as config_litestream_yml, sources as config_sources
from lib.config.model import Config, ReplicaConfig
from lib.errors import ConfigError
from lib.config.settings_model import Settings
from lib.config.effective import effective_config
from lib.config.settings import parse_settings
from lib.storage.s3 import S3Settings, make_s3_client
from tests.support import restorable_env, run_job

ACCESS = "AKIAEXAMPLEACCESS123"
SECRET = "s3cr3t/Value+With=Chars"
TOKEN = "FwoGZXIvYXdzEXAMPLEsessionTOKEN///abc=="


def s3_env(replica, **extra: str) -> dict[str, str]:
    """What a Railway service linked to the bucket has: endpoint, region, keys (no litestream.yml)."""
    s3 = replica.s3
    return restorable_env({
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_DEFAULT_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
        **extra,
    })


def verified(result) -> list[dict]:
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["status"] == "ok", report
    return report["databases"]


# ------------------------------------------------------------------ end to end, real S3


def test_s3_url_alone_with_endpoint_and_keys_from_environment(v3_s3_replica):
    result = run_job("jobs.verify", v3_s3_replica.url(), "--json", env=s3_env(v3_s3_replica))
    (db,) = verified(result)
    assert db["restored"]["sha256"] == v3_s3_replica.reference_sha256
    assert db["tables"] == v3_s3_replica.row_counts


def test_s3_url_with_litestream_query_parameters(v3_s3_replica):
    s3 = v3_s3_replica.s3
    url = f"{v3_s3_replica.url()}?endpoint={s3.endpoint}&region={s3.region}&forcePathStyle=true"
    env = restorable_env({"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key})
    (db,) = verified(run_job("jobs.verify", url, "--json", env=env))
    assert db["restored"]["sha256"] == v3_s3_replica.reference_sha256


def test_restorable_replicas_named_entry_needs_no_file(v3_s3_replica, tmp_path):
    env = s3_env(v3_s3_replica, RESTORABLE_REPLICAS=f"app={v3_s3_replica.url()}")
    (db,) = verified(run_job("jobs.verify", "--json", env=env))
    assert (db["db"], db["replica"]) == ("app", "app")
    assert db["restored"]["sha256"] == v3_s3_replica.reference_sha256


def test_restorable_replicas_railway_bucket_variables(v3_s3_replica):
    # What Railway's variable references resolve to for a linked bucket ("AWS" preset);
    # the bucket comes from AWS_S3_BUCKET_NAME because the URL leaves it out.
    s3 = v3_s3_replica.s3
    env = restorable_env({
        "RESTORABLE_REPLICAS": f"app=s3:///{v3_s3_replica.prefix}",
        "AWS_S3_BUCKET_NAME": v3_s3_replica.bucket,
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_DEFAULT_REGION": "auto",
        "AWS_S3_URL_STYLE": "path",
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
    })
    (db,) = verified(run_job("jobs.verify", "--json", env=env))
    assert db["restored"]["sha256"] == v3_s3_replica.reference_sha256


def test_restorable_replicas_several_entries_mixed_types(v3_s3_replica, v3_file_replica):
    listing = f" s3={v3_s3_replica.url()} ,\n  file={v3_file_replica.url()} "
    env = s3_env(v3_s3_replica, RESTORABLE_REPLICAS=listing)
    dbs = verified(run_job("jobs.verify", "--json", env=env))
    assert [d["db"] for d in dbs] == ["s3", "file"]
    assert {d["restored"]["sha256"] for d in dbs} == {v3_s3_replica.reference_sha256,
                                                      v3_file_replica.reference_sha256}


def test_session_token_is_accepted_end_to_end(v3_s3_replica):
    env = s3_env(v3_s3_replica, AWS_SESSION_TOKEN=TOKEN)
    (db,) = verified(run_job("jobs.verify", v3_s3_replica.url(), "--json", env=env))
    assert db["restored"]["sha256"] == v3_s3_replica.reference_sha256
    assert TOKEN not in json.dumps(db)


def test_file_url_alone(v3_file_replica):
    (db,) = verified(run_job("jobs.verify", v3_file_replica.url(), "--json", env=restorable_env()))
    assert db["restored"]["sha256"] == v3_file_replica.reference_sha256
    assert db["db"] == v3_file_replica.url()


def test_url_argument_beats_restorable_replicas_and_config(v3_file_replica, tmp_path):
    env = restorable_env({"RESTORABLE_REPLICAS": "other=s3://nope/x", "LITESTREAM_CONFIG": str(tmp_path / "no.yml")})
    (db,) = verified(run_job("jobs.verify", v3_file_replica.url(), "--json", env=env))
    assert db["db"] == v3_file_replica.url()


# ------------------------------------------------------------------------- --print-config


def test_print_config_masks_secrets_and_shows_sources(tmp_path):
    env = restorable_env({
        "RESTORABLE_REPLICAS": "app=s3://bkt/app.db?region=auto",
        "AWS_ENDPOINT_URL": "https://user:endpointpass@acct.r2.example",
        "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
        "LITESTREAM_CONFIG": str(tmp_path / "ignored.yml"), "RESTORABLE_MAX_AGE": "2h",
    })
    result = run_job("jobs.verify", "--print-config", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for secret in (ACCESS, SECRET, TOKEN, "endpointpass"):
        assert secret not in out
    assert "access-key-id: AKIA****  # from $AWS_ACCESS_KEY_ID" in out
    assert "secret-access-key: '****'  # from $AWS_SECRET_ACCESS_KEY" in out
    assert "session-token: '****'  # from $AWS_SESSION_TOKEN" in out
    assert "region: auto  # from RESTORABLE_REPLICAS entry 1 (app): url (?region=)" in out
    assert "max-age: 2h  # from $RESTORABLE_MAX_AGE" in out
    assert "# replicas from: RESTORABLE_REPLICAS" in out
    assert f"not used (a stronger source is set): $LITESTREAM_CONFIG ({tmp_path / 'ignored.yml'})" in out
    assert result.stderr == ""


def test_print_config_json_flag_beats_environment_beats_file(tmp_path):
    settings = tmp_path / "restorable.yml"
    settings.write_text("defaults: {max-age: 3h, allow-empty: false}\n")
    env = restorable_env({"RESTORABLE_SETTINGS": str(settings), "RESTORABLE_ALLOW_EMPTY": "true",
                          "RESTORABLE_MAX_AGE": "2h", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": ACCESS})
    result = run_job("jobs.verify", "s3://bkt/db", "--max-age", "90s", "--print-config", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and ACCESS not in result.stdout
    document = json.loads(result.stdout)
    db_settings = document["dbs"][0]["settings"]
    assert db_settings["max-age"] == {"value": "90s", "from": "--max-age"}
    assert db_settings["allow-empty"] == {"value": True, "from": "$RESTORABLE_ALLOW_EMPTY"}
    assert db_settings["keep-snapshots"] == {"value": 1, "from": "built-in default"}
    replica = document["dbs"][0]["replicas"][0]
    assert replica["secret-access-key"] == {"value": "****", "from": "$AWS_SECRET_ACCESS_KEY"}
    assert replica["max-age"]["value"] == "90s"


def test_print_config_shows_the_file_key_a_value_came_from(tmp_path):
    path = tmp_path / "litestream.yml"
    path.write_text("dbs:\n  - path: /data/app.db\n    replica:\n      url: s3://b/app.db\n      region: eu-1\n")
    settings = tmp_path / "restorable.yml"
    settings.write_text("dbs:\n  app.db: {max-age: 25h}\n")
    env = restorable_env({"AWS_DEFAULT_REGION": "us-east-1"})
    result = run_job("jobs.verify", "--config", path, "--settings", settings, "--print-config", env=env)
    assert result.returncode == 0, result.stderr
    assert f"region: eu-1  # from {path}: dbs[0].replica.region" in result.stdout
    assert f"max-age: 1d1h  # from {settings}: dbs.app.db.max-age" in result.stdout


def test_print_config_of_a_broken_config_is_a_config_error():
    env = restorable_env({"RESTORABLE_REPLICAS": "app=gs://bucket/app.db"})
    result = run_job("jobs.verify", "--print-config", env=env)
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        "restorable: error: RESTORABLE_REPLICAS entry 1 (app): url: replica type 'gs' is not supported by "
        "restorable (supported: s3, file)"]


# --------------------------------------------------------------------- RESTORABLE_REPLICAS


@pytest.mark.parametrize("text, expected", [
    ("s3://b/app.db", [(None, "s3://b/app.db")]),
    ("app=s3://b/app.db", [("app", "s3://b/app.db")]),
    ("a=s3://b/x, b=s3://b/y", [("a", "s3://b/x"), ("b", "s3://b/y")]),
    ("a=s3://b/x,b=s3://b/y", [("a", "s3://b/x"), ("b", "s3://b/y")]),
    ("\n a=s3://b/x \t\n b=file:///srv/y \n", [("a", "s3://b/x"), ("b", "file:///srv/y")]),
    ("s3://b/p?region=auto&endpoint=https://e", [(None, "s3://b/p?region=auto&endpoint=https://e")]),
    ("app.v2_x-1=s3://b/p?forcePathStyle=true", [("app.v2_x-1", "s3://b/p?forcePathStyle=true")]),
    ("file:/srv/backups", [(None, "file:/srv/backups")]),
])
def test_replica_list_syntax(text, expected):
    assert config_sources.parse_replica_list(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("", "holds no replica URL"),
    (" , ,", "holds no replica URL"),
    ("=s3://b/x", "entry 1: name '' is not valid"),
    ("-a=s3://b/x", "entry 1: name '-a' is not valid"),
    ("a b=s3://b/x", "entry 1: url: 'a' is not a URL"),
    ("app=", "entry 1 (app): no URL after '='"),
    ("a=s3://b/x a=s3://b/y", "entry 2: name 'a' is already used by entry 1"),
    ("s3://b/x s3://b/x", "entry 2: URL 's3://b/x' is already used by entry 1"),
    ("app=bucket/app.db", "entry 1 (app): url: 'bucket/app.db' is not a URL"),
    ("app=s3:///app.db", "entry 1 (app): url: the s3 url names no bucket"),
    ("app=s3://b/x?forcePathStyle=maybe", "query forcePathStyle='maybe' is not a boolean"),
    ("app=file://host/x", "is not a file URL with an absolute path"),
])
def test_replica_list_errors_are_one_line_naming_the_entry(text, fragment):
    with pytest.raises(ConfigError) as info:
        config_sources.config_from_env({"RESTORABLE_REPLICAS": text})
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert message.startswith("RESTORABLE_REPLICAS")


def test_config_from_env_names_become_db_and_replica_labels():
    env = {"RESTORABLE_REPLICAS": "app=s3://bkt/app.db s3://bkt/other.db", **{
        "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
        "BUCKET_ENDPOINT": "https://e.example", "AWS_REGION": "auto"}}
    cfg = config_sources.config_from_env(env)
    assert cfg.source == "RESTORABLE_REPLICAS"
    (app, other) = cfg.dbs
    assert (app.path, app.replicas[0].name) == ("app", "app")
    assert (other.path, other.replicas[0].name) == ("s3://bkt/other.db", "s3")
    assert app.replicas[0] == ReplicaConfig(
        name="app", type="s3", path="app.db", bucket="bkt", endpoint="https://e.example", region="auto",
        access_key_id=ACCESS, secret_access_key=SECRET, session_token=TOKEN)
    assert set(cfg.secrets()) == {ACCESS, SECRET, TOKEN}
    assert config_sources.select_dbs(cfg, ["app"]) == (app,)


def test_named_database_picks_up_its_settings_block():
    cfg = config_sources.config_from_env({"RESTORABLE_REPLICAS": "app=file:///srv/app"})
    settings = parse_settings({"dbs": {"app": {"max-age": "5m"}}}, "restorable.yml")
    assert settings.for_db(cfg.dbs[0].path).max_age_seconds == 300


# ----------------------------------------------------------------------- session token


def test_session_token_only_with_the_aws_key_pair_it_belongs_to():
    base = {"RESTORABLE_REPLICAS": "s3://b/x", "AWS_SESSION_TOKEN": TOKEN}
    with_aws = config_sources.config_from_env({**base, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert with_aws.dbs[0].replicas[0].session_token == TOKEN
    litestream_keys = {**base, "LITESTREAM_ACCESS_KEY_ID": ACCESS, "LITESTREAM_SECRET_ACCESS_KEY": SECRET}
    assert config_sources.config_from_env(litestream_keys).dbs[0].replicas[0].session_token is None
    text = "dbs:\n - path: /a\n   replica: {url: s3://b/x, access-key-id: K, secret-access-key: S}\n"
    from_file = config_litestream_yml.parse(text, {**base, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert from_file.dbs[0].replicas[0].session_token is None


def test_session_token_reaches_the_boto3_credentials_and_stays_out_of_repr():
    settings = S3Settings(bucket="b", endpoint="http://127.0.0.1:9", access_key_id=ACCESS,
                          secret_access_key=SECRET, session_token=TOKEN)
    credentials = make_s3_client(settings)._request_signer._credentials
    assert (credentials.access_key, credentials.token) == (ACCESS, TOKEN)
    assert TOKEN not in repr(settings)
    replica = config_sources.config_from_env({"RESTORABLE_REPLICAS": "s3://b/x", "AWS_ACCESS_KEY_ID": ACCESS,
                                      "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}).dbs[0].replicas[0]
    assert TOKEN not in repr(replica) and replica.s3_settings().session_token == TOKEN


# ------------------------------------------------------------------------- precedence


def _env_with_everything(tmp_path) -> tuple[dict[str, str], str, str]:
    env_file = tmp_path / "env.yml"
    env_file.write_text("dbs:\n  - path: /from/env/file.db\n    replica: {url: file:///r1}\n")
    flag_file = tmp_path / "flag.yml"
    flag_file.write_text("dbs:\n  - path: /from/flag/file.db\n    replica: {url: file:///r2}\n")
    env = {"LITESTREAM_CONFIG": str(env_file), "RESTORABLE_REPLICAS": "envdb=file:///r3"}
    return env, str(flag_file), str(env_file)


def test_precedence_urls_then_config_flag_then_restorable_replicas_then_litestream_config(tmp_path):
    env, flag_file, env_file = _env_with_everything(tmp_path)
    by_url = config_sources.load_effective(["file:///r4"], flag_file, env)
    assert by_url.dbs[0].path == "file:///r4"
    assert by_url.overridden == (f"--config {flag_file}", "$RESTORABLE_REPLICAS", f"$LITESTREAM_CONFIG ({env_file})")
    assert config_sources.load_effective([], flag_file, env).dbs[0].path == "/from/flag/file.db"
    assert config_sources.load_effective([], None, env).dbs[0].path == "envdb"
    assert config_sources.load_effective([], None, {"LITESTREAM_CONFIG": env_file}).dbs[0].path == "/from/env/file.db"
    blank = {**env, "RESTORABLE_REPLICAS": "  "}  # blank counts as unset
    assert config_sources.load_effective([], None, blank).dbs[0].path == "/from/env/file.db"


def test_nothing_configured_names_every_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        config_sources.resolve_config_path(None, {}, search=(tmp_path / "litestream.yml",))
    assert "RESTORABLE_REPLICAS" in str(info.value) and "--config" in str(info.value)


def test_fields_remember_their_origin():
    env = {"RESTORABLE_REPLICAS": "app=s3://b/x?endpoint=https://e.example", "AWS_DEFAULT_REGION": "auto",
           "AWS_S3_URL_STYLE": "virtual"}
    replica = config_sources.config_from_env(env).dbs[0].replicas[0]
    assert replica.origin("endpoint") == "RESTORABLE_REPLICAS entry 1 (app): url (?endpoint=)"
    assert replica.origin("region") == "$AWS_DEFAULT_REGION"
    assert replica.origin("force_path_style") == "$AWS_S3_URL_STYLE"
    assert replica.origin("bucket") == "RESTORABLE_REPLICAS entry 1 (app): url"
    assert replica.origin("skip_verify") == "default"


def test_effective_config_lists_every_replica_with_its_max_age():
    cfg = Config("RESTORABLE_REPLICAS", config_sources.config_from_env({"RESTORABLE_REPLICAS": "a=file:///x"}).dbs)
    document = effective_config(cfg, Settings(source=None))
    (db,) = document["dbs"]
    assert db["replicas"][0]["max-age"] == {"value": "1h", "from": "derived: max(60 x sync-interval, 1h)"}
    assert document["settings_source"] == "built-in defaults"
