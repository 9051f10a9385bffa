"""Storage faults between ``python -m jobs.verify`` and a real S3 server (issue 9).

The fault proxy (``tests/support/faultproxy.py``) sits between the job and moto and
breaks chosen requests: bursts of 500/503 and SlowDown, connections reset mid-body,
bodies cut short, slow answers, 403 on some keys, an endpoint that goes away. Every case
runs against both layouts, whose download paths differ:

* v0.3 streams the snapshot (``lib.litestream.v3.snapshot.restore_snapshot``) on its own thread;
* WAL segments and LTX files go through ``lib.storage.pool.Prefetcher``: a WAL segment up to
  one chunk (1 MiB) is read whole and re-read when its body fails or comes back short; LTX
  files and larger segments stream, and a broken body fails the attempt and ``lib.verify``
  verifies the replica again.

What must hold:

* a transient fault ends in the right verdict: exit 0, and the restored file's sha256 is
  the one ``litestream restore`` produced;
* a persistent fault ends inconclusive (exit 2) within the maximum runtime, with a
  finding that names the endpoint and the error; never ``failed``, never ``ok``;
* a body cut short is never taken for a corrupt backup;
* retries are bounded (the proxy counts the requests) and back off;
* the scratch directory (``RESTORABLE_SCRATCH_DIR``) is empty afterwards.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from lib.storage.pool import RETRY_ATTEMPTS
from lib.storage.s3 import S3Settings
from lib.verify import STORAGE_ATTEMPTS
from tests.support.faultproxy import FaultProxy, Rule, delay, error, forbidden, refuse, reset, truncate
from tests.support.replicas import BuiltReplica, replica_listing
from tests.test_signals import Job, job_env, proxied_config, scratch_entries

# Every test here runs on a real replica, most through request.getfixturevalue.
pytestmark = pytest.mark.slow

EXIT_OK = 0
EXIT_INCONCLUSIVE = 2
# Interpreter start-up and imports before the deadline starts counting, and the exit after it.
# Generous, as a failure bound only: the hanging faults hold for 120 s and throttling
# outlasting the deadline would retry for up to 51 s, so a run that ignored its deadline ends
# far later, while start-up on a loaded 2-core machine can take many seconds.
SLACK_SECONDS = 30
TRANSIENT_TIMEOUT_SECONDS = 90  # a transient case that takes longer is a failure, not a wait
BOTO_ATTEMPTS = S3Settings.max_attempts  # per S3 call, first try included (botocore "standard" mode)
V5_LEVELS = 10  # v0.5 lists one prefix per level, 0..9

ANY_OBJECT = r"."  # any object GET; bucket-level requests (listings) have the key ""
LISTING = r"^$"


@dataclass(frozen=True)
class Layout:
    fixture: str
    snapshot: str  # regex of the object a restore reads first
    later: str  # regex of the objects applied after it


LAYOUTS = {
    "v0.3": Layout("v3_s3_replica", snapshot=r"/snapshots/", later=r"/wal/"),
    "v0.5": Layout("v5_s3_replica", snapshot=r"/0009/", later=r"/000[0-8]/"),
}


@dataclass(frozen=True)
class Fault:
    id: str
    rules: Callable[[Layout], list[Rule]]
    names: str = ""  # persistent faults: regex the inconclusive finding must match (the error)
    max_runtime: int = 40
    layouts: tuple[str, ...] = tuple(LAYOUTS)


def cases(faults: list[Fault]) -> list:
    return [pytest.param(fault, name, id=f"{name}-{fault.id}") for fault in faults for name in fault.layouts]


# ----------------------------------------------------------------------- helpers


@dataclass
class Run:
    code: int
    elapsed: float
    report: dict
    job: Job

    @property
    def findings(self) -> list[dict]:
        return [f for db in self.report["databases"] for f in db["findings"]]


def start(replica: BuiltReplica, proxy: FaultProxy, scratch: Path, tmp_path: Path, max_runtime: int,
          **env: str) -> tuple[Job, float]:
    config = proxied_config(replica, proxy, tmp_path / "litestream.yml")
    started = time.monotonic()
    job = Job("jobs.verify", "--config", config, "--json", "--max-runtime", f"{max_runtime}s",
              env=job_env(scratch, **env), logs=tmp_path)
    return job, started


def finish(job: Job, started: float, timeout: float) -> Run:
    code = job.wait(timeout=timeout)
    elapsed = time.monotonic() - started
    text = job.stdout()
    assert text.strip(), f"no report on stdout (exit {code}); stderr:\n{job.stderr()[-4000:]}"
    return Run(code, elapsed, json.loads(text), job)


def verify(replica: BuiltReplica, proxy: FaultProxy, scratch: Path, tmp_path: Path, max_runtime: int = 40,
           timeout: float = TRANSIENT_TIMEOUT_SECONDS) -> Run:
    job, started = start(replica, proxy, scratch, tmp_path, max_runtime)
    return finish(job, started, timeout)


def assert_verified(run: Run, replica: BuiltReplica, scratch: Path) -> None:
    """Exit 0 with the reference bytes, nothing left behind."""
    assert run.code == EXIT_OK, run.job.stderr()[-4000:]
    [db] = run.report["databases"]
    assert db["status"] == "ok", db["findings"]
    assert db["restored"]["sha256"] == replica.reference_sha256
    assert db["tables"] == replica.row_counts
    assert scratch_entries(scratch) == []


def assert_inconclusive(run: Run, max_runtime: int, scratch: Path) -> None:
    """Exit 2 on time; no verdict about the backup (neither failed nor ok); nothing left behind."""
    assert run.code == EXIT_INCONCLUSIVE, run.job.stderr()[-4000:]
    assert run.elapsed < max_runtime + SLACK_SECONDS
    assert run.report["status"] == "inconclusive"
    assert run.findings, "an inconclusive run must say why"
    verdicts = [f for f in run.findings if f["severity"] == "error" and not f.get("inconclusive")]
    assert verdicts == [], "a storage fault was reported as a damaged backup"
    assert not [f for f in run.findings if f["kind"] in ("corrupt_object", "integrity", "wal_gap",
                                                         "missing_snapshot", "no_backups")]
    assert scratch_entries(scratch) == []


def naming(run: Run, endpoint: str, pattern: str) -> list[dict]:
    """Inconclusive findings that name ``endpoint`` and match ``pattern``."""
    return [f for f in run.findings if f.get("inconclusive") and endpoint in f["message"]
            and re.search(pattern, f["message"])]


def request_bound(replica: BuiltReplica, version: str) -> int:
    """The most requests a verify may make, from the retry constants in the code.

    Per replica attempt: the listings, and every object fetched up to the whole-object
    retries (``lib.storage.pool``) times botocore's attempts. ``lib.verify`` makes at most
    ``STORAGE_ATTEMPTS`` replica attempts.
    """
    listings = V5_LEVELS if version == "v0.5" else 1
    objects = len(replica_listing(replica))
    return STORAGE_ATTEMPTS * BOTO_ATTEMPTS * (listings + objects * RETRY_ATTEMPTS)


# ----------------------------------------------------------------------- transient faults

TRANSIENT = [
    Fault("slowdown-burst-on-objects", lambda l: [error(503, "SlowDown", method="GET", key=ANY_OBJECT, count=3)]),
    Fault("internal-error-burst-on-listings", lambda l: [error(500, "InternalError", key=LISTING, count=3)]),
    Fault("service-unavailable-burst", lambda l: [error(503, "ServiceUnavailable", count=4)]),
    Fault("reset-mid-snapshot-once", lambda l: [reset(key=l.snapshot, count=1)]),
    Fault("reset-mid-later-objects", lambda l: [reset(key=l.later, count=2)]),
    Fault("snapshot-cut-short-once", lambda l: [truncate(key=l.snapshot, count=1)]),
    Fault("later-object-cut-short-once", lambda l: [truncate(key=l.later, count=1)]),
    Fault("slow-answers", lambda l: [delay(2, key=ANY_OBJECT, count=3)]),
    Fault("slow-bodies", lambda l: [delay(2, at="body", key=ANY_OBJECT, count=3)]),
    Fault("connections-refused", lambda l: [refuse(count=3)]),
    Fault("forbidden-once", lambda l: [forbidden(key=l.snapshot, count=1)]),
]


@pytest.mark.parametrize("fault, version", cases(TRANSIENT))
def test_transient_fault_ends_in_the_right_verdict(request, proxy, scratch, tmp_path, fault, version):
    replica = request.getfixturevalue(LAYOUTS[version].fixture)
    rules = fault.rules(LAYOUTS[version])
    proxy.set_rules(rules)

    run = verify(replica, proxy, scratch, tmp_path)

    assert_verified(run, replica, scratch)
    assert len(proxy.matched()) == sum(r.count for r in rules), "every injected fault was hit"
    assert len(proxy.requests) <= request_bound(replica, version)


# ----------------------------------------------------------------------- persistent faults

PERSISTENT = [
    Fault("internal-error-on-objects", lambda l: [error(500, "InternalError", key=ANY_OBJECT)],
          names=r"answered InternalError"),
    Fault("service-unavailable-on-listings", lambda l: [error(503, "ServiceUnavailable", key=LISTING)],
          names=r"answered ServiceUnavailable"),
    Fault("reset-mid-snapshot", lambda l: [reset(key=l.snapshot)], names=r"ResponseStreamingError"),
    Fault("reset-mid-later-objects", lambda l: [reset(key=l.later)], names=r"ResponseStreamingError"),
    Fault("snapshot-cut-short", lambda l: [truncate(key=l.snapshot)], names=r"IncompleteReadError"),
    Fault("later-objects-cut-short", lambda l: [truncate(key=l.later)], names=r"IncompleteReadError"),
    Fault("forbidden-snapshot", lambda l: [forbidden(key=l.snapshot)], names=r"credentials refused.*AccessDenied"),
    Fault("forbidden-later-objects", lambda l: [forbidden(key=l.later)], names=r"credentials refused.*AccessDenied"),
    Fault("connections-reset-before-answering", lambda l: [refuse(key=ANY_OBJECT)], names=r"ConnectionClosedError"),
    # Persistent SlowDown has its own test below: throttling backs off from 1 s, so it
    # takes half a minute to give up.
]


@pytest.mark.parametrize("fault, version", cases(PERSISTENT))
def test_persistent_fault_ends_inconclusive_naming_endpoint_and_error(request, proxy, scratch, tmp_path, fault,
                                                                       version):
    replica = request.getfixturevalue(LAYOUTS[version].fixture)
    proxy.set_rules(fault.rules(LAYOUTS[version]))

    run = verify(replica, proxy, scratch, tmp_path, max_runtime=fault.max_runtime,
                 timeout=fault.max_runtime + 30)

    assert_inconclusive(run, fault.max_runtime, scratch)
    assert naming(run, proxy.endpoint, fault.names), run.findings
    assert not [f for f in run.findings if "maximum runtime" in f["message"]], "retries should have ended first"
    assert proxy.matched()
    assert len(proxy.requests) <= request_bound(replica, version)


def test_throttling_backs_off_with_jitter_and_gives_up_after_bounded_attempts(v3_s3_replica, proxy, scratch,
                                                                               tmp_path):
    # The listing comes first in both layouts, so one is enough. Worst case: three replica
    # attempts of (1 + 2 + 4 + 8) s of backoff each, plus 2 + 4 s between them: 51 s.
    proxy.set_rules([error(503, "SlowDown", key=LISTING)])

    run = verify(v3_s3_replica, proxy, scratch, tmp_path, max_runtime=60, timeout=100)

    assert_inconclusive(run, 60, scratch)
    assert naming(run, proxy.endpoint, r"answered SlowDown")
    listings = [r.started for r in proxy.requests if r.key == ""]
    assert len(listings) == STORAGE_ATTEMPTS * BOTO_ATTEMPTS  # and no listing after the verdict
    for burst in range(STORAGE_ATTEMPTS):
        times = listings[burst * BOTO_ATTEMPTS:(burst + 1) * BOTO_ATTEMPTS]
        gaps = [b - a for a, b in zip(times, times[1:])]
        caps = [2.0 ** i for i in range(len(gaps))]  # botocore: rand(0, 1) * 2**i s for throttling
        assert all(gap <= cap + 0.5 for gap, cap in zip(gaps, caps)), gaps
        assert sum(gaps) > 0.5, f"no backoff between throttled attempts: {gaps}"
        assert len({round(gap / cap, 2) for gap, cap in zip(gaps, caps)}) > 1, f"no jitter: {gaps}"


# ----------------------------------------------------------------------- a body cut short


@pytest.mark.parametrize("version", LAYOUTS)
def test_snapshot_cut_short_once_is_refetched_and_verifies(request, proxy, scratch, tmp_path, version):
    layout = LAYOUTS[version]
    replica = request.getfixturevalue(layout.fixture)
    proxy.set_rules([truncate(key=layout.snapshot, count=1)])

    run = verify(replica, proxy, scratch, tmp_path)

    assert_verified(run, replica, scratch)
    [db] = run.report["databases"]
    assert db["findings"] == []
    snapshot_gets = [r for r in proxy.requests if re.search(layout.snapshot, r.key)]
    assert [r.action for r in snapshot_gets[:2]] == ["truncate", None], "cut short, then read again"


@pytest.mark.parametrize("version", LAYOUTS)
def test_snapshot_cut_short_every_time_is_inconclusive_not_corrupt(request, proxy, scratch, tmp_path, version):
    layout = LAYOUTS[version]
    replica = request.getfixturevalue(layout.fixture)
    proxy.set_rules([truncate(key=layout.snapshot)])

    run = verify(replica, proxy, scratch, tmp_path, max_runtime=40, timeout=70)

    assert_inconclusive(run, 40, scratch)
    [finding] = run.findings
    assert finding["kind"] == "unreachable" and finding["inconclusive"] is True
    assert proxy.endpoint in finding["message"]
    snapshot_gets = [r for r in proxy.requests if re.search(layout.snapshot, r.key)]
    assert len(snapshot_gets) == STORAGE_ATTEMPTS, "read again before giving up, a bounded number of times"


# ----------------------------------------------------------------------- hangs and the deadline

HANGS = [
    Fault("hangs-before-answering", lambda l: [delay(120, key=ANY_OBJECT)], max_runtime=8),
    Fault("hangs-mid-body", lambda l: [delay(120, at="body", key=ANY_OBJECT)], max_runtime=8),
    Fault("throttled-past-the-deadline", lambda l: [error(503, "SlowDown")], max_runtime=5),
]


@pytest.mark.parametrize("fault, version", cases(HANGS))
def test_storage_that_hangs_or_throttles_ends_inconclusive_by_the_deadline(request, proxy, scratch, tmp_path,
                                                                           fault, version):
    replica = request.getfixturevalue(LAYOUTS[version].fixture)
    proxy.set_rules(fault.rules(LAYOUTS[version]))

    run = verify(replica, proxy, scratch, tmp_path, max_runtime=fault.max_runtime, timeout=fault.max_runtime + 30)

    assert_inconclusive(run, fault.max_runtime, scratch)
    assert naming(run, proxy.endpoint, r"did not finish within the maximum runtime"), run.findings
    assert proxy.matched()


# ----------------------------------------------------------------------- the endpoint goes away


@pytest.mark.parametrize("version", LAYOUTS)
@pytest.mark.parametrize("outage", ["briefly", "for-good"])
def test_endpoint_disappearing_mid_restore(request, proxy, scratch, tmp_path, version, outage):
    layout = LAYOUTS[version]
    replica = request.getfixturevalue(layout.fixture)
    # Hold the first snapshot GET long enough to take the endpoint away under it.
    proxy.set_rules([delay(1, key=layout.snapshot, count=1)])
    job, started = start(replica, proxy, scratch, tmp_path, max_runtime=40)
    if not proxy.wait_for(lambda p: p.matched("delay"), timeout=30):
        job.kill()
        pytest.fail(f"the restore never reached the snapshot; stderr:\n{job.stderr()[-4000:]}")

    proxy.set_offline(True)
    if outage == "briefly":
        time.sleep(1.5)
        proxy.set_offline(False)
    run = finish(job, started, timeout=70)

    if outage == "briefly":
        assert_verified(run, replica, scratch)
    else:
        assert_inconclusive(run, 40, scratch)
        assert naming(run, proxy.endpoint, r"unreachable \((EndpointConnectionError|ConnectionClosedError)\)"), \
            run.findings
