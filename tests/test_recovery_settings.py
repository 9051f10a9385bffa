"""restorable.yml keys and variables of the recovery objectives: read, shown, and refused with the key named."""
from __future__ import annotations

import pytest

from lib.config.settings import parse_settings
from lib.errors import ConfigError
from tests.support import restorable_env, run_job


def test_keys_are_read_per_database_over_defaults():
    settings = parse_settings({"defaults": {"max-restore-time": "5m", "drill": "random"},
                               "dbs": {"app.db": {"min-window": "24h", "vault-keep": "daily=7 weekly=4"}}}, "x.yml")
    app = settings.for_db("/data/app.db")
    assert (app.max_restore_seconds, app.min_window_seconds, app.drill, app.vault_keep) == (
        300.0, 86400.0, "random", "daily=7 weekly=4")
    assert settings.for_db("/data/other.db").drill == "random"
    assert settings.for_db("/data/other.db").vault_keep is None


@pytest.mark.parametrize("block, named", [
    ({"drill": "sometimes"}, "defaults.drill"),
    ({"vault-keep": "daily=lots"}, "defaults.vault-keep"),
    ({"vault-keep": 7}, "defaults.vault-keep"),
    ({"max-restore-time": "0s"}, "defaults.max-restore-time"),
    ({"min-window": "soon"}, "defaults.min-window"),
])
def test_bad_values_name_the_key(block, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_settings({"defaults": block}, "x.yml")


@pytest.mark.parametrize("args, env, named", [
    (["--drill", "always"], {}, "--drill"),
    ([], {"RESTORABLE_DRILL_SEED": "abc"}, "RESTORABLE_DRILL_SEED"),
    ([], {"RESTORABLE_VAULT_KEEP": "hourly=3"}, "RESTORABLE_VAULT_KEEP"),
])
def test_bad_flags_and_variables_are_config_errors(tmp_path, args, env, named):
    url = (tmp_path / "replica").as_uri()
    proc = run_job("jobs.verify", url, *args, env=restorable_env(env))
    assert proc.returncode == 3 and named in proc.stderr and "Traceback" not in proc.stderr
