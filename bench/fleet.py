"""Fleet benchmark (issue 15): many tenant databases in one ``dir:`` replica on the loopback S3 server.

Builds ``--tenants`` databases of ``--size-mb`` each in nested folders, replicates the
folder with ``litestream replicate`` 0.5.17 (``dir:``, ``pattern: "*.db"``,
``recursive: true``) into an ``rclone serve s3`` bucket (cached under
``bench/.cache/fleet-<tenants>-<size>/``), then measures, each behind a counting proxy:

* ``local-1``: ``python -m jobs.verify --parallel 1`` in one process;
* ``local``: the same with its default ``--parallel`` (sized to the machine);
* ``rq-1`` / ``rq-2``: ``python -m jobs.verify --enqueue --wait`` with one or two
  ``python -m jobs.worker`` processes on a loopback ``redis-server``.

It reports databases verified per minute, the CPU seconds per database of every process
of the run (enqueuer, workers and their work horses, Redis), the CPU seconds per database of
what serves the bucket on the same machine (rclone and the counting proxy: not restorable's,
but they share the cores), and S3 requests per database (all, and the listing requests alone). Targets: listing under 0.01 requests per database;
two workers at least 1.6x the databases per minute of one worker AND of one process
verifying one database at a time (the ratio to the default one-process run is printed too).
History is off in the measured runs (``RESTORABLE_HISTORY=off``): it costs the same per
database in every mode. ``--shard I/N`` verifies a part of the tenants (for iterating).

    .venv/bin/python -m bench.fleet [--tenants 1000] [--size-mb 3] [--modes local-1,local,rq-1,rq-2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench import harness
from bench.replicas import Writer
from tests.support.faultproxy import FaultProxy

V5 = "0.5.17"
BUCKET = "fleet"
PREFIX = "tenants"
FOLDERS = 10  # tenants are spread over this many sub-folders (recursive: true)
MODES = ("local-1", "local", "rq-1", "rq-2")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--size-mb", type=float, default=3.0, help="size of each tenant database (default 3)")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds one measured run may take")
    parser.add_argument("--json", type=Path, help="also write the measurements to this file")
    parser.add_argument("--modes", default=",".join(MODES), help=f"runs to measure, of {', '.join(MODES)}")
    parser.add_argument("--direct", action="store_true", help="talk to the S3 server without the counting proxy "
                        "(no request counts; the proxy is a Python process on the same cores)")
    parser.add_argument("--shard", metavar="I/N", help="verify only this shard of the tenants (quicker iterations)")
    return parser.parse_args(argv)


def tenant_paths(data: Path, count: int) -> list[Path]:
    return [data / f"group-{i % FOLDERS:02d}" / f"tenant-{i:05d}.db" for i in range(count)]


def build(cache: Path, server: harness.S3Server, args) -> Path:
    """The tenants and their replica (reused when ``cache/complete`` exists); returns the data folder."""
    data = cache / "data"
    if (cache / "complete").exists():
        return data
    (server.root / BUCKET).mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(tenant_paths(data, args.tenants)):
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = Writer(path, seed=index)
        writer.fill_to(int(args.size_mb * 1024 * 1024))
        writer.close()
        sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()
    config = cache / "litestream.yml"
    config.write_text(yaml.safe_dump({"dbs": [{"dir": str(data), "pattern": "*.db", "recursive": True,
                                               "replica": replica(server.endpoint)}]}))
    log = cache / "litestream.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(harness.litestream_bin(V5)), "replicate", "-config", str(config)],
                                env=harness.litestream_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        bucket = server.root / BUCKET / PREFIX
        while sum(1 for _ in bucket.glob("group-*/*.db/0009/*.ltx")) < args.tenants:
            if proc.poll() is not None:
                raise RuntimeError(f"litestream exited {proc.returncode}; log:\n{log.read_text()[-3000:]}")
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    (cache / "complete").write_text("ok\n")
    return data


def replica(endpoint: str) -> dict:
    return {"type": "s3", "bucket": BUCKET, "path": PREFIX, "endpoint": endpoint, "region": harness.REGION,
            "access-key-id": harness.ACCESS_KEY, "secret-access-key": harness.SECRET_KEY,
            "force-path-style": True}


def measure(name: str, cmd: list, env: dict, proxy: FaultProxy, cache: Path, args, total_cpu=None) -> dict:
    """One measured run of ``cmd``; ``total_cpu`` (a callable), when given, stops the processes
    that served it (workers, Redis) and returns the CPU seconds of all of them and of ``cmd``."""
    proxy.clear_log()
    serving = _serving_cpu(args.server_pid)
    run = harness.measure(cmd, env, args.timeout, cache / f"{name}.log")
    serving = _serving_cpu(args.server_pid) - serving
    requests = proxy.requests
    lists = sum(1 for r in requests if r.method == "GET" and "list-type" in r.query)
    report = _report((cache / f"{name}.log").read_text(errors="replace"))
    databases = report.get("databases", [])
    verified = sum(1 for r in databases if r.get("status") in ("ok", "warning"))
    cpu = total_cpu() if total_cpu else run.cpu_seconds
    return {"name": name, "seconds": round(run.seconds, 1), "exit": run.returncode, "targets": len(databases),
            "verified": verified, "dbs_per_minute": round(verified / run.seconds * 60, 1) if run.seconds else 0.0,
            "cpu_seconds": round(cpu, 1), "command_cpu_seconds": round(run.cpu_seconds, 1), "cpu_per_db": round(cpu / max(1, verified), 3),
            "serving_cpu_per_db": round(serving / max(1, verified), 3),
            "requests_per_db": round(len(requests) / max(1, len(databases)), 3),
            "list_requests_per_db": round(lists / max(1, len(databases)), 5), "max_rss_mb": round(run.max_rss_mb)}


def _report(output: str) -> dict:
    """The JSON report in a run's output (log lines go to the same file)."""
    start = output.find('{\n  "status"')
    if start < 0:
        return {}
    return json.JSONDecoder().raw_decode(output, start)[0]


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.compile_bytecode()
    cache = harness.BENCH_DIR / ".cache" / f"fleet-{args.tenants}-{args.size_mb:g}"
    cache.mkdir(parents=True, exist_ok=True)
    with harness.S3Server(cache / "s3", cache / "rclone.log") as server:
        data = build(cache, server, args)
        args.server_pid = server.proc.pid
        with FaultProxy(server.endpoint) as proxy:
            config = cache / "verify.yml"
            config.write_text(yaml.safe_dump({"dbs": [{"dir": str(data), "pattern": "*.db", "recursive": True,
                                                       "replica": replica(server.endpoint if args.direct
                                                                          else proxy.endpoint)}]}))
            verify = [sys.executable, "-m", "jobs.verify", "--config", config, "--json", "--max-age", "3650d",
                      "--max-runtime", f"{int(args.timeout)}s", *(["--shard", args.shard] if args.shard else [])]
            env = harness.base_env({"RESTORABLE_HISTORY": "off", "LOG_LEVEL": "warning"})
            rows = [run_mode(mode, verify, env, proxy, cache, args) for mode in args.modes.split(",")]
    print_rows(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def run_mode(mode: str, verify: list, env: dict, proxy: FaultProxy, cache: Path, args) -> dict:
    if mode == "local-1":
        return measure(mode, [*verify, "--parallel", "1"], env, proxy, cache, args)
    if mode == "local":
        return measure(mode, verify, env, proxy, cache, args)
    if mode in ("rq-1", "rq-2"):
        return measure_rq(mode, int(mode[-1]), verify, env, proxy, cache, args)
    raise SystemExit(f"--modes: unknown mode {mode!r}; expected some of {', '.join(MODES)}")


def measure_rq(name: str, count: int, verify: list, env: dict, proxy: FaultProxy, cache: Path, args) -> dict:
    from tests.test_rq import RedisServer, Workers  # the same real redis-server and workers as the tests

    before = _children_cpu()
    redis = RedisServer(cache)
    env = {**env, "REDIS_URL": redis.url}
    workers = Workers({**env, "LOG_LEVEL": "info"}, cache)  # the tests wait for its "Listening on" line

    def total_cpu() -> float:  # the enqueuer, the workers (with their work horses) and Redis, all reaped
        workers.stop_all()
        redis.stop()
        return _children_cpu() - before

    try:
        for index in range(count):
            workers.start(f"w{index}")
        return measure(name, [*verify, "--enqueue", "--wait"], env, proxy, cache, args,
                       total_cpu=total_cpu)
    finally:
        workers.stop_all()
        redis.stop()


def _serving_cpu(server_pid: int) -> float:
    """CPU seconds so far of what serves the bucket on this machine: the ``rclone serve s3``
    process and this script (the counting proxy's threads). Not restorable's, but it shares
    the same two cores with the runs measured."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        fields = Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()
        rclone = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, IndexError, ValueError):
        rclone = 0.0
    return usage.ru_utime + usage.ru_stime + rclone


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_rows(rows: list[dict]) -> None:
    print(f"{'run':8} {'exit':>4} {'verified':>8} {'seconds':>8} {'dbs/min':>8} {'cpu/db':>7} {'srv/db':>7} "
          f"{'req/db':>7} {'list/db':>8} {'rss MB':>6}")
    for r in rows:
        print(f"{r['name']:8} {r['exit']:>4} {r['verified']:>8} {r['seconds']:>8} {r['dbs_per_minute']:>8} "
              f"{r['cpu_per_db']:>7} {r['serving_cpu_per_db']:>7} {r['requests_per_db']:>7} "
              f"{r['list_requests_per_db']:>8} {r['max_rss_mb']:>6}")
    by = {r["name"]: r["dbs_per_minute"] for r in rows}
    print(f"listing per db < 0.01: {'met' if max(r['list_requests_per_db'] for r in rows) < 0.01 else 'NOT met'}")
    if "rq-2" not in by:
        return
    for base, target in (("rq-1", True), ("local-1", True), ("local", False)):
        if by.get(base):
            ratio = by["rq-2"] / by[base]
            verdict = ("met" if ratio >= 1.6 else "NOT met") if target else "for information"
            print(f"2 workers / {base} = {ratio:.2f}x" + (f" (target 1.6x): {verdict}" if target else f" ({verdict})"))


if __name__ == "__main__":
    sys.exit(main())
