"""Benchmark restorable's native restores against ``litestream restore`` (issue 8).

    .venv/bin/python bench/run.py [--size-mb 200] [--rounds 3] [--quick]

What it measures, on replicas written by the real litestream 0.3.13 and 0.5.17 into
``rclone serve s3`` on 127.0.0.1 (built once, cached under ``bench/.cache/``):

1. restore of a ``--size-mb`` database: ``python -m jobs.restore`` against
   ``litestream restore`` of the same version, v0.3 and v0.5;
2. ``python -m jobs.verify`` (list, restore, integrity_check, row counts) against
   ``jobs.restore`` plus ``PRAGMA integrity_check`` run separately;
3. a v0.3 replica of thousands of tiny WAL segments, both tools;
4. one ``jobs.verify`` run over many small replicas (half v0.3, half v0.5) in one
   config, against a run over one of them: the per-database overhead.

Commands run interleaved (each round runs every command once, in an order that rotates
between rounds); the table shows medians of wall time, and the peak RSS of the measured
process itself (``wait4``). Every restore's output is compared once with the sha256 of
``litestream restore``'s. ``--quick`` builds ~5 MB replicas and runs one round (CI).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, replicas  # noqa: E402
from bench.replicas import V3, V5, Spec  # noqa: E402

# The cached replicas are not being written to: jobs.verify must not fail them as stale.
# No drill: the target compares one verification with one restore plus integrity_check; a
# drill (docs/recovery.md) is a second restore of an older point, by design.
VERIFY_FLAGS = ("--json", "--max-age", "3650d", "--drill", "none")
INTEGRITY_SCRIPT = (
    "import sqlite3, sys\n"
    "con = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
    "rows = con.execute('PRAGMA integrity_check').fetchall()\n"
    "sys.exit(0 if rows == [('ok',)] else 1)\n"
)
CASES = ("restore-v3", "restore-v5", "verify-v3", "verify-v5", "segments-v3", "many")
# Targets from issue 8.
TARGET_V3_RATIO = 1.0
TARGET_V5_RATIO = 0.6
TARGET_RSS_MB = 120
TARGET_VERIFY_RATIO = 1.10


@dataclass
class Command:
    """One thing timed each round."""

    name: str
    argv: list
    env: dict
    output: Path | None = None  # a restore's output: removed after each run
    reference_sha256: str | None = None  # what the output must hash to
    cwd: Path = harness.REPO_ROOT
    runs: list = field(default_factory=list)
    same_bytes: bool | None = None

    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    def median_cpu(self) -> float:
        return statistics.median(r.cpu_seconds for r in self.runs)

    def peak_rss(self) -> float:
        return max(r.max_rss_mb for r in self.runs)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200, help="size of the big databases (default 200)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--segments", type=int, help="WAL segments of the many-segments replica (default 2000)")
    parser.add_argument("--many", type=int, help="databases in the many-replicas config (default 50, --quick 4)")
    parser.add_argument("--quick", action="store_true", help="~5 MB replicas, one round: checks the bench runs")
    parser.add_argument("--cache-dir", type=Path, default=harness.BENCH_DIR / ".cache",
                        help="where replicas are built and kept (default bench/.cache)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds any one measured command may take")
    parser.add_argument("--repo", type=Path, default=harness.REPO_ROOT,
                        help="the checkout whose jobs.restore / jobs.verify are measured (default: this one)")
    parser.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--build-only", action="store_true", help="build (or find) the replicas, measure nothing")
    parser.add_argument("--baseline-repo", type=Path,
                        help="also time this checkout's jobs, interleaved, marked [baseline] (A/B of a change)")
    parser.add_argument("--json", type=Path, help="also write the measurements to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mb = min(args.size_mb, 5)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.segments = args.segments or (100 if args.quick else 2000)
    args.many = args.many or (4 if args.quick else 50)
    args.cases = args.cases.split(",") if args.cases else list(CASES)
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
    cache = replicas.Cache(args.cache_dir.resolve())
    specs = {
        "big3": Spec("big", V3, args.size_mb), "big5": Spec("big", V5, args.size_mb),
        "seg3": Spec("segments", V3, 1, segments=args.segments),
        "small3": Spec("small", V3, 1), "small5": Spec("small", V5, 1),
    }
    started = time.monotonic()
    built = replicas.ensure(cache, list(specs.values()), say=lambda m: print(m, file=sys.stderr, flush=True))
    many = replicas.clone_many(cache, [built[specs["small3"]], built[specs["small5"]]], args.many)
    print(f"replicas ready in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    if args.build_only:
        return 0
    load_before = os.getloadavg()

    with harness.S3Server(cache.s3_root, cache.logs / "rclone-bench.log") as server:
        cases = make_cases(cache, server, {k: built[s] for k, s in specs.items()}, many, args)
        cases = {name: case for name, case in cases.items() if name in args.cases}
        if args.baseline_repo:
            cases = {name: with_baseline(case, args.baseline_repo.resolve()) for name, case in cases.items()}
        prepare_integrity_input(cache, cases)
        run_rounds(cases, args, cache)
    args.load = (load_before, os.getloadavg())
    print_report(cases, {k: built[s] for k, s in specs.items()}, args)
    if args.json:
        write_json(args.json, cases, args)
    failed = [c.name for case in cases.values() for c in case if any(r.returncode for r in c.runs)]
    if failed:
        print(f"bench: commands that exited non-zero: {', '.join(failed)}; logs in {cache.logs}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- cases


def make_cases(cache, server, built: dict, many_bucket: str, args) -> dict[str, list[Command]]:
    out_dir = cache.work / "out"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    scratch = cache.work / "scratch"
    scratch.mkdir(exist_ok=True)
    py = sys.executable
    renv = harness.base_env({"RESTORABLE_SCRATCH_DIR": str(scratch)}, repo=args.repo.resolve())
    here = args.repo.resolve()
    lenv = harness.litestream_env()

    def config_for(key: str, b) -> tuple[Path, Path]:
        db_path = cache.db_path(b.bucket)
        replica = replicas.replica_config(b.spec.version, server.endpoint, b.bucket)
        cfg = replicas.write_config(cache.work / "configs" / f"bench-{key}.yml",
                                    [replicas.db_entry(b.spec.version, db_path, replica)])
        return cfg, db_path

    def restore_pair(key: str) -> list[Command]:
        b = built[key]
        cfg, db_path = config_for(key, b)
        lout, rout = out_dir / f"{key}-litestream.db", out_dir / f"{key}-restorable.db"
        lbin = harness.litestream_bin(b.spec.version)
        return [
            Command(f"litestream {b.spec.version} restore", [lbin, "restore", "-config", cfg, "-o", lout, db_path],
                    lenv, lout, b.reference_sha256),
            Command("restorable jobs.restore", [py, "-m", "jobs.restore", "--config", cfg, "-o", rout],
                    renv, rout, b.reference_sha256, cwd=here),
        ]

    def verify_trio(key: str) -> list[Command]:
        cfg, _ = config_for(key, built[key])
        check_db = out_dir / f"{key}-integrity-input.db"
        return [
            Command("restorable jobs.verify", [py, "-m", "jobs.verify", "--config", cfg, *VERIFY_FLAGS], renv, cwd=here),
            Command("PRAGMA integrity_check alone", [py, "-c", INTEGRITY_SCRIPT, check_db], renv),
        ]

    cases = {
        "restore-v3": restore_pair("big3"),
        "restore-v5": restore_pair("big5"),
        "verify-v3": verify_trio("big3"),
        "verify-v5": verify_trio("big5"),
        "segments-v3": restore_pair("seg3"),
    }
    small = [built["small3"], built["small5"]]
    many_cfg = replicas.many_config(cache, server.endpoint, many_bucket, small, args.many, "bench-many.yml")
    one_cfg = replicas.many_config(cache, server.endpoint, many_bucket, small, 1, "bench-many-one.yml")
    cases["many"] = [
        Command(f"restorable jobs.verify, {args.many} databases", [py, "-m", "jobs.verify", "--config", many_cfg,
                                                                   *VERIFY_FLAGS], renv, cwd=here),
        Command("restorable jobs.verify, 1 database", [py, "-m", "jobs.verify", "--config", one_cfg, *VERIFY_FLAGS], renv,
                cwd=here),
    ]
    return cases


def with_baseline(case: list[Command], repo: Path) -> list[Command]:
    """The case plus a copy of each restorable command that runs ``repo``'s code."""
    out = []
    for cmd in case:
        out.append(cmd)
        if cmd.name.startswith("restorable"):
            env = dict(cmd.env, PYTHONPATH=str(repo))
            output = cmd.output.with_name(cmd.output.stem + "-baseline.db") if cmd.output else None
            argv = [output if a == cmd.output else a for a in cmd.argv]
            out.append(Command(cmd.name + " [baseline]", argv, env, output, cmd.reference_sha256, cwd=repo))
    return out


