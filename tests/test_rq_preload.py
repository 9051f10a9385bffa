"""A worker's preload leaves a job nothing heavy to import.

RQ forks a work horse per job; what the job imports itself is paid again by every job
(with 1 MB tenants it was most of a job's CPU, and two workers verified fewer databases
per minute than one process). After ``lib.fleet.preload.preload()`` a job verifying a
v0.3 replica, a v0.5 replica on S3 and a ``dir:`` tenant on S3 (real litestream
replicas, the real loopback S3 server) must import no module of restorable, boto3,
botocore, numpy, sqlite-utils or lz4; and must still verify them all ``ok``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import restorable_env
from tests.test_fleet_dir import _config, fleet  # noqa: F401 (fixture)
from tests.test_rq import REPO_ROOT

pytestmark = pytest.mark.slow

HEAVY = ("lib", "boto3", "botocore", "s3transfer", "urllib3", "numpy", "sqlite_utils", "lz4")

SCRIPT = f"""
import json, sys
from lib.fleet.preload import preload
from lib.fleet.rqjob import verify_batch

preload()
before = set(sys.modules)
statuses = [r.status for batch in json.loads(sys.argv[1]) for r in verify_batch(batch)]
new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in {HEAVY!r})
print(json.dumps({{"statuses": statuses, "new": new}}))
"""


def test_a_job_after_preload_imports_nothing_heavy(v3_file_replica, v5_s3_replica, fleet, tmp_path):  # noqa: F811
    tenants = _config(tmp_path, fleet["data"], fleet["s3"])
    jobs = [  # one job per config, as jobs.verify --enqueue makes them
        (v3_file_replica.config_path, {"db": str(v3_file_replica.db_path), "replica": "file"}),
        (v5_s3_replica.config_path, {"db": str(v5_s3_replica.db_path), "replica": "s3"}),
        (tenants, {"db": "team-a/beta.db", "dir": str(fleet["data"]), "rel": "team-a/beta.db", "replica": "s3"}),
    ]
    payload = [{"config": str(config), "targets": [target], "max_age_seconds": 3650 * 86400.0, "timeout": 120}
               for config, target in jobs]
    env = restorable_env({"RESTORABLE_HISTORY": "off", **v5_s3_replica.s3.credentials_env()})
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(payload)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["statuses"] == ["ok", "ok", "ok"], done.stderr[-3000:]
    assert out["new"] == [], "a job imported these itself; add them to lib.fleet.preload.MODULES"
