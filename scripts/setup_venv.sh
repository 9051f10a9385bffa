#!/usr/bin/env bash
# Create or refresh .venv (Python 3.11) and install a requirements file into it.
#
#   scripts/setup_venv.sh                        # requirements.txt
#   scripts/setup_venv.sh requirements-test.txt  # runtime + test requirements
#
# Re-running is cheap: pip runs only when the requirements (or the interpreter) changed
# since the last successful install, recorded in .venv/.installed-<file>.
# A .venv that is broken or not Python 3.11 is recreated. PYTHON=/path/to/python3.11
# chooses the interpreter.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="${1:-requirements.txt}"
case "$REQ" in /*) ;; *) REQ="$ROOT/$REQ" ;; esac
[ -f "$REQ" ] || { echo "setup_venv: no such requirements file: $REQ" >&2; exit 3; }

is_py311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3 python; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 && is_py311 "$(command -v "$candidate")"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [ -x "$VENV/bin/python" ] && is_py311 "$VENV/bin/python" \
        && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    :
else
    PY="$(find_python)" || {
        echo "setup_venv: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2
        exit 3
    }
    echo "setup_venv: creating $VENV with $PY"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || {
        echo "setup_venv: '$PY -m venv' failed (on Debian: apt-get install python3.11-venv)" >&2
        exit 3
    }
fi

# What the install depends on: the interpreter and every requirements file it reads.
stamp_input() {
    "$VENV/bin/python" -c 'import sys; print(sys.version)'
    local f="$1"
    cat "$f"
    # One level of "-r other.txt" is all this project uses.
    sed -n 's/^[[:space:]]*-r[[:space:]]*\([^[:space:]]*\).*/\1/p' "$f" | while read -r inc; do
        cat "$(dirname "$f")/$inc"
    done
}
# The project's own bytecode: with PYTHONDONTWRITEBYTECODE set (Railway's Python images and
# many Dockerfiles set it) nothing else writes it, and every run of a job would compile
# every module it imports again (about a tenth of a second). Up-to-date files are skipped.
compile_project() {
    "$VENV/bin/python" -m compileall -q -j 0 "$ROOT/lib" "$ROOT/jobs" >/dev/null
}

STAMP="$VENV/.installed-$(basename "$REQ")"
WANT="$(stamp_input "$REQ" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "setup_venv: $(basename "$REQ") already installed in $VENV"
    compile_project
    exit 0
fi

echo "setup_venv: installing $(basename "$REQ") into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
echo "$WANT" > "$STAMP"
compile_project
