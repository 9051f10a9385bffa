#!/usr/bin/env bash
# README's test command: create/refresh .venv with the test requirements, make sure both
# litestream binaries are in .tools/, and run pytest with any extra arguments.
#
#   scripts/test.sh                      # the whole suite
#   scripts/test.sh -m "not slow" -x     # skip tests that build real replicas
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_venv.sh requirements-test.txt
bash scripts/install_litestream.sh
# Three workers on two cores: most tests wait on subprocesses and servers, not the CPU.
# Each worker builds the session replicas it needs once. PYTEST_WORKERS=0 runs serially.
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-3}" "$@"
