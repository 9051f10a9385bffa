"""Benchmark restorable's native restores against ``litestream restore`` (issues 8 and 21).

    .venv/bin/python bench/run.py [--size-mb 200] [--rounds 3] [--cases ...] [--quick]

The replicas are written by the real litestream 0.3.13 and 0.5.17 into ``rclone serve s3``
on 127.0.0.1 (built once, cached under ``bench/.cache/``); ``bench/cases.py`` lists the
cases (snapshot-heavy, WAL-heavy, tiny segments, a remote bucket through a proxy that delays
every request, start-up, verify of a big database).

Commands run interleaved: each round runs every command of a case once, in an order that
rotates between rounds, after ``os.sync()`` and with the previous output removed. The
tables show min/median/max of wall time and of user+sys CPU, and the peak RSS of the
measured process itself (``wait4``). Every restore's output is compared once with the
sha256 of ``litestream restore``'s. ``--quick`` builds ~5 MB replicas with 100 segments
and runs one round (does the bench run?).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cases as bench_cases  # noqa: E402
from bench import harness, replicas, report  # noqa: E402
from bench.cases import CASES, DEFAULT_CASES, Command  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200,
                        help="size of the snapshot-heavy and WAL-heavy databases (default 200)")
    parser.add_argument("--verify-size-mb", type=float,
                        help="size of the verify case's database (default 1000; --quick: --size-mb)")
    parser.add_argument("--segments", type=int, help="tiny segments after the snapshot (default 10000, --quick 100)")
    parser.add_argument("--delay-ms", type=float, default=30, help="delay of every request in remote-* (default 30)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--many", type=int, help="databases in the many-replicas config (default 50, --quick 4)")
    parser.add_argument("--quick", action="store_true", help="~5 MB replicas, 100 segments, one round, every case")
    parser.add_argument("--cache-dir", type=Path, default=harness.BENCH_DIR / ".cache",
                        help="where replicas are built and kept (default bench/.cache)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds any one measured command may take")
    parser.add_argument("--repo", type=Path, default=harness.REPO_ROOT,
                        help="the checkout whose jobs.restore / jobs.verify are measured (default: this one)")
    parser.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES) + " (default: all but many)")
    parser.add_argument("--build-only", action="store_true", help="build (or find) the replicas, measure nothing")
    parser.add_argument("--baseline-repo", type=Path,
                        help="also time this checkout's jobs, interleaved, marked [baseline] (A/B of a change)")
    parser.add_argument("--json", type=Path, help="also write every run's measurements to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb = min(args.size_mb, 5)
    args.verify_size_mb = args.verify_size_mb or (args.size_mb if args.quick else 1000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.segments = args.segments or (100 if args.quick else 10000)
    args.many = args.many or (4 if args.quick else 50)
    # --quick checks that every case runs, the many-databases one included
    args.cases = args.cases.split(",") if args.cases else list(CASES if args.quick else DEFAULT_CASES)
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    for module in ("boto3", "lz4", "yaml", "numpy"):
        try:
            __import__(module)
        except ImportError:
            print(f"bench: {module} is missing; run with .venv/bin/python after `bash scripts/setup_venv.sh`",
                  file=sys.stderr)
            return 3
    for repo in filter(None, (args.repo, args.baseline_repo)):
        harness.compile_bytecode(repo.resolve())
    cache = replicas.Cache(args.cache_dir.resolve())
    specs = bench_cases.specs_for(args.cases, args)
    started = time.monotonic()
    found = replicas.ensure(cache, list(dict.fromkeys(specs.values())), say=lambda m: print(m, file=sys.stderr, flush=True))
    built = {key: found[spec] for key, spec in specs.items()}
    if "many" in args.cases:  # before the server starts: rclone does not see buckets created later
        replicas.clone_many(cache, [built["small3"], built["small5"]], args.many)
    print(f"replicas ready in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    if args.build_only:
        return 0
    load_before = os.getloadavg()
    with ExitStack() as stack:
        server = stack.enter_context(harness.S3Server(cache.s3_root, cache.logs / "rclone-bench.log"))
        proxy = None
        if any(name.startswith("remote-") for name in args.cases):
            proxy = stack.enter_context(harness.DelayProxy(server.endpoint, args.delay_ms / 1000)).endpoint
        cases = bench_cases.make_cases(cache, server, proxy, built, args)
        if args.baseline_repo:
            cases = {name: bench_cases.with_baseline(case, args.baseline_repo.resolve()) for name, case in cases.items()}
        run_rounds(cases, args, cache)
    args.load = (load_before, os.getloadavg())
    report.print_report(cases, built, args)
    if args.json:
        report.write_json(args.json, cases, built, args)
    failed = [c.name for case in cases.values() for c in case if any(r.returncode for r in c.runs)]
    if failed:
        print(f"bench: commands that exited non-zero: {', '.join(failed)}; logs in {cache.logs}", file=sys.stderr)
        return 1
    return 0


def run_rounds(cases, args, cache) -> None:
    for rnd in range(args.rounds):
        for name, case in cases.items():
            # rotate the order within each case, so no tool always runs first (A B, B A, ...)
            order = case[rnd % len(case):] + case[:rnd % len(case)]
            for cmd in order:
                run_one(cmd, name, args, cache)
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)


def run_one(cmd: Command, case_name: str, args, cache) -> None:
    """One timed run: output removed before and after, dirty pages written out first, so
    no run pays for the previous one's writeback."""
    if cmd.output is not None:
        cmd.output.unlink(missing_ok=True)
    os.sync()
    slug = "".join(ch if ch.isalnum() else "-" for ch in f"{case_name} {cmd.name}")
    log = cache.logs / f"run-{slug}.log"
    run = harness.measure(cmd.argv, cmd.env, args.timeout, log, cwd=cmd.cwd)
    cmd.runs.append(run)
    if run.returncode:
        tail = "\n".join(run.output.strip().splitlines()[-6:])
        print(f"bench: {case_name}: {cmd.name} exited {run.returncode} (log {log}):\n{tail}", file=sys.stderr)
    if cmd.output is not None:
        if cmd.same_bytes is None and cmd.output.exists():
            cmd.same_bytes = replicas.sha256_file(cmd.output) == cmd.reference_sha256
        cmd.output.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
