"""lib.config: litestream.yml in both shapes, env expansion, URLs, Railway/AWS fallbacks."""
from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from lib.config import envexpand as config_envexpand, litestream_yml as config_litestream_yml, sources as config_sources, urls as config_urls
from lib.config.model import Config, DbConfig, ReplicaConfig
from lib.errors import ConfigError

ACCESS = "AKIAEXAMPLEACCESS1"
SECRET = "s3cr3t/Value+With=Chars"
CREDS = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}


def write_config(tmp_path: Path, text: str, name: str = "litestream.yml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text))
    return path


def load(tmp_path: Path, text: str, env: dict | None = None) -> Config:
    return config_sources.load(str(write_config(tmp_path, text)), env or {})


def load_error(tmp_path: Path, text: str, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    message = str(info.value)
    assert "\n" not in message
    return message


def one_replica(cfg: Config) -> ReplicaConfig:
    assert len(cfg.dbs) == 1 and len(cfg.dbs[0].replicas) == 1
    return cfg.dbs[0].replicas[0]


def s3_yaml(replica_lines: str) -> str:
    """A one-database v0.3 config whose single replica has ``replica_lines``."""
    first, *rest = dedent(replica_lines).strip().splitlines()
    body = "".join(f"        {line}\n" for line in rest)
    return f"dbs:\n  - path: /data/app.db\n    replicas:\n      - {first}\n{body}"


# ------------------------------------------------------------------------ finding the file


def test_cli_path_wins(tmp_path):
    cli = write_config(tmp_path, "x", "a.yml")
    env = {"LITESTREAM_CONFIG": str(write_config(tmp_path, "x", "b.yml"))}
    assert config_sources.resolve_config_path(str(cli), env) == cli


def test_env_path_used_without_cli(tmp_path):
    env_path = write_config(tmp_path, "x", "b.yml")
    assert config_sources.resolve_config_path(None, {"LITESTREAM_CONFIG": str(env_path)}) == env_path


def test_search_list_in_order(tmp_path):
    second = write_config(tmp_path, "x", "second.yml")
    search = (tmp_path / "first.yml", second)
    assert config_sources.resolve_config_path(None, {}, search=search) == second


def test_local_litestream_yml_found_from_cwd(tmp_path, monkeypatch):
    write_config(tmp_path, "x")
    monkeypatch.chdir(tmp_path)
    assert config_sources.resolve_config_path(None, {}) == Path("litestream.yml")


@pytest.mark.parametrize("cli, env, origin", [
    ("missing.yml", {}, "--config"),
    (None, {"LITESTREAM_CONFIG": "missing.yml"}, "LITESTREAM_CONFIG"),
])
def test_named_config_must_exist(tmp_path, cli, env, origin):
    with pytest.raises(ConfigError, match=f"missing.yml.*from {origin}.*does not exist"):
        config_sources.resolve_config_path(cli and str(tmp_path / cli), {k: str(tmp_path / v) for k, v in env.items()})


def test_no_config_anywhere_names_every_place_and_fix(tmp_path):
    search = (tmp_path / "litestream.yml", tmp_path / "etc.yml")
    with pytest.raises(ConfigError) as info:
        config_sources.resolve_config_path(None, {}, search=search)
    message = str(info.value)
    for place in ("--config", "$LITESTREAM_CONFIG", str(search[0]), str(search[1]), "set LITESTREAM_CONFIG"):
        assert place in message


# ------------------------------------------------------------------------ env expansion quirks

EXPANSION_ENV = {"A": "x", "EMPTY": "", "LONG_NAME": "long"}


@pytest.mark.parametrize("value, expected", [
    ("$A", "x"),
    ("${A}", "x"),
    ("${A}_suffix", "x_suffix"),
    ("pre-$A.post", "pre-x.post"),
    ("$LONG_NAME", "long"),
    ("$EMPTY", ""),                 # set to "" is not an error
    ("${EMPTY}tail", "tail"),
    ("pa$$word", "paword"),         # $$ is the special variable "$": removed (Litestream [obs])
    ("pa$1x", "pax"),               # $1 is a special variable: removed with its digit
    ("a$*b", "ab"),
    ("${}", ""),                    # bad syntax: eaten
    ("a${", "a"),                   # unclosed ${: the two characters are eaten
    ("${A", "A"),
    ("x$", "x$"),                   # trailing $ kept
    ("$ x", "$ x"),                 # $ before a space kept
    ("a$/b", "a$/b"),
    ("a$.b", "a$.b"),
    ("${1}", ""),
    ("${10}", ""),                  # braces with digits: Go looks up "10"
])
def test_expansion_follows_go_os_expandenv(value, expected):
    assert config_litestream_yml.expand_env(f"bucket: {value}\n", EXPANSION_ENV) == f"bucket: {expected}\n"


def test_expansion_leaves_text_without_dollar_alone():
    text = "dbs:\n  - path: /data/app.db # comment\n"
    assert config_litestream_yml.expand_env(text, {}) == text


@pytest.mark.parametrize("text, variable, key", [
    ("dbs:\n  - path: /data/app.db\n    replicas:\n      - url: s3://b/p\n        secret-access-key: $MISSING\n",
     "MISSING", "dbs[0].replicas[0].secret-access-key"),
    ("dbs:\n  - path: /data/app.db\n    replica:\n      type: s3\n      bucket: ${BUCKET_NAME}\n",
     "BUCKET_NAME", "dbs[0].replica.bucket"),
    ("dbs:\n  - path: /a.db\n    replicas: [{url: s3://b/p}]\n  - path: $DB_PATH\n    replicas: [{url: s3://b/q}]\n",
     "DB_PATH", "dbs[1].path"),
    ("access-key-id: $KEY_ID\ndbs: []\n", "KEY_ID", "access-key-id"),
    ("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://${BUCKET}/db?region=$REGION\n",
     "BUCKET", "dbs[0].replicas[0].url"),
    ("dbs:\n  - path: /a.db\n    replicas:\n      - type: s3\n        bucket: b\n        endpoint: \"https://${HOST}:9000\"\n",
     "HOST", "dbs[0].replicas[0].endpoint"),
])
def test_unset_variable_names_variable_key_and_fix(tmp_path, text, variable, key):
    message = load_error(tmp_path, text)
    assert f"${{{variable}}}" in message
    assert key in message
    assert f"set {variable} in the environment" in message
    assert str(tmp_path / "litestream.yml") in message


def test_unset_variables_all_listed_in_one_line(tmp_path):
    message = load_error(tmp_path, s3_yaml("url: s3://$ONE/p\nregion: $TWO\nendpoint: $THREE"))
    assert "$" + "{ONE}" in message and "also unset: THREE, TWO" in message


def test_default_syntax_is_explained(tmp_path):
    message = load_error(tmp_path, s3_yaml("url: s3://b/p\nregion: ${REGION:-us-east-1}"))
    assert "REGION:-us-east-1" in message and "no ${VAR:-default} syntax" in message


@pytest.mark.parametrize("text", [
    "# bucket is $IN_A_COMMENT\n" + s3_yaml("url: s3://b/p"),
    "exec: $START_COMMAND\n" + s3_yaml("url: s3://b/p"),
    "logging:\n  level: $LOG_LEVEL\n" + s3_yaml("url: s3://b/p"),
    s3_yaml("url: s3://b/p\nsnapshot-interval: $SNAP"),
    s3_yaml("url: s3://b/p") + "    monitor-interval: $MONITOR\n",
])
def test_unset_variable_in_ignored_places_expands_empty_like_litestream(tmp_path, text):
    assert one_replica(load(tmp_path, text)).bucket == "b"


def test_unset_variable_in_unparsable_text_falls_back_to_line(tmp_path):
    text = "dbs: [{path: /a.db, replicas: [{url: s3://b/p}]}]\nbucket: [${UNSET_B}\n"
    message = load_error(tmp_path, text)
    assert "UNSET_B" in message and "line 2" in message


def test_variable_set_to_empty_is_not_an_error(tmp_path):
    replica = one_replica(load(tmp_path, s3_yaml("url: s3://b/p\nregion: $EMPTY"), {"EMPTY": ""}))
    assert replica.region is None


def test_expanded_values_stay_text_not_yaml_numbers(tmp_path):
    replica = one_replica(load(tmp_path, s3_yaml("url: s3://b/p\naccess-key-id: $K\nsecret-access-key: 0123e5"),
                               {"K": "00123"}))
    assert (replica.access_key_id, replica.secret_access_key) == ("00123", "0123e5")


# ------------------------------------------------------------------------------ valid shapes

V3 = """
dbs:
  - path: /data/app.db
    replicas:
      - url: s3://bucket/path/to/db
"""
V5 = """
dbs:
  - path: /data/app.db
    replica:
      url: s3://bucket/path/to/db
"""


@pytest.mark.parametrize("text", [V3, V5], ids=["v0.3 replicas", "v0.5 replica"])
def test_both_shapes_give_the_same_replica(tmp_path, text):
    cfg = load(tmp_path, text)
    assert cfg.dbs == (DbConfig(
        path="/data/app.db",
        written_path="/data/app.db",
        replicas=(ReplicaConfig(name="s3", type="s3", path="path/to/db", bucket="bucket"),),
    ),)
    assert cfg.source == str(tmp_path / "litestream.yml")


# (replica yaml, env, expected ReplicaConfig fields)
S3_CASES = [
    ("url: s3://bucket", {}, dict(bucket="bucket", path=".")),
    ("url: s3://bucket/", {}, dict(bucket="bucket", path="")),
    ("url: s3://bucket//a/../b/./c/", {}, dict(bucket="bucket", path="b/c")),
    ("url: s3://bucket/with%20space", {}, dict(bucket="bucket", path="with space")),
    # Litestream's provider host table.
    ("url: s3://mybkt.localhost:9000/db", {},
     dict(bucket="mybkt", region="us-east-1", endpoint="http://localhost:9000", force_path_style=True)),
    ("url: s3://mybkt.s3.us-west-002.backblazeb2.com/db", {},
     dict(bucket="mybkt", region="us-west-002", endpoint="https://s3.us-west-002.backblazeb2.com", force_path_style=True)),
    ("url: s3://mybkt.s3.filebase.com/db", {},
     dict(bucket="mybkt", region=None, endpoint="https://s3.filebase.com", force_path_style=True)),
    ("url: s3://mybkt.nyc3.digitaloceanspaces.com/db", {},
     dict(bucket="mybkt", region="nyc3", endpoint="https://nyc3.digitaloceanspaces.com", force_path_style=True)),
    ("url: s3://mybkt.s3.fr-par.scw.cloud/db", {},
     dict(bucket="mybkt", region="fr-par", endpoint="https://s3.fr-par.scw.cloud", force_path_style=True)),
    ("url: s3://mybkt.us-east-1.linodeobjects.com/db", {},
     dict(bucket="mybkt", region="us-east-1", endpoint="https://us-east-1.linodeobjects.com", force_path_style=True)),
    # Not detected by Litestream: R2 needs bucket + endpoint; a bare port is dropped.
    ("url: s3://b.acct.r2.cloudflarestorage.com/db", {},
     dict(bucket="b.acct.r2.cloudflarestorage.com", endpoint=None, force_path_style=None)),
    ("url: s3://mybkt:9000/db", {}, dict(bucket="mybkt", endpoint=None)),
    # Litestream 0.5's extra host forms.
    ("url: s3://mybkt.s3.eu-west-1.amazonaws.com/db", {}, dict(bucket="mybkt", region="eu-west-1", endpoint=None)),
    ("url: s3://mybkt.minio.internal:9000/db", {},
     dict(bucket="mybkt", endpoint="http://minio.internal:9000", force_path_style=True)),
    # Litestream 0.5 query parameters.
    ("url: s3://b/db?endpoint=http://minio:9000&region=auto&forcePathStyle=true&skipVerify=true", {},
     dict(bucket="b", path="db", endpoint="http://minio:9000", region="auto", force_path_style=True, skip_verify=True)),
    ("url: s3://b/db?forcePathStyle=false&sign-payload=true", {}, dict(force_path_style=False)),
    # YAML fields win over URL-derived ones.
    ("url: s3://mybkt.nyc3.digitaloceanspaces.com/db\nregion: sfo3\nendpoint: https://sfo3.example", {},
     dict(region="sfo3", endpoint="https://sfo3.example")),
    ("url: s3://b/db?region=us-west-2\nregion: eu-central-1", {}, dict(region="eu-central-1")),
    # A provider URL forces path style even against force-path-style: false (Litestream).
    ("url: s3://mybkt.s3.filebase.com/db\nforce-path-style: false", {}, dict(force_path_style=True)),
    ("url: s3://b/db\nforce-path-style: false", {}, dict(force_path_style=False)),
    # Config form: path verbatim.
    ("type: s3\nbucket: b\npath: /x/y", {}, dict(bucket="b", path="/x/y")),
    ("type: s3\nbucket: b", {}, dict(bucket="b", path="")),
    ("bucket: b\npath: db\ntype: s3\nregion: auto\nendpoint: acct.r2.cloudflarestorage.com", {},
     dict(region="auto", endpoint="acct.r2.cloudflarestorage.com", force_path_style=None)),
    ("type: s3\nbucket: b\nforce-path-style: yes\nskip-verify: on", {}, dict(force_path_style=True, skip_verify=True)),
    # AWS with neither endpoint nor region is fine; region stays unset.
    ("url: s3://b/db", {}, dict(endpoint=None, region=None, force_path_style=None, skip_verify=False)),
    # Durations and names.
    ("url: s3://b/db\nretention: 72h\nsync-interval: 10s\nname: primary", {},
     dict(name="primary", retention_seconds=259200.0, sync_interval_seconds=10.0)),
    ("url: s3://b/db", {}, dict(name="s3", retention_seconds=None, sync_interval_seconds=1.0)),
    ("url: s3://b/db\ntype: s3", {}, dict(type="s3")),
    # Credentials in the replica.
    (f"url: s3://b/db\naccess-key-id: {ACCESS}\nsecret-access-key: {SECRET}", {},
     dict(access_key_id=ACCESS, secret_access_key=SECRET)),
]


@pytest.mark.parametrize("replica_yaml, env, expected", S3_CASES, ids=[c[0].splitlines()[0] + f" #{i}" for i, c in enumerate(S3_CASES)])
def test_s3_replica_forms(tmp_path, replica_yaml, env, expected):
    replica = one_replica(load(tmp_path, s3_yaml(replica_yaml), env))
    assert replica.type == "s3"
    for name, value in expected.items():
        assert getattr(replica, name) == value, name


def test_top_level_defaults_fill_empty_replica_fields(tmp_path):
    text = f"""
    access-key-id: {ACCESS}
    secret-access-key: {SECRET}
    bucket: top-bucket
    endpoint: https://top.example
    region: top-region
    force-path-style: false
    skip-verify: true
    sync-interval: 5s
    dbs:
      - path: /a.db
        replicas:
          - type: s3
            name: inherits
          - type: s3
            name: own
            bucket: own-bucket
            endpoint: https://own.example
            region: own-region
            access-key-id: OWNKEY
            secret-access-key: OWNSECRET
            force-path-style: true
            skip-verify: false
            sync-interval: 1m
    """
    inherits, own = load(tmp_path, text).dbs[0].replicas
    assert (inherits.bucket, inherits.endpoint, inherits.region) == ("top-bucket", "https://top.example", "top-region")
    assert (inherits.access_key_id, inherits.secret_access_key) == (ACCESS, SECRET)
    assert (inherits.force_path_style, inherits.skip_verify, inherits.sync_interval_seconds) == (False, True, 5.0)
    assert (own.bucket, own.endpoint, own.region) == ("own-bucket", "https://own.example", "own-region")
    assert (own.access_key_id, own.secret_access_key) == ("OWNKEY", "OWNSECRET")
    assert (own.force_path_style, own.skip_verify, own.sync_interval_seconds) == (True, False, 60.0)


def test_top_level_secret_propagates_per_field(tmp_path):
    text = f"secret-access-key: {SECRET}\n" + s3_yaml(f"url: s3://b/p\naccess-key-id: {ACCESS}")
    replica = one_replica(load(tmp_path, text))
    assert (replica.access_key_id, replica.secret_access_key) == (ACCESS, SECRET)


def test_file_replicas_and_db_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = """
    dbs:
      - path: data/app.db
        replicas:
          - path: backups/app
          - name: home
            type: file
            path: ~/replica
          - name: url
            url: file:///srv/replica/../app
      - path: ~/other.db
        replica:
          url: file:/abs/other
    """
    first, second = load(tmp_path, text).dbs
    assert first.path == str(tmp_path / "data/app.db") and first.written_path == "data/app.db"
    assert [(r.name, r.type, r.path) for r in first.replicas] == [
        ("file", "file", str(tmp_path / "backups/app")),
        ("home", "file", str(tmp_path / "home/replica")),
        ("url", "file", "/srv/app"),
    ]
    assert second.path == str(tmp_path / "home/other.db")
    assert second.replicas[0].path == "/abs/other"


def test_several_dbs_and_replicas_keep_order(tmp_path):
    text = """
    dbs:
      - path: /a.db
        replicas:
          - {name: one, url: s3://b/a}
          - {name: two, url: "file:///r/a"}
      - path: /b.db
        replica: {url: s3://b/b}
    """
    cfg = load(tmp_path, text)
    assert [(db.path, [r.name for r in db.replicas]) for db in cfg.dbs] == [("/a.db", ["one", "two"]), ("/b.db", ["s3"])]


def test_yaml_anchors_and_merge_keys_work(tmp_path):
    text = """
    x-s3: &s3
      type: s3
      bucket: shared
      region: auto
    dbs:
      - path: /a.db
        replica:
          <<: *s3
          path: a
    """
    replica = one_replica(load(tmp_path, text))
    assert (replica.bucket, replica.region, replica.path) == ("shared", "auto", "a")


# ------------------------------------------------------------------ Railway / AWS fallbacks

BARE_S3 = "type: s3\npath: db"

# (replica yaml, env, expected fields)
FALLBACK_CASES = [
    (BARE_S3, {"BUCKET_NAME": "railway", "AWS_S3_BUCKET_NAME": "preset"}, dict(bucket="railway")),
    (BARE_S3, {"BUCKET_NAME": "", "AWS_S3_BUCKET_NAME": "preset"}, dict(bucket="preset")),
    ("type: s3\nbucket: file-wins", {"BUCKET_NAME": "railway"}, dict(bucket="file-wins")),
    ("url: s3:///db", {"BUCKET_NAME": "railway"}, dict(bucket="railway", path="db")),
    (BARE_S3, {"BUCKET_NAME": "b", "BUCKET_ENDPOINT": "https://railway.example",
               "AWS_ENDPOINT_URL_S3": "https://s3-specific.example", "AWS_ENDPOINT_URL": "https://generic.example"},
     dict(endpoint="https://railway.example")),
    (BARE_S3, {"BUCKET_NAME": "b", "AWS_ENDPOINT_URL_S3": "https://s3-specific.example",
               "AWS_ENDPOINT_URL": "https://generic.example"}, dict(endpoint="https://s3-specific.example")),
    (BARE_S3, {"BUCKET_NAME": "b", "AWS_ENDPOINT_URL": "storage.railway.app"}, dict(endpoint="storage.railway.app")),
    ("type: s3\nbucket: b\nendpoint: https://file.example", {"BUCKET_ENDPOINT": "https://env.example"},
     dict(endpoint="https://file.example")),
    ("url: s3://mybkt.s3.filebase.com/db", {"BUCKET_ENDPOINT": "https://env.example"},
     dict(endpoint="https://s3.filebase.com")),
    (BARE_S3, {"BUCKET_NAME": "b", "AWS_DEFAULT_REGION": "auto", "AWS_REGION": "us-east-2"}, dict(region="auto")),
    (BARE_S3, {"BUCKET_NAME": "b", "AWS_REGION": "us-east-2"}, dict(region="us-east-2")),
    ("type: s3\nbucket: b\nregion: eu-west-1", {"AWS_DEFAULT_REGION": "auto"}, dict(region="eu-west-1")),
    (BARE_S3, {"BUCKET_NAME": "b", "AWS_S3_URL_STYLE": "path"}, dict(force_path_style=True)),
    (BARE_S3, {"BUCKET_NAME": "b", "AWS_S3_URL_STYLE": "virtual"}, dict(force_path_style=False)),
    (BARE_S3, {"BUCKET_NAME": "b", "AWS_S3_URL_STYLE": " Path "}, dict(force_path_style=True)),
    (BARE_S3, {"BUCKET_NAME": "b", "AWS_S3_URL_STYLE": ""}, dict(force_path_style=None)),
    ("type: s3\nbucket: b\nforce-path-style: false", {"AWS_S3_URL_STYLE": "path"}, dict(force_path_style=False)),
    ("url: s3://b/db?forcePathStyle=true", {"AWS_S3_URL_STYLE": "virtual"}, dict(force_path_style=True)),
    (BARE_S3, {"BUCKET_NAME": "b", **CREDS}, dict(access_key_id=ACCESS, secret_access_key=SECRET)),
    (BARE_S3, {"BUCKET_NAME": "b", "LITESTREAM_ACCESS_KEY_ID": ACCESS, "LITESTREAM_SECRET_ACCESS_KEY": SECRET},
     dict(access_key_id=ACCESS, secret_access_key=SECRET)),
    (BARE_S3, {"BUCKET_NAME": "b", **CREDS, "LITESTREAM_ACCESS_KEY_ID": "LS", "LITESTREAM_SECRET_ACCESS_KEY": "LS2"},
     dict(access_key_id=ACCESS, secret_access_key=SECRET)),
    (BARE_S3, {"BUCKET_NAME": "b", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
               "LITESTREAM_ACCESS_KEY_ID": ACCESS, "LITESTREAM_SECRET_ACCESS_KEY": SECRET},
     dict(access_key_id=ACCESS, secret_access_key=SECRET)),
    ("type: s3\nbucket: b\naccess-key-id: FILEKEY\nsecret-access-key: FILESECRET", CREDS,
     dict(access_key_id="FILEKEY", secret_access_key="FILESECRET")),
    (BARE_S3, {"BUCKET_NAME": "b"}, dict(access_key_id=None, secret_access_key=None)),
]


@pytest.mark.parametrize("replica_yaml, env, expected", FALLBACK_CASES, ids=[f"#{i}" for i in range(len(FALLBACK_CASES))])
def test_railway_and_aws_environment_fallbacks(tmp_path, replica_yaml, env, expected):
    replica = one_replica(load(tmp_path, s3_yaml(replica_yaml), env))
    for name, value in expected.items():
        assert getattr(replica, name) == value, name


def test_fallbacks_do_not_touch_file_replicas(tmp_path):
    replica = one_replica(load(tmp_path, s3_yaml("path: /backups/a"), {"BUCKET_NAME": "b", **CREDS}))
    assert (replica.type, replica.bucket, replica.access_key_id) == ("file", None, None)


# ------------------------------------------------------------------------------------ errors

# (yaml, env, substrings every message must contain)
ERROR_CASES = [
    ("dbs: [\n  - path: x\n", {}, ["line", "invalid YAML"]),
    ("dbs:\n  - path: /a.db\n     replicas: x\n", {}, ["line 3", "invalid YAML"]),
    ("", {}, ["dbs", "empty"]),
    ("- just\n- a list\n", {}, ["expected a mapping"]),
    ("addr: :9090\n", {}, ["dbs", "no databases configured"]),
    ("dbs: []\n", {}, ["dbs", "is empty"]),
    ("dbs: /a.db\n", {}, ["dbs", "expected a list"]),
    ("dbs:\n  - replicas: [{url: s3://b/p}]\n", {}, ["dbs[0].path", "no path"]),
    ("dbs:\n  - dir: /data\n    replica: {url: s3://b/p}\n", {}, ["dbs[0].pattern", "required with dir:"]),
    ("dbs:\n  - path: /a.db\n", {}, ["dbs[0]", "no replica", "replica:", "replicas:"]),
    ("dbs:\n  - path: /a.db\n    replicas: []\n", {}, ["dbs[0].replicas", "is empty"]),
    ("dbs:\n  - path: /a.db\n    replica: {url: s3://b/p}\n    replicas: [{url: s3://b/q}]\n", {},
     ["dbs[0]", "both replica: and replicas:"]),
    ("dbs:\n  - path: /a.db\n    replicas: [s3://b/p]\n", {}, ["dbs[0].replicas[0]", "expected a mapping"]),
    (s3_yaml("type: gcs\nbucket: b"), {},
     ["dbs[0].replicas[0].type", "replica type 'gcs' is not supported by restorable (supported: s3, file)"]),
    (s3_yaml("url: gs://b/p"), {}, ["dbs[0].replicas[0].url", "replica type 'gs' is not supported"]),
    (s3_yaml("url: abs://acct@container/p"), {}, ["replica type 'abs' is not supported"]),
    (s3_yaml("url: sftp://host/p"), {}, ["replica type 'sftp' is not supported"]),
    (s3_yaml("url: http://b/p"), {}, ["replica type 'http' is not supported"]),
    (s3_yaml("url: bucket/path"), {}, ["dbs[0].replicas[0].url", "is not a URL", "s3://BUCKET/PATH"]),
    (s3_yaml("url: s3:///db"), {}, ["dbs[0].replicas[0].url", "no bucket", "BUCKET_NAME", "AWS_S3_BUCKET_NAME"]),
    (s3_yaml("url: s3://localhost:9000/db"), {}, ["no bucket"]),
    (s3_yaml("type: s3\npath: db"), {},
     ["dbs[0].replicas[0].bucket", "no bucket", "bucket:", "BUCKET_NAME or AWS_S3_BUCKET_NAME"]),
    (s3_yaml("url: s3://b/p\npath: other"), {}, ["dbs[0].replicas[0]", "cannot specify url & path for s3 replica"]),
    (s3_yaml("url: s3://b/p\nbucket: other"), {}, ["cannot specify url & bucket for s3 replica"]),
    (s3_yaml("url: file:///r\npath: /other"), {}, ["cannot specify url & path for file replica"]),
    (s3_yaml("url: s3://b/p\ntype: file"), {}, ["dbs[0].replicas[0].type", "contradicts the url scheme 's3'"]),
    (s3_yaml("type: s3\nbucket: b\npath: s3://b/p"), {}, ["dbs[0].replicas[0].path", "cannot be a url"]),
    (s3_yaml("path: file:///r"), {}, ["cannot be a url"]),
    (s3_yaml("type: file"), {}, ["dbs[0].replicas[0].path", "needs a directory"]),
    (s3_yaml("url: file://host/r"), {}, ["file:///ABSOLUTE/PATH"]),
    (s3_yaml("url: s3://b:port/p"), {}, ["invalid host or port"]),
    (s3_yaml("url: s3://[::1/p"), {}, ["not a valid URL"]),
    (s3_yaml("url: s3://b/p?forcePathStyle=maybe"), {}, ["forcePathStyle='maybe'", "is not a boolean"]),
    (s3_yaml("url: s3://b/p\nforce-path-style: maybe"), {}, ["dbs[0].replicas[0].force-path-style", "'maybe'"]),
    (s3_yaml("url: s3://b/p\nskip-verify: [1]"), {}, ["skip-verify", "expected true or false"]),
    (s3_yaml("url: s3://b/p\nretention: 1 week"), {}, ["dbs[0].replicas[0].retention", "'1 week'", "1h30m"]),
    (s3_yaml("url: s3://b/p\nsync-interval: -1s"), {}, ["sync-interval", "negative"]),
    (s3_yaml("url: s3://b/p\nbucket_typo: [x]\nregion: [x]"), {}, ["dbs[0].replicas[0].region", "expected a string"]),
    (s3_yaml("url: s3://b/p\nage:\n  identities: [AGE-SECRET-KEY-1]"), {},
     ["dbs[0].replicas[0].age.identities", "not an age identity"]),
    ("dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n      - url: s3://b/q\n", {},
     ["dbs[0].replicas[1].name", "duplicate replica name 's3'", "distinct name"]),
    ("dbs:\n  - path: /a.db\n    replicas:\n      - {name: x, url: s3://b/p}\n      - {name: x, path: /r}\n", {},
     ["dbs[0].replicas[1].name", "duplicate replica name 'x'"]),
    (s3_yaml("url: s3://b/p\naccess-key-id: A"), {}, ["access-key-id is set but secret-access-key is empty"]),
    (s3_yaml("url: s3://b/p\nsecret-access-key: S"), {}, ["secret-access-key is set but access-key-id is empty"]),
    (s3_yaml("url: s3://b/p"), {"AWS_ACCESS_KEY_ID": ACCESS}, ["AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"]),
    (s3_yaml("url: s3://b/p"), {"AWS_S3_URL_STYLE": "dns"}, ["AWS_S3_URL_STYLE='dns'", "'path' or 'virtual'"]),
]


@pytest.mark.parametrize("text, env, fragments", ERROR_CASES, ids=[f"#{i}" for i in range(len(ERROR_CASES))])
def test_config_errors_are_one_line_naming_key_and_fix(tmp_path, text, env, fragments):
    message = load_error(tmp_path, text, env)
    for fragment in fragments:
        assert fragment in message


def test_duplicate_names_are_per_database(tmp_path):
    text = "dbs:\n  - path: /a.db\n    replica: {url: s3://b/a}\n  - path: /b.db\n    replica: {url: s3://b/b}\n"
    assert [db.replicas[0].name for db in load(tmp_path, text).dbs] == ["s3", "s3"]


def test_unreadable_config_is_a_config_error(tmp_path):
    path = tmp_path / "litestream.yml"
    path.write_bytes(b"dbs: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        config_sources.load(str(path), {})


# ------------------------------------------------------------------------ secrets stay out

URL_PASSWORD = "urlpa55word"

# (yaml, env) that fail while a known secret is in play.
SECRET_ERROR_CASES = [
    (f"secret-access-key: {SECRET}: oops\ndbs: []\n", {}),
    ("secret-access-key: $S\ndbs: []\n", {"S": SECRET}),
    ("secret-access-key: $S\ndbs: x\n", {"S": f"{SECRET}: broken"}),  # expansion breaks the YAML
    (s3_yaml(f"url: s3://b/p\nsecret-access-key: {SECRET}"), {}),
    (s3_yaml(f"url: s3://b/p\naccess-key-id: {ACCESS}"), {}),
    (s3_yaml("url: s3://b/p"), {"AWS_ACCESS_KEY_ID": ACCESS}),
    (s3_yaml("url: s3://b/p"), {"AWS_SECRET_ACCESS_KEY": SECRET}),
    (s3_yaml(f"url: s3://key:{URL_PASSWORD}@b:bad/p"), {}),
    (s3_yaml(f"url: s3://key:{URL_PASSWORD}@[b/p"), {}),
    (s3_yaml(f"url: s3://key:{URL_PASSWORD}@/p"), {}),
    (s3_yaml(f"url: s3://key:{URL_PASSWORD}@b/p?forcePathStyle=x"), {}),
    (s3_yaml(f"url: gs://key:{URL_PASSWORD}@b/p"), {}),
    (s3_yaml(f"url: 'file://key:{URL_PASSWORD}@host/p'"), {}),
    (s3_yaml(f"url: s3://key:pa/ss{URL_PASSWORD}@b/p"), {}),
    (f"access-key-id: {ACCESS}\nsecret-access-key: {SECRET}\n"
     "dbs:\n  - path: /a.db\n    replicas:\n      - url: s3://b/p\n      - url: s3://b/q\n", CREDS),
    (f"secret-access-key: {SECRET}\n" + s3_yaml("url: s3://b/p\nregion: $UNSET"), {}),
    (s3_yaml(f"type: s3\nbucket: b\naccess-key-id: {ACCESS}\nsecret-access-key: {SECRET}\nretention: x"), {}),
]


@pytest.mark.parametrize("text, env", SECRET_ERROR_CASES, ids=[f"#{i}" for i in range(len(SECRET_ERROR_CASES))])
def test_errors_never_contain_secret_values(tmp_path, text, env):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    chained = info.value.__cause__
    for secret in (SECRET, ACCESS, URL_PASSWORD):
        assert secret not in str(info.value)
        assert chained is None or secret not in str(chained)


def test_secrets_lists_every_secret_and_repr_hides_them(tmp_path):
    text = f"""
    access-key-id: TOPKEY
    secret-access-key: TOPSECRET
    dbs:
      - path: /a.db
        replicas:
          - {{name: a, url: s3://b/a}}
          - {{name: b, url: s3://b/b, access-key-id: {ACCESS}, secret-access-key: {SECRET}}}
          - {{name: c, path: /r}}
    """
    cfg = load(tmp_path, text)
    assert set(cfg.secrets()) == {"TOPKEY", "TOPSECRET", ACCESS, SECRET}
    assert SECRET not in repr(cfg) and "TOPSECRET" not in repr(cfg)


def test_secrets_include_credentials_inside_an_endpoint(tmp_path):
    replica_yaml = f"type: s3\nbucket: b\nendpoint: https://user:{URL_PASSWORD}@minio.internal:9000"
    cfg = load(tmp_path, s3_yaml(replica_yaml))
    assert cfg.secrets() == [f"user:{URL_PASSWORD}"]


def test_url_credentials_are_ignored_not_kept(tmp_path):
    replica = one_replica(load(tmp_path, s3_yaml(f"url: s3://key:{URL_PASSWORD}@bkt/p")))
    assert (replica.bucket, replica.path, replica.access_key_id) == ("bkt", "p", None)
    assert URL_PASSWORD not in repr(replica) + replica.describe()


# ------------------------------------------------------------------------------ select_dbs

SELECT_TEXT = """
dbs:
  - path: /data/app.db
    replica: {url: s3://b/app}
  - path: data/rel.db
    replica: {url: s3://b/rel}
  - path: ~/home.db
    replica: {url: s3://b/home}
"""


@pytest.mark.parametrize("wanted, expected", [
    ([], ["app", "rel", "home"]),
    (["/data/app.db"], ["app"]),
    (["/data/./app.db"], ["app"]),
    (["data/rel.db"], ["rel"]),                     # as written
    (["./data/rel.db"], ["rel"]),                   # made absolute against the CWD
    (["{cwd}/data/rel.db"], ["rel"]),
    (["~/home.db"], ["home"]),
    (["{home}/home.db"], ["home"]),
    (["data/rel.db", "/data/app.db", "/data/app.db"], ["rel", "app"]),
])
def test_select_dbs_matches_absolute_or_written_path(tmp_path, monkeypatch, wanted, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load(tmp_path, SELECT_TEXT)
    wanted = [w.format(cwd=tmp_path, home=tmp_path / "home") for w in wanted]
    chosen = config_sources.select_dbs(cfg, wanted)
    assert [db.replicas[0].path for db in chosen] == expected


@pytest.mark.parametrize("wanted", [["app.db"], ["/data/other.db"], ["/data/app.db", "nope.db"]])
def test_select_unknown_db_lists_known_paths(tmp_path, monkeypatch, wanted):
    monkeypatch.chdir(tmp_path)
    cfg = load(tmp_path, SELECT_TEXT)
    with pytest.raises(ConfigError) as info:
        config_sources.select_dbs(cfg, wanted)
    assert "/data/app.db" in str(info.value) and str(tmp_path / "data/rel.db") in str(info.value)
    assert "--db" in str(info.value)


# -------------------------------------------------------------------------- config_from_urls


def test_config_from_urls_one_db_per_url():
    env = {"AWS_DEFAULT_REGION": "auto", **CREDS}
    cfg = config_sources.config_from_urls(
        ["s3://bkt/app.db?endpoint=https://acct.r2.cloudflarestorage.com", "file:///backups/app"], env)
    s3db, filedb = cfg.dbs
    assert s3db.path == "s3://bkt/app.db?endpoint=https://acct.r2.cloudflarestorage.com"
    assert s3db.replicas == (ReplicaConfig(
        name="s3", type="s3", path="app.db", bucket="bkt", endpoint="https://acct.r2.cloudflarestorage.com",
        region="auto", access_key_id=ACCESS, secret_access_key=SECRET),)
    assert filedb.replicas == (ReplicaConfig(name="file", type="file", path="/backups/app"),)
    assert cfg.source == "command line" and set(cfg.secrets()) == {ACCESS, SECRET}


def test_config_from_urls_uses_env_fallbacks_for_missing_bucket():
    cfg = config_sources.config_from_urls(["s3:///app.db"], {"BUCKET_NAME": "railway", "BUCKET_ENDPOINT": "https://e"})
    replica = cfg.dbs[0].replicas[0]
    assert (replica.bucket, replica.endpoint, replica.path) == ("railway", "https://e", "app.db")


def test_config_from_urls_redacts_credentials_in_db_path():
    cfg = config_sources.config_from_urls([f"s3://key:{URL_PASSWORD}@bkt/app.db"], {})
    assert URL_PASSWORD not in cfg.dbs[0].path and cfg.dbs[0].path == "s3://***@bkt/app.db"


@pytest.mark.parametrize("urls, fragment", [
    ([], "no replica URL given"),
    (["gs://b/p"], "replica type 'gs' is not supported"),
    (["bucket/path"], "is not a URL"),
    (["s3:///p"], "no bucket"),
    ([f"s3://k:{URL_PASSWORD}@b:x/p"], "invalid host or port"),
])
def test_config_from_urls_errors(urls, fragment):
    with pytest.raises(ConfigError) as info:
        config_sources.config_from_urls(urls, {})
    assert fragment in str(info.value) and URL_PASSWORD not in str(info.value)
    assert "command line" in str(info.value)


# ------------------------------------------------------------------------------ properties


@given(text=st.text(alphabet=st.sampled_from(list("ab$${}_19 :\n#-*./\"'[]")), max_size=60),
       env=st.dictionaries(st.sampled_from(["a", "b", "A", "_", "a_b", "1"]), st.text(max_size=5), max_size=4))
@hsettings(max_examples=400, deadline=None)
def test_expansion_raises_only_config_errors(text, env):
    try:
        result = config_litestream_yml.expand_env(text, env)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert "$" not in text or isinstance(result, str)


@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
@hsettings(max_examples=300, deadline=None)
def test_expansion_of_dollar_free_text_is_identity(text):
    text = text.replace("$", "")
    assert config_litestream_yml.expand_env(text, {}) == text


@given(rest=st.text(max_size=60))
@hsettings(max_examples=500, deadline=None)
def test_url_parsing_raises_only_config_errors(rest):
    for prefix in ("s3://", "file://", "", "s3:"):
        try:
            config_urls.parse_s3_url(prefix + rest, "k")
            config_urls.parse_file_url(prefix + rest, "k")
        except ConfigError as exc:
            assert "\n" not in str(exc)


@given(host=st.from_regex(r"[a-z0-9.\-:@\[\]%]{0,30}", fullmatch=True),
       path=st.text(alphabet="ab/.%20?=&", max_size=20))
@hsettings(max_examples=300, deadline=None)
def test_replica_urls_in_config_raise_only_config_errors(host, path):
    url = f"s3://{host}/{path}"
    try:
        cfg = config_sources.config_from_urls([url], {})
    except ConfigError:
        return
    replica = cfg.dbs[0].replicas[0]
    assert replica.bucket and not replica.path.startswith("/")


@given(path=st.text(alphabet="ab/.", max_size=20))
def test_url_path_is_cleaned_without_leading_slash(path):
    cleaned = config_urls.parse_s3_url(f"s3://b/{path}", "k").path
    assert not cleaned.startswith("/") and "//" not in cleaned
    assert config_urls.parse_s3_url(f"s3://b/{cleaned}", "k").path == (cleaned or "")


def test_format_key():
    assert config_envexpand.format_key(["dbs", 0, "replicas", 2, "bucket"]) == "dbs[0].replicas[2].bucket"
    assert config_envexpand.format_key(["access-key-id"]) == "access-key-id"


def test_redact_url():
    assert config_urls.redact_url("s3://a:b@c/d") == "s3://***@c/d"
    assert config_urls.redact_url("s3://c/d") == "s3://c/d"
    assert config_urls.redact_url("s3://a:b/c@d/e") == "s3://***@d/e"


YAML_TOKENS = ["dbs:", "\n", "  ", "- ", "path:", "replicas:", "replica:", "url:", "type:", "s3", "file",
               "bucket:", "s3://b/p", "file:///r", " ", "[", "]", "{", "}", ",", "$A", "${B}", "~", "null",
               "retention:", "1h", "force-path-style:", "yes", "name:", "x", "!!binary", "!!int", "&a", "*a",
               "? ", ":", "'", '"', "#", "access-key-id:", "age:", "dir:", "0x1F"]


@given(tokens=st.lists(st.sampled_from(YAML_TOKENS), max_size=40), env=st.sampled_from([{}, {"A": "a", "B": ""}]))
@hsettings(max_examples=500, deadline=None)
def test_parsing_arbitrary_documents_raises_only_config_errors(tokens, env):
    try:
        cfg = config_litestream_yml.parse("".join(tokens), env, source="fuzz.yml", cwd="/work")
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert cfg.dbs and all(db.replicas for db in cfg.dbs)
