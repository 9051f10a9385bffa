#!/usr/bin/env bash
# README's test command: create/refresh .venv with the test requirements, make sure both
# litestream binaries are in .tools/, and run pytest with any extra arguments.
#
#   scripts/test.sh                          # the whole suite, 4 pytest-xdist workers
#   scripts/test.sh -m "not slow" -x         # skip tests that build real replicas
#   PYTEST_WORKERS=0 scripts/test.sh --pdb   # one process (for --pdb, or to debug order)
#
# Workers: the suite mostly waits (litestream syncing, retries, timeouts, subprocesses),
# so on 2 cores 4 workers measured 6m47s, 2 workers 9m42s, one process 12m21s (1,200
# tests). Each worker builds the session replicas it needs once (~45 s, mostly sleeping).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_venv.sh requirements-test.txt
bash scripts/install_litestream.sh
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-4}" "$@"
