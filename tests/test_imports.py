"""What start-up and the layout promise: heavy libraries are imported only by the runs that
need them, nothing imports in a cycle, no module outgrows 400 lines, no job imports another.

The deferred-import promises are checked on real processes with ``python -X importtime``,
which reports every module as it is imported (also the ones imported late, inside a
function), on stderr, even though jobs end with ``os._exit``.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, restorable_env

JOBS = ("verify", "restore", "status", "retention", "schedule")

HEAVY = ("boto3", "botocore", "numpy", "sqlite_utils", "sentry_sdk", "redis", "rq")  # rq: distributed mode only

MAX_MODULE_LINES = 400

_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| *(?P<name>[\w.]+)\s*$", re.MULTILINE)


def imported_modules(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime ARGS`` from the repo root; the result and every module it imported."""
    result = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=REPO_ROOT, env=env or restorable_env(),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    return result, {match["name"] for match in _IMPORTED.finditer(result.stderr)}


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("job", JOBS)
def test_help_imports_no_heavy_library(job):
    result, modules = imported_modules("-m", f"jobs.{job}", "--help")

    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: python -m jobs." in result.stdout
    assert top_level(modules) & set(HEAVY) == set()


def test_verify_help_loads_no_config_reader():
    """`--help` parses no config: the YAML reader, the config sources and the scratch space
    (which brings both restorers' planners) wait for a run."""
    result, modules = imported_modules("-m", "jobs.verify", "--help")

    assert result.returncode == 0, result.stderr[-2000:]
    assert modules & {"yaml", "lib.config.sources", "lib.config.litestream_yml", "lib.scratch"} == set()


def test_v5_file_restore_imports_neither_numpy_nor_boto3_nor_sqlite_utils(v5_file_replica, tmp_path):
    out = tmp_path / "restored.db"

    result, modules = imported_modules("-m", "jobs.restore", v5_file_replica.url(), "-o", str(out))

    assert result.returncode == 0, result.stderr[-2000:]
    assert out.stat().st_size > 0
    assert top_level(modules) & {"numpy", "boto3", "botocore", "sqlite_utils", "sentry_sdk"} == set()


def test_v3_file_restore_imports_neither_boto3_nor_sqlite_utils(v3_file_replica, tmp_path):
    out = tmp_path / "restored.db"

    result, modules = imported_modules("-m", "jobs.restore", v3_file_replica.url(), "-o", str(out))

    assert result.returncode == 0, result.stderr[-2000:]
    assert "numpy" in top_level(modules)  # WAL checksums: the promise below is not vacuous
    assert top_level(modules) & {"boto3", "botocore", "sqlite_utils"} == set()


def test_a_replica_restore_imports_no_vault(v5_file_replica, tmp_path):
    result, modules = imported_modules("-m", "jobs.restore", v5_file_replica.url(), "-o", str(tmp_path / "r.db"))

    assert result.returncode == 0, result.stderr[-2000:]
    assert {m for m in modules if m.startswith("lib.vault")} == set()  # --from-vault only


def test_restore_with_check_imports_no_storage_library(v5_file_replica, tmp_path):
    # --check is PRAGMA integrity_check alone: no row counts (sqlite-utils, which imports numpy), no cloud library
    result, modules = imported_modules("-m", "jobs.restore", v5_file_replica.url(), "-o", str(tmp_path / "r.db"),
                                       "--check")

    assert result.returncode == 0, result.stderr[-2000:]
    assert "sqlite3" in top_level(modules)  # the check did run
    assert top_level(modules) & {"sqlite_utils", "boto3", "botocore"} == set()


def test_verify_of_a_file_replica_imports_no_boto3(v5_file_replica, tmp_path):
    env = restorable_env({"RESTORABLE_HISTORY": "off", "RESTORABLE_SCRATCH_DIR": str(tmp_path)})

    result, modules = imported_modules("-m", "jobs.verify", v5_file_replica.url(), "--max-age", "3650d", env=env)

    assert result.returncode == 0, result.stderr[-2000:]
    # numpy arrives with sqlite-utils, which counts the rows of a verified copy
    assert top_level(modules) & {"boto3", "botocore", "sentry_sdk", "redis", "rq"} == set()


# ------------------------------------------------------------------------------ the layout


def _source_files() -> list[Path]:
    return sorted([*(REPO_ROOT / "lib").rglob("*.py"), *(REPO_ROOT / "jobs").glob("*.py")])


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere in it (function-local imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known}


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in _source_files()}
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    # A package's __init__ holds only its docstring: an edge to a package says nothing.
    return {name: _imports(path, set(modules) - packages) - {name} for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles_in_lib_and_jobs():
    assert _find_cycle(_import_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_package_init_files_hold_only_a_one_line_docstring():
    for init in (REPO_ROOT / "lib").rglob("__init__.py"):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree)
        assert doc and "\n" not in doc and len(tree.body) == 1, init


def test_no_module_exceeds_400_lines():
    long = {str(p.relative_to(REPO_ROOT)): n for p in _source_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_job_imports_another_job():
    graph = _import_graph()
    assert {job: sorted(graph[job]) for job in graph if job.startswith("jobs.")
            if any(dep.startswith("jobs.") for dep in graph[job])} == {}