def prepare_integrity_input(cache, cases) -> None:
    """The integrity_check command reads a restored copy made once, untimed, by litestream."""
    for key, pair in (("verify-v3", "restore-v3"), ("verify-v5", "restore-v5")):
        if key not in cases:
            continue
        litestream_cmd = cases[pair][0]
        integrity_cmd = next(c for c in cases[key] if c.name.startswith("PRAGMA integrity_check"))
        target = Path(integrity_cmd.argv[-1])
        argv = [str(a) for a in litestream_cmd.argv]
        argv[argv.index("-o") + 1] = str(target)
        subprocess.run(argv, env=litestream_cmd.env, check=True, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=600)


def run_rounds(cases, args, cache) -> None:
    commands = [c for case in cases.values() for c in case]
    for rnd in range(args.rounds):
        for case in cases.values():
            # rotate the order within each case, so no tool always runs first (A B, B A, ...)
            order = case[rnd % len(case):] + case[:rnd % len(case)]
            for cmd in order:
                run_one(cmd, args, cache)
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    assert all(c.runs for c in commands)


def run_one(cmd: Command, args, cache) -> None:
    if cmd.output is not None:
        cmd.output.unlink(missing_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in cmd.name)
    run = harness.measure(cmd.argv, cmd.env, args.timeout, cache.logs / f"run-{slug}.log", cwd=cmd.cwd)
    cmd.runs.append(run)
    if run.returncode:
        tail = "\n".join(run.output.strip().splitlines()[-6:])
        print(f"bench: {cmd.name} exited {run.returncode} (log {cache.logs / f'run-{slug}.log'}):\n{tail}",
              file=sys.stderr)
    if cmd.output is not None:
        if cmd.same_bytes is None and cmd.output.exists():
            cmd.same_bytes = replicas.sha256_file(cmd.output) == cmd.reference_sha256
        cmd.output.unlink(missing_ok=True)


