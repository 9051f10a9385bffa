"""Test support: a real S3 server, the real litestream binaries, real replicas, job runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]

# Settings a developer's shell may carry that must not leak into a job under test:
# a real Sentry DSN, restorable's own settings, real cloud credentials and profiles.
_SCRUBBED_PREFIXES = ("SENTRY_", "RESTORABLE_", "LITESTREAM_")
_SCRUBBED_NAMES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def restorable_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for running ``python -m jobs.verify`` (or any job) as a subprocess.

    The repo root is on PYTHONPATH; Sentry, restorable and AWS settings of the calling
    shell are removed; loopback bypasses any proxy. ``extra`` is applied last.
    """
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED_NAMES
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    no_proxy = [p for p in env.get("NO_PROXY", "").split(",") if p]
    env["NO_PROXY"] = env["no_proxy"] = ",".join(dict.fromkeys(no_proxy + ["127.0.0.1", "localhost"]))
    # The shared config directory some machines set; an absent file is harmless.
    env.setdefault("AWS_CONFIG_FILE", os.devnull)
    env.setdefault("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    env.update(extra or {})
    return env


def run_job(
    module: str,
    *args: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m module ARGS`` from the repo root; returns the result, never raises on exit codes.

    ``env`` defaults to :func:`restorable_env`. stdout and stderr are captured as text.
    """
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO_ROOT,
        env=dict(env) if env is not None else restorable_env(),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
