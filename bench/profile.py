"""Profile one restorable restore of a cached benchmark replica (build them with bench/run.py first).

    .venv/bin/python bench/profile.py v3|v5|wal3|wal5|segments|segments5|many [--job restore|verify] [--size-mb 200]
                                      [--repo PATH] [--py-spy BIN]

Serves the cached replicas with ``rclone serve s3`` on 127.0.0.1 and runs
``python -m jobs.restore`` (or ``jobs.verify``; ``many`` is always verify) under cProfile (the top functions by own time and by
cumulative time are printed, the .prof file is kept), then, with ``--py-spy``, once more
under ``py-spy record --idle --threads`` (a sampling profile of every thread, waiting
included), summarised as seconds per thread and per leaf function. py-spy is not a
dependency: install it anywhere (``pip install --target DIR py-spy``) and pass its path.
"""
from __future__ import annotations

import argparse
import collections
import pstats
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, replicas  # noqa: E402
from bench.replicas import V3, V5, Spec  # noqa: E402

PY_SPY_RATE = 250  # samples per second
# ``python -m cProfile -m jobs.X`` writes nothing: the jobs end with os._exit (cli.exit_now).
# This calls the job's main() under cProfile and writes the profile before exiting.
CPROFILE_MAIN = (
    "import cProfile, importlib, sys\n"
    "out, module, argv = sys.argv[1], sys.argv[2], sys.argv[3:]\n"
    "profiler = cProfile.Profile()\n"
    "code = profiler.runcall(lambda: importlib.import_module(module).main(argv))\n"
    "profiler.dump_stats(out)\n"
    "sys.exit(code)\n"
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("replica", choices=("v3", "v5", "wal3", "wal5", "segments", "segments5", "many"))
    parser.add_argument("--job", choices=("restore", "verify"), default="restore")
    parser.add_argument("--many", type=int, default=50, help="databases in the many config (built by run.py)")
    parser.add_argument("--size-mb", type=float, default=200)
    parser.add_argument("--segments", type=int, default=10000)
    parser.add_argument("--repo", type=Path, default=harness.REPO_ROOT, help="checkout whose jobs.restore runs")
    parser.add_argument("--cache-dir", type=Path, default=harness.BENCH_DIR / ".cache")
    parser.add_argument("--py-spy", type=Path, help="py-spy executable: also take a sampling profile")
    parser.add_argument("--top", type=int, default=25)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cache = replicas.Cache(args.cache_dir.resolve())
    small = [Spec("small", V3, 1), Spec("small", V5, 1)]
    spec = {"v3": Spec("big", V3, args.size_mb), "v5": Spec("big", V5, args.size_mb),
            "wal3": Spec("walheavy", V3, args.size_mb), "wal5": Spec("walheavy", V5, args.size_mb),
            "segments": Spec("segments", V3, 1, segments=args.segments),
            "segments5": Spec("segments", V5, 1, segments=args.segments)}.get(args.replica, small[0])
    needed = [spec] + (small[1:] if args.replica == "many" else [])
    built = [cache.load(s) for s in needed]
    if None in built:
        print("profile: replicas not built; run bench/run.py --build-only (same --size-mb / --segments) first",
              file=sys.stderr)
        return 3
    repo = args.repo.resolve()
    harness.compile_bytecode(repo)
    out_dir = cache.work / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    with harness.S3Server(cache.s3_root, cache.logs / "rclone-profile.log") as server:
        if args.replica == "many":
            bucket = replicas.clone_many(cache, built, args.many)
            config = replicas.many_config(cache, server.endpoint, bucket, built, args.many, "profile-many.yml")
            name = f"many-{args.many}"
        else:
            replica = replicas.replica_config(spec.version, server.endpoint, spec.bucket)
            config = replicas.write_config(cache.work / "configs" / f"profile-{spec.bucket}.yml",
                                           [replicas.db_entry(spec.version, cache.db_path(spec.bucket), replica)])
            name = spec.bucket
        output = out_dir / f"{name}.db"
        if args.replica == "many" or args.job == "verify":
            job = ["-m", "jobs.verify", "--config", str(config), "--json", "--max-age", "3650d"]
            name += "-verify"
        else:
            job = ["-m", "jobs.restore", "--config", str(config), "-o", str(output), "--force"]
        env = harness.base_env(repo=repo)
        prof = out_dir / f"{name}.prof"
        run(repo, env, [sys.executable, "-c", CPROFILE_MAIN, str(prof), *job[1:]], output)
        stats = pstats.Stats(str(prof))
        for key in ("tottime", "cumulative"):
            print(f"\n=== cProfile, main thread only, by {key} ({prof})")
            stats.sort_stats(key).print_stats(args.top)
        if args.py_spy:
            raw = out_dir / f"{name}.py-spy.txt"
            run(repo, env, [str(args.py_spy), "record", "--idle", "--threads", "--rate", str(PY_SPY_RATE),
                            "--format", "raw", "--output", str(raw), "--", sys.executable, *job], output)
            summarise_py_spy(raw, args.top)
    return 0


def run(repo: Path, env: dict, cmd: list[str], output: Path) -> None:
    output.unlink(missing_ok=True)
    proc = subprocess.run(cmd, cwd=repo, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    output.unlink(missing_ok=True)


def summarise_py_spy(raw: Path, top: int) -> None:
    """py-spy's raw format: one line per distinct stack, ``thread (tid): name;frame;... count``.

    Per thread: seconds sampled, then the innermost restorable frame (lib/, jobs/) of each
    sample, which says where that thread's time goes, waiting included.
    """
    by_thread: collections.Counter = collections.Counter()
    inner: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread = frames[0].split("): ", 1)[-1] if frames[0].startswith("thread") else "?"
        n = int(count)
        by_thread[thread] += n
        ours = [f for f in frames[1:] if "(lib/" in f or "(jobs/" in f]
        inner[thread][f"{ours[-1] if ours else '-'}  >  {frames[-1]}"] += n
    total = sum(by_thread.values())
    print(f"\n=== py-spy ({raw}), seconds of samples per thread (waiting included)")
    for thread, n in by_thread.most_common():
        print(f"{n / PY_SPY_RATE:8.2f}  {thread}")
    for thread, n in by_thread.most_common():
        if n < total * 0.08:
            continue
        print(f"\n=== py-spy, {thread}: innermost restorable frame  >  leaf frame")
        for frame, m in inner[thread].most_common(top):
            print(f"{m / PY_SPY_RATE:8.2f}  {frame}")


if __name__ == "__main__":
    sys.exit(main())