# --------------------------------------------------------------------------- report


def print_report(cases, built: dict, args) -> None:
    print(f"\nrestorable benchmark: {platform.python_implementation()} {platform.python_version()}, "
          f"{_cpu()}, rounds={args.rounds}{' (quick)' if args.quick else ''}, load average "
          f"{args.load[0][0]:.1f} before / {args.load[1][0]:.1f} after\n")
    print("| replica | database | stored objects |")
    print("|---|---:|---:|")
    for key, label in (("big3", "v0.3 big"), ("big5", "v0.5 big"), ("seg3", "v0.3 many segments"),
                       ("small3", "v0.3 small"), ("small5", "v0.5 small")):
        b = built[key]
        print(f"| {label} | {b.db_bytes / 1e6:.1f} MB | {b.objects} ({b.wal_objects} WAL/L0-8), "
              f"{b.object_bytes / 1e6:.1f} MB |")
    print("\n| case | command | median wall s | min-max wall s | median CPU s | peak RSS MB | same bytes |")
    print("|---|---|---:|---:|---:|---:|---|")
    for case_name, case in cases.items():
        for c in case:
            times = [r.seconds for r in c.runs]
            same = {None: "", True: "yes", False: "NO"}[c.same_bytes]
            fail = "" if not any(r.returncode for r in c.runs) else f" (exit {max(r.returncode for r in c.runs)})"
            print(f"| {case_name} | {c.name}{fail} | {c.median():.2f} | {min(times):.2f}-{max(times):.2f} | "
                  f"{c.median_cpu():.2f} | {c.peak_rss():.0f} | {same} |")
    print("\n| check (issue 8) | measured | target | met |")
    print("|---|---:|---:|---|")
    for name, value, target, met in checks(cases, built, args):
        print(f"| {name} | {value} | {target} | {met} |")


