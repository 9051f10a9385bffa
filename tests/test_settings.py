"""lib.config.settings (restorable.yml, RESTORABLE_* overrides, flags) and lib.units."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from textwrap import dedent

import pytest
import yaml
from hypothesis import given, settings as hsettings, strategies as st

from lib.config.overrides import with_overrides
from lib.config.settings import load_settings, parse_settings
from lib.config.settings_model import DbSettings, Freshness, Probe, Settings
from lib.config.settings_values import _READERS
from lib.errors import ConfigError
from lib.units import format_duration, parse_duration

FULL = """
defaults:
  max-age: 1h
  allow-empty: false
  retention: 24h
  enforce-retention: false
  keep-snapshots: 1
  row-drop-error: 0.5
  row-drop-warning: 0.1
dbs:
  /data/app.db:
    max-age: 2h
    expect-tables: [users, orders]
    min-rows: {users: 1}
    freshness: {sql: "SELECT max(updated_at) FROM heartbeat", max-age: 10m}
    probes:
      - {name: admin exists, sql: "SELECT count(*) > 0 FROM users WHERE is_admin"}
  other.db:
    allow-empty: true
"""


def write(tmp_path: Path, text: str, name: str = "restorable.yml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text))
    return path


def load_text(tmp_path: Path, text: str, env: dict | None = None) -> Settings:
    return load_settings(str(write(tmp_path, text)), env or {})


def error_for(tmp_path: Path, text: str, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    assert "\n" not in str(info.value)
    return str(info.value)


# ------------------------------------------------------------------------------- finding it


def test_no_file_anywhere_gives_builtin_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = load_settings(None, {})
    assert loaded == Settings(source=None)
    assert loaded.for_db("/data/app.db") == DbSettings()


def test_local_restorable_yml_is_used_when_present(tmp_path, monkeypatch):
    write(tmp_path, "defaults: {max-age: 5m}")
    monkeypatch.chdir(tmp_path)
    loaded = load_settings(None, {})
    assert loaded.source == "restorable.yml" and loaded.defaults.max_age_seconds == 300


def test_cli_path_beats_env_path_beats_local_file(tmp_path, monkeypatch):
    write(tmp_path, "defaults: {max-age: 1m}")
    env_file = write(tmp_path, "defaults: {max-age: 2m}", "env.yml")
    cli_file = write(tmp_path, "defaults: {max-age: 3m}", "cli.yml")
    monkeypatch.chdir(tmp_path)
    env = {"RESTORABLE_SETTINGS": str(env_file)}
    assert load_settings(str(cli_file), env).defaults.max_age_seconds == 180
    assert load_settings(None, env).defaults.max_age_seconds == 120


@pytest.mark.parametrize("cli, env, origin", [
    ("nope.yml", {}, "--settings"),
    (None, {"RESTORABLE_SETTINGS": "nope.yml"}, "RESTORABLE_SETTINGS"),
])
def test_named_settings_file_must_exist(tmp_path, monkeypatch, cli, env, origin):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"nope.yml \\(from {origin}\\) does not exist"):
        load_settings(cli, env)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "defaults:\ndbs:\n"])
def test_empty_file_means_defaults(tmp_path, text):
    loaded = load_text(tmp_path, text)
    assert loaded.defaults == DbSettings() and not loaded.per_db


# ----------------------------------------------------------------------------- the format


def test_full_example_from_the_docs(tmp_path):
    loaded = load_text(tmp_path, FULL)
    app = loaded.for_db("/data/app.db")
    assert app == DbSettings(
        max_age_seconds=7200.0,
        allow_empty=False,
        retention_seconds=86400.0,
        enforce_retention=False,
        keep_snapshots=1,
        row_drop_warning=0.1,
        row_drop_error=0.5,
        expect_tables=("users", "orders"),
        min_rows={"users": 1},
        freshness=Freshness(sql="SELECT max(updated_at) FROM heartbeat", max_age_seconds=600.0),
        probes=(Probe(name="admin exists", sql="SELECT count(*) > 0 FROM users WHERE is_admin"),),
    )
    assert loaded.for_db("/srv/other.db").allow_empty is True
    assert loaded.for_db("/srv/other.db").max_age_seconds == 3600.0  # merged over defaults
    assert loaded.for_db("/srv/unknown.db") == loaded.defaults


def test_example_in_docs_loads(tmp_path):
    docs = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    blocks = [b.split("```", 1)[0] for b in docs.split("```yaml\n")[1:]]
    example = next(b for b in blocks if b.startswith("defaults:"))
    loaded = load_text(tmp_path, example)
    assert loaded.for_db("/data/app.db") == load_text(tmp_path, FULL).for_db("/data/app.db")


@pytest.mark.parametrize("key, value, attribute, expected", [
    ("max-age", "90m", "max_age_seconds", 5400.0),
    ("max-age", 600, "max_age_seconds", 600.0),
    ("max-age", "1d", "max_age_seconds", 86400.0),
    ("allow-empty", True, "allow_empty", True),
    ("retention", "7d", "retention_seconds", 604800.0),
    ("enforce-retention", True, "enforce_retention", True),
    ("keep-snapshots", 3, "keep_snapshots", 3),
    ("row-drop-warning", 0, "row_drop_warning", 0.0),
    ("row-drop-error", 1, "row_drop_error", 1.0),
    ("expect-tables", ["a"], "expect_tables", ("a",)),
    ("min-rows", {"a": 0}, "min_rows", {"a": 0}),
    ("probes", [], "probes", ()),
])
def test_each_key_in_defaults_and_per_db(tmp_path, key, value, attribute, expected):
    as_yaml = yaml.safe_dump({key: value}, default_flow_style=True).strip()
    in_defaults = load_text(tmp_path, f"defaults: {as_yaml}\n")
    in_block = load_text(tmp_path, f"dbs:\n  app.db: {as_yaml}\n")
    assert getattr(in_defaults.defaults, attribute) == expected
    assert getattr(in_block.for_db("/x/app.db"), attribute) == expected
    assert in_block.defaults == DbSettings()


def test_per_db_lists_replace_default_lists(tmp_path):
    text = """
    defaults: {expect-tables: [users], min-rows: {users: 1}}
    dbs:
      a.db: {expect-tables: [orders]}
      b.db: {}
    """
    loaded = load_text(tmp_path, text)
    assert loaded.for_db("/x/a.db").expect_tables == ("orders",)
    assert dict(loaded.for_db("/x/a.db").min_rows) == {"users": 1}
    assert loaded.for_db("/x/b.db").expect_tables == ("users",)


@pytest.mark.parametrize("key, lookup, matches", [
    ("/data/app.db", "/data/app.db", True),
    ("/data/app.db", "/data/./app.db", True),
    ("/data/app.db", "/other/app.db", False),   # a full path key matches only that path
    ("app.db", "/anywhere/app.db", True),        # a basename key matches any directory
    ("app.db", "/anywhere/app.db2", False),
    ("data/app.db", "{cwd}/data/app.db", True),  # relative keys resolve against the CWD
    ("~/app.db", "{home}/app.db", True),
    ("s3://bkt/app.db", "s3://bkt/app.db", True),  # config_from_urls uses the URL as path
    ("app.db", "s3://bkt/app.db", True),
])
def test_for_db_matches_exact_path_then_basename(tmp_path, monkeypatch, key, lookup, matches):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    loaded = load_text(tmp_path, f"dbs:\n  '{key}': {{keep-snapshots: 7}}\n")
    found = loaded.for_db(lookup.format(cwd=tmp_path, home=tmp_path / "home"))
    assert (found.keep_snapshots == 7) is matches


def test_exact_path_wins_over_basename(tmp_path):
    loaded = load_text(tmp_path, "dbs:\n  app.db: {keep-snapshots: 2}\n  /data/app.db: {keep-snapshots: 3}\n")
    assert loaded.for_db("/data/app.db").keep_snapshots == 3
    assert loaded.for_db("/srv/app.db").keep_snapshots == 2


def test_unmatched_lists_keys_that_name_no_database(tmp_path):
    loaded = load_text(tmp_path, "dbs:\n  app.db: {}\n  /data/typo.db: {}\n  /data/b.db: {}\n")
    assert loaded.unmatched(["/srv/app.db", "/data/b.db"]) == ["/data/typo.db"]


# --------------------------------------------------------------------------------- errors

ERROR_CASES = [
    ("defaults: {max-agee: 1h}\n", ["defaults.max-agee", "unknown key", "max-age"]),
    ("default: {max-age: 1h}\n", ["default", "unknown key", "defaults"]),
    ("dbs:\n  app.db: {probe: []}\n", ["dbs.app.db.probe", "unknown key"]),
    ("- a\n", ["expected a mapping"]),
    ("defaults: [max-age]\n", ["defaults", "expected a mapping"]),
    ("dbs: [app.db]\n", ["dbs", "expected a mapping"]),
    ("defaults: {max-age: soon}\n", ["defaults.max-age", "'soon'", "1h30m"]),
    ("defaults: {max-age: 0s}\n", ["defaults.max-age", "longer than zero"]),
    ("defaults: {retention: -1h}\n", ["defaults.retention", "negative"]),
    ("defaults: {allow-empty: 'yes'}\n", ["defaults.allow-empty", "true or false"]),
    ("defaults: {enforce-retention: 1}\n", ["defaults.enforce-retention", "true or false"]),
    ("defaults: {keep-snapshots: 0}\n", ["defaults.keep-snapshots", "at least 1"]),
    ("defaults: {keep-snapshots: 1.5}\n", ["defaults.keep-snapshots"]),
    ("defaults: {row-drop-error: 1.5}\n", ["defaults.row-drop-error", "between 0 and 1"]),
    ("defaults: {row-drop-warning: true}\n", ["defaults.row-drop-warning"]),
    ("defaults: {row-drop-warning: 0.6}\n", ["defaults", "row-drop-warning (0.6) is above row-drop-error (0.5)"]),
    ("dbs:\n  a.db: {row-drop-error: 0.05}\n", ["dbs.a.db", "above row-drop-error"]),
    ("dbs:\n  a.db: {expect-tables: users}\n", ["dbs.a.db.expect-tables", "list of table names"]),
    ("dbs:\n  a.db: {expect-tables: [1]}\n", ["dbs.a.db.expect-tables"]),
    ("dbs:\n  a.db: {min-rows: [users]}\n", ["dbs.a.db.min-rows", "mapping of table to row count"]),
    ("dbs:\n  a.db: {min-rows: {users: -1}}\n", ["dbs.a.db.min-rows.users", "-1"]),
    ("dbs:\n  a.db: {freshness: {sql: 'SELECT 1'}}\n", ["dbs.a.db.freshness", "sql: and max-age:"]),
    ("dbs:\n  a.db: {freshness: {sql: 'SELECT 1', max-age: 1h, column: x}}\n", ["dbs.a.db.freshness.column", "unknown key"]),
    ("dbs:\n  a.db: {freshness: {sql: '', max-age: 1h}}\n", ["dbs.a.db.freshness.sql", "SQL query"]),
    ("dbs:\n  a.db: {freshness: 'SELECT 1'}\n", ["dbs.a.db.freshness", "expected a mapping"]),
    ("dbs:\n  a.db: {probes: {name: x}}\n", ["dbs.a.db.probes", "list"]),
    ("dbs:\n  a.db: {probes: [{sql: 'SELECT 1'}]}\n", ["dbs.a.db.probes[0].name", "needs a name"]),
    ("dbs:\n  a.db: {probes: [{name: x}]}\n", ["dbs.a.db.probes[0].sql", "SQL query"]),
    ("dbs:\n  a.db: {probes: [{name: x, sql: 'SELECT 1', expect: 1}]}\n", ["dbs.a.db.probes[0].expect", "unknown key"]),
    ("dbs:\n  a.db: {probes: [{name: x, sql: 'SELECT 1'}, {name: x, sql: 'SELECT 2'}]}\n",
     ["dbs.a.db.probes[1].name", "duplicate probe name 'x'"]),
    ("dbs:\n  /data/a.db: {}\n  /data/./a.db: {}\n", ["dbs./data/./a.db", "same database"]),
    ("defaults: {max-age: 1h\n", ["line", "invalid YAML"]),
    ("defaults: {max-age: !!int }\n", ["invalid YAML value"]),
]


@pytest.mark.parametrize("text, fragments", ERROR_CASES, ids=[f"#{i}" for i in range(len(ERROR_CASES))])
def test_settings_errors_name_the_key(tmp_path, text, fragments):
    message = error_for(tmp_path, text)
    assert str(tmp_path / "restorable.yml") in message
    for fragment in fragments:
        assert fragment in message


# ------------------------------------------------------------------- environment and flags


@pytest.mark.parametrize("env, attribute, expected", [
    ({"RESTORABLE_MAX_AGE": "3h"}, "max_age_seconds", 10800.0),
    ({"RESTORABLE_MAX_AGE": "120"}, "max_age_seconds", 120.0),
    ({"RESTORABLE_ALLOW_EMPTY": "true"}, "allow_empty", True),
    ({"RESTORABLE_ALLOW_EMPTY": "1"}, "allow_empty", True),
    ({"RESTORABLE_ALLOW_EMPTY": "No"}, "allow_empty", False),
    ({"RESTORABLE_RETENTION": "72h"}, "retention_seconds", 259200.0),
    ({"RESTORABLE_ENFORCE_RETENTION": "yes"}, "enforce_retention", True),
    ({"RESTORABLE_ENFORCE_RETENTION": "off"}, "enforce_retention", False),
    ({"RESTORABLE_MAX_AGE": ""}, "max_age_seconds", 7200.0),  # empty = unset
])
def test_environment_overrides_file_everywhere(tmp_path, env, attribute, expected):
    loaded = load_text(tmp_path, FULL, env)
    assert getattr(loaded.for_db("/data/app.db"), attribute) == expected
    if attribute != "max_age_seconds" or env["RESTORABLE_MAX_AGE"]:
        assert getattr(loaded.defaults, attribute) == expected


def test_environment_overrides_apply_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, {"RESTORABLE_MAX_AGE": "10m"}).for_db("/a.db").max_age_seconds == 600


@pytest.mark.parametrize("env, fragment", [
    ({"RESTORABLE_MAX_AGE": "later"}, "RESTORABLE_MAX_AGE: invalid duration 'later'"),
    ({"RESTORABLE_ALLOW_EMPTY": "maybe"}, "RESTORABLE_ALLOW_EMPTY='maybe' is not a boolean"),
    ({"RESTORABLE_RETENTION": "0"}, "RESTORABLE_RETENTION: must be longer than zero"),
    ({"RESTORABLE_ENFORCE_RETENTION": "2"}, "RESTORABLE_ENFORCE_RETENTION='2'"),
])
def test_bad_environment_override_names_the_variable(tmp_path, monkeypatch, env, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(None, env)
    assert fragment in str(info.value)


def test_flags_win_over_environment_and_file(tmp_path):
    loaded = load_text(tmp_path, FULL, {"RESTORABLE_MAX_AGE": "3h", "RESTORABLE_ALLOW_EMPTY": "true"})
    flagged = with_overrides(loaded, max_age="15m", allow_empty=False, retention=3600, enforce=True)
    for db in (flagged.defaults, flagged.for_db("/data/app.db"), flagged.for_db("/x/other.db")):
        assert (db.max_age_seconds, db.allow_empty, db.retention_seconds, db.enforce_retention) == (900, False, 3600, True)
    assert flagged.for_db("/data/app.db").expect_tables == ("users", "orders")  # untouched


def test_with_overrides_without_values_changes_nothing(tmp_path):
    loaded = load_text(tmp_path, FULL)
    assert with_overrides(loaded) is loaded


@pytest.mark.parametrize("kwargs, fragment", [
    ({"max_age": "soon"}, "--max-age"),
    ({"retention": -5}, "--retention"),
    ({"max_age": 0}, "--max-age: must be longer than zero"),
])
def test_bad_flag_values_name_the_flag(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        with_overrides(Settings(source=None), **kwargs)


# ------------------------------------------------------------------------------- max-age


@pytest.mark.parametrize("sync_interval, expected", [
    (1.0, 3600.0),      # Litestream's default sync-interval: the 1 h floor
    (10.0, 3600.0),
    (60.0, 3600.0),
    (120.0, 7200.0),    # 60 sync intervals
    (3600.0, 216000.0),
])
def test_default_max_age_is_sixty_sync_intervals_at_least_an_hour(sync_interval, expected):
    assert DbSettings.default_max_age(sync_interval) == expected
    assert DbSettings().effective_max_age(sync_interval) == expected


def test_configured_max_age_wins_over_derived():
    assert DbSettings(max_age_seconds=60).effective_max_age(3600) == 60


def test_every_dbsettings_field_has_a_settings_key():
    fields = {f.name for f in dataclasses.fields(DbSettings)} - {"origins"}
    assert {attribute for attribute, _ in _READERS.values()} == fields


def test_settings_are_immutable(tmp_path):
    loaded = load_text(tmp_path, FULL)
    with pytest.raises(TypeError):
        loaded.per_db["x"] = DbSettings()  # type: ignore[index]
    with pytest.raises(TypeError):
        loaded.for_db("/data/app.db").min_rows["users"] = 5  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.defaults.allow_empty = True  # type: ignore[misc]


# ------------------------------------------------------------------------------ durations


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1), ("500ms", 0.5), ("1h30m", 5400), ("24h", 86400), ("7d", 604800), ("1d12h", 129600),
    ("90", 90), ("1.5", 1.5), ("0", 0), ("1.5h", 5400), (".5s", 0.5), ("250us", 0.00025),
    ("250µs", 0.00025), ("10ns", 1e-8), ("+5m", 300), (" 2m ", 120), (45, 45), (2.5, 2.5),
])
def test_parse_duration_go_syntax_plus_days(text, seconds):
    assert parse_duration(text, "k") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "1", "1x", "1 h", "1h 30m", "-1s", "1.2.3s", "abc", "1hh", "s1", "1e3s",
                                  "inf", "nan", "1_000s", None, [], True, float("inf"), -3])
def test_parse_duration_rejects_garbage_naming_key_and_example(text):
    if text == "1":
        assert parse_duration(text, "k") == 1  # bare number: seconds
        return
    with pytest.raises(ConfigError) as info:
        parse_duration(text, "dbs[0].replicas[0].retention")
    assert str(info.value).startswith("dbs[0].replicas[0].retention: ")
    assert "1h30m" in str(info.value)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (1, "1s"), (59, "59s"), (60, "1m"), (61, "61s"), (90, "90s"), (119, "119s"), (120, "2m"),
    (150, "2m30s"), (3600, "1h"), (5400, "1h30m"), (7200, "2h"), (86400, "1d"), (93600, "1d2h"),
    (90061, "1d1h1m1s"), (0.25, "250ms"), (1.5, "1s500ms"), (-90, "-90s"),
])
def test_format_duration_is_compact(seconds, text):
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_round_trips_whole_seconds(seconds):
    assert parse_duration(format_duration(seconds), "k") == seconds


@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_round_trips_milliseconds(millis):
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds), "k") == pytest.approx(seconds, abs=1e-6)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["d", "h", "m", "s", "ms"])), min_size=1, max_size=5))
def test_go_style_components_add_up(parts):
    text = "".join(f"{n}{unit}" for n, unit in parts)
    size = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    assert parse_duration(text, "k") == pytest.approx(sum(n * size[unit] for n, unit in parts))


@given(st.text(max_size=20))
@hsettings(max_examples=500)
def test_parse_duration_raises_only_config_errors(text):
    try:
        seconds = parse_duration(text, "k")
    except ConfigError as exc:
        assert str(exc).startswith("k: ") and "\n" not in str(exc)
    else:
        assert math.isfinite(seconds) and seconds >= 0


@given(st.dictionaries(st.sampled_from(["max-age", "allow-empty", "keep-snapshots", "probes", "min-rows", "x", "a\nb"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-2, 5), st.text(max_size=4),
                                 st.lists(st.text(max_size=3), max_size=2)), max_size=4))
@hsettings(max_examples=300)
def test_parse_settings_raises_only_config_errors(block):
    try:
        parse_settings({"defaults": block, "dbs": {"a.db": block, "b\n.db": block}}, "s.yml")
    except ConfigError as exc:
        assert "\n" not in str(exc)
