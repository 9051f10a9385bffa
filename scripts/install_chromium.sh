#!/usr/bin/env bash
# Headless Chromium for the status-page test (tests/test_outputs_site.py), from Debian's
# packages. Idempotent and quiet: does nothing when a headless Chromium is already there.
set -euo pipefail

if command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: no headless Chromium, and apt-get as root is not available;" \
         "install chromium-headless-shell (or chromium) yourself" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium-headless-shell fonts-dejavu-core >/dev/null
echo "install_chromium: installed $(chromium-headless-shell --version 2>/dev/null || echo chromium-headless-shell)"