def checks(cases, built, args):
    """(name, measured, target, met) rows for the cases that ran."""
    if args.baseline_repo:
        for name, case in cases.items():
            for cmd in case:
                base = next((c for c in case if c.name == cmd.name + " [baseline]"), None)
                if base is not None:
                    yield _ratio_row(f"{name}: {cmd.name} / [baseline]", cmd, base, None)
        return
    size = f"{built['big3'].db_bytes / 1e6:.0f} MB"
    restores = {}
    for version, key, target in (("v0.3", "restore-v3", TARGET_V3_RATIO), ("v0.5", "restore-v5", TARGET_V5_RATIO)):
        if key in cases:
            theirs, ours = cases[key]
            restores[version] = ours
            yield _ratio_row(f"{version} restore {size}: restorable / {theirs.name.rsplit(' ', 1)[0]}", ours, theirs,
                             target)
    for version, key in (("v0.3", "verify-v3"), ("v0.5", "verify-v5")):
        if key in cases and version in restores:
            verify, integrity = (_named(cases[key], n) for n in ("restorable jobs.verify", "PRAGMA integrity_check"))
            restore = restores[version]
            ratio = verify.median() / (restore.median() + integrity.median())
            yield (f"{version} verify / (restore + integrity_check) = {verify.median():.2f} / "
                   f"({restore.median():.2f} + {integrity.median():.2f}) s", f"{ratio:.2f}x",
                   f"<= {TARGET_VERIFY_RATIO:.2f}x", _met(ratio <= TARGET_VERIFY_RATIO))
    for version, cmd in restores.items():
        rss = cmd.peak_rss()
        yield f"peak RSS, jobs.restore {version} {size}", f"{rss:.0f} MB", f"< {TARGET_RSS_MB} MB", _met(rss < TARGET_RSS_MB)
    if "segments-v3" in cases:
        segl, segr = cases["segments-v3"]
        count = built["seg3"].wal_objects
        yield _ratio_row(f"{count} tiny WAL segments: restorable / litestream 0.3.13", segr, segl, None)
        yield f"{count} tiny WAL segments: restorable per segment", f"{segr.median() / count * 1000:.2f} ms", "", ""
    if "many" in cases:
        many, one = cases["many"]
        per_db = (many.median() - one.median()) / max(1, args.many - 1)
        yield (f"verify {args.many} small databases in one run (default pool of 2)", f"{many.median():.2f} s", "",
               "" if not any(r.returncode for r in many.runs) else "NO (failed)")
        yield "per-database overhead: (verify N - verify 1) / (N - 1)", f"{per_db * 1000:.0f} ms", "", ""


def _named(case: list[Command], prefix: str) -> Command:
    return next(c for c in case if c.name.startswith(prefix))


def _ratio_row(name, ours, theirs, target):
    """Wall-time ratio of medians; the CPU-time ratio alongside, as it moves less with machine load."""
    ratio = ours.median() / theirs.median()
    cpu = ours.median_cpu() / theirs.median_cpu()
    return (f"{name} = {ours.median():.2f} / {theirs.median():.2f} s wall", f"{ratio:.2f}x (CPU {cpu:.2f}x)",
            f"<= {target:.1f}x" if target else "", _met(ratio <= target) if target else "")


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _cpu() -> str:
    import os

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs{' ' + model if model else ''}"


def write_json(path: Path, cases, args) -> None:
    doc = {"args": {k: str(v) for k, v in vars(args).items()}, "cases": {
        name: [{"command": c.name, "seconds": [r.seconds for r in c.runs], "cpu_seconds": [r.cpu_seconds for r in c.runs],
                "max_rss_mb": [r.max_rss_mb for r in c.runs],
                "returncodes": [r.returncode for r in c.runs], "same_bytes": c.same_bytes} for c in case]
        for name, case in cases.items()}}
    path.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    sys.exit(main())
