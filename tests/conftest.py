"""Shared fixtures: a real S3 server (moto, server mode) and real Litestream replicas.

Every replica fixture is session-scoped and built on first use (a few seconds each, by
the real litestream binary), so a run that needs none of them starts no litestream.
Tests that damage a replica must work on ``clone(replica)``, never on the original.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.support import restorable_env as make_restorable_env
from tests.support.faultproxy import FaultProxy
from tests.support.litestream import V3, V5, Replicator
from tests.support.replicas import BuiltReplica, build_replica, clone_replica
from tests.support.s3server import S3Server
from tests.support.sentry_server import SentryServer

# Fixtures that build real replicas; tests using them are marked `slow`. A test module's own
# replica-building fixture belongs here too (by name), or its tests carry `slow` themselves.
REPLICA_FIXTURES = frozenset({
    "v3_file_replica", "v3_s3_replica", "v3_file_replica_512", "v3_file_replica_65536",
    "v3_multigen_file_replica", "v5_file_replica", "v5_s3_replica",
    "interval_replica", "v5_vacuum_replica",
})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--integration", action="store_true", default=False,
                     help="also run tests marked `integration` (they need a real remote bucket)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_integration = pytest.mark.skip(reason="needs --integration")
    for item in items:
        if _requests_a_replica(item):
            item.add_marker(pytest.mark.slow)
        if "integration" in item.keywords and not config.getoption("--integration"):
            item.add_marker(skip_integration)


def _requests_a_replica(item: pytest.Item) -> bool:
    """Whether ``item`` asks for a replica fixture by argument, or by a parameter naming one
    (tests that call ``request.getfixturevalue(name)`` with ``name`` parametrized)."""
    if REPLICA_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return any(isinstance(value, str) and value in REPLICA_FIXTURES for value in params)


@pytest.fixture(autouse=True)
def _replicas_only_in_slow_tests(request: pytest.FixtureRequest):
    """Fail a test that used a replica fixture or started ``litestream replicate`` without
    being marked ``slow``: ``-m "not slow"`` must skip every such test, and a fixture fetched
    through ``request.getfixturevalue`` is invisible to the marking at collection."""
    started = Replicator.started
    yield
    if request.node.get_closest_marker("slow") is not None:
        return
    used = sorted(REPLICA_FIXTURES.intersection(request.fixturenames))
    if used or Replicator.started != started:
        pytest.fail(f"{request.node.nodeid} uses real replicas ({', '.join(used) or 'litestream replicate'}) "
                    f"but is not marked slow: mark it, or add its fixture to REPLICA_FIXTURES in tests/conftest.py",
                    pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 server process on 127.0.0.1 for the whole session; use ``make_bucket()``."""
    server = S3Server(log_path=tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


def _build(factory: pytest.TempPathFactory, name: str, version: str, kind: str, **kwargs) -> BuiltReplica:
    return build_replica(version, kind, factory.mktemp(name), **kwargs)


@pytest.fixture(scope="session")
def v3_file_replica(tmp_path_factory) -> BuiltReplica:
    return _build(tmp_path_factory, "v3-file", V3, "file")


@pytest.fixture(scope="session")
def v3_s3_replica(tmp_path_factory, s3_server) -> BuiltReplica:
    return _build(tmp_path_factory, "v3-s3", V3, "s3", s3=s3_server)


@pytest.fixture(scope="session")
def v3_file_replica_512(tmp_path_factory) -> BuiltReplica:
    return _build(tmp_path_factory, "v3-file-512", V3, "file", page_size=512)


@pytest.fixture(scope="session")
def v3_file_replica_65536(tmp_path_factory) -> BuiltReplica:
    return _build(tmp_path_factory, "v3-file-65536", V3, "file", page_size=65536)


@pytest.fixture(scope="session")
def v3_multigen_file_replica(tmp_path_factory) -> BuiltReplica:
    return _build(tmp_path_factory, "v3-multigen", V3, "file", generations=2)


@pytest.fixture(scope="session")
def v5_file_replica(tmp_path_factory) -> BuiltReplica:
    return _build(tmp_path_factory, "v5-file", V5, "file")


@pytest.fixture(scope="session")
def v5_s3_replica(tmp_path_factory, s3_server) -> BuiltReplica:
    return _build(tmp_path_factory, "v5-s3", V5, "s3", s3=s3_server)


@pytest.fixture
def clone(tmp_path_factory) -> Callable[[BuiltReplica], BuiltReplica]:
    """``clone(replica)``: an independent copy (new directory or bucket) to damage freely."""
    return lambda replica: clone_replica(replica, tmp_path_factory.mktemp("clone"))


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """An empty RESTORABLE_SCRATCH_DIR for a job run as a subprocess."""
    path = tmp_path / "scratch"
    path.mkdir()
    return path


@pytest.fixture
def proxy(s3_server):
    """A fault proxy in front of the session's S3 server (``tests/support/faultproxy.py``)."""
    with FaultProxy(s3_server.endpoint) as p:
        yield p


@pytest.fixture
def sentry():
    """A loopback Sentry endpoint that parses the envelopes it receives."""
    with SentryServer() as server:
        yield server


@pytest.fixture
def restorable_env() -> dict[str, str]:
    """Environment for ``run_job("jobs.verify", ...)``: repo on PYTHONPATH, no Sentry DSN, no real AWS."""
    return make_restorable_env()


@pytest.fixture
def repo_root() -> Path:
    from tests.support import REPO_ROOT

    return REPO_ROOT
