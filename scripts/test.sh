#!/usr/bin/env bash
# README's test command: create/refresh .venv with the test requirements, make sure both
# litestream binaries are in .tools/, and run pytest with any extra arguments.
#
#   scripts/test.sh                          # the whole suite, 4 pytest-xdist workers
#   scripts/test.sh -m "not slow" -x         # skip tests that build real replicas
#   TEST_WORKERS=0 scripts/test.sh --pdb     # one process (for --pdb, or to debug order)
#
# Workers: the suite mostly waits (litestream syncing, retries, timeouts), so 4 workers
# on 2 cores measured 6m47s against 12m21s for one process (each worker builds the
# session replicas it needs, ~45 s of mostly sleeping).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_venv.sh requirements-test.txt
bash scripts/install_litestream.sh
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-4}" "$@"
