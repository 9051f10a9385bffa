"""The benchmark's cases (issue 21): which replicas each needs and the commands it times.

Case names and what they compare (v0.3 and v0.5 each where a version is named):

* ``restore-v3/v5`` (1): snapshot-heavy ``--size-mb`` replica, ``jobs.restore`` against
  ``litestream restore``;
* ``wal-v3/v5`` (2): WAL-heavy replica of ``--size-mb`` (most restored bytes from WAL);
* ``segments-v3/v5`` (3): ``--segments`` tiny segments after the snapshot;
* ``remote-restore-v3/v5``, ``remote-segments-v3/v5`` (4): cases 1 and 3 through a proxy
  that delays every request by ``--delay-ms``;
* ``startup`` (5): ``jobs.verify --help`` and ``jobs.restore`` of a tiny file replica;
* ``verify-v3/v5`` (6): a ``--verify-size-mb`` replica: ``jobs.verify`` against
  ``jobs.restore --check`` (the restore and ``PRAGMA integrity_check`` of its result, in one
  process); and, for reference, ``jobs.restore`` plus ``PRAGMA integrity_check`` of a copy
  already in the page cache, timed apart (see ``_verify_case``);
* ``many`` (not run unless named): one ``jobs.verify`` of ``--many`` small replicas against
  one of one replica.
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import harness, replicas
from bench.replicas import V3, V5, Spec

# The cached replicas are not being written to: jobs.verify must not fail them as stale.
VERIFY_FLAGS = ("--json", "--max-age", "3650d")
INTEGRITY_SCRIPT = (
    "import sqlite3, sys\n"
    "con = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
    "rows = con.execute('PRAGMA integrity_check').fetchall()\n"
    "sys.exit(0 if rows == [('ok',)] else 1)\n"
)
VERSIONED = ("restore", "wal", "segments", "remote-restore", "remote-segments", "verify")
DEFAULT_CASES = tuple(f"{c}-{v}" for c in VERSIONED for v in ("v3", "v5")) + ("startup",)
CASES = DEFAULT_CASES + ("many",)
# replica key -> the cases that need it; keys end in 3 or 5 (the litestream version)
_NEEDS = {"big": ("restore", "remote-restore"), "wal": ("wal",), "seg": ("segments", "remote-segments"),
          "huge": ("verify",)}


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


def specs_for(cases: list[str], args) -> dict[str, Spec]:
    """The replicas the chosen cases need, by key (``big3``, ``seg5``, ``small3``, ...)."""
    sizes = {"big": ("big", args.size_mb, 0), "wal": ("walheavy", args.size_mb, 0),
             "seg": ("segments", 1, args.segments), "huge": ("big", args.verify_size_mb, 0)}
    out = {}
    for key, users in _NEEDS.items():
        for tag, version in (("3", V3), ("5", V5)):
            if any(f"{u}-v{tag}" in cases for u in users):
                kind, size, segments = sizes[key]
                out[key + tag] = Spec(kind, version, size, segments=segments)
    if "startup" in cases or "many" in cases:
        out["small3"], out["small5"] = Spec("small", V3, 1), Spec("small", V5, 1)
    return out


def make_cases(cache, server, proxy, built: dict, args) -> dict[str, list[Command]]:
    """Every chosen case's commands; ``proxy`` is the delaying proxy's endpoint (or None)."""
    out_dir = cache.work / "out"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    scratch = cache.work / "scratch"
    scratch.mkdir(exist_ok=True)
    ctx = _Context(cache, out_dir, harness.base_env({"RESTORABLE_SCRATCH_DIR": str(scratch)}, repo=args.repo.resolve()),
                   args.repo.resolve())
    cases: dict[str, list[Command]] = {}
    for name in args.cases:
        kind, _, tag = name.rpartition("-v")
        if name == "startup":
            cases[name] = _startup(ctx, built)
        elif name == "many":
            cases[name] = _many(ctx, server.endpoint, built, args.many)
        elif kind == "verify":
            cases[name] = _verify_case(ctx, server.endpoint, f"huge{tag}", built[f"huge{tag}"])
        else:
            key = {"restore": "big", "wal": "wal", "segments": "seg"}[kind.removeprefix("remote-")]
            endpoint = proxy if kind.startswith("remote-") else server.endpoint
            cases[name] = _restore_pair(ctx, endpoint, f"{name}", built[key + tag])
    return cases


@dataclass
class _Context:
    cache: replicas.Cache
    out_dir: Path
    renv: dict
    repo: Path

    def config(self, name: str, b, endpoint: str, replica: dict | None = None) -> tuple[Path, Path]:
        db_path = self.cache.db_path(b.bucket)
        replica = replica or replicas.replica_config(b.spec.version, endpoint, b.bucket)
        cfg = replicas.write_config(self.cache.work / "configs" / f"bench-{name}.yml",
                                    [replicas.db_entry(b.spec.version, db_path, replica)])
        return cfg, db_path

    def restore(self, name: str, cfg: Path, b, *flags: str) -> Command:
        out = self.out_dir / f"{name}-restorable{''.join(flags).replace('-', '_')}.db"
        return Command(" ".join(("restorable jobs.restore", *flags)),
                       [sys.executable, "-m", "jobs.restore", "--config", cfg, "-o", out, *flags],
                       self.renv, out, b.reference_sha256, cwd=self.repo)

    def litestream(self, name: str, cfg: Path, db_path: Path, b) -> Command:
        out = self.out_dir / f"{name}-litestream.db"
        argv = [harness.litestream_bin(b.spec.version), "restore", "-config", cfg, "-o", out, db_path]
        return Command(f"litestream {b.spec.version} restore", argv, harness.litestream_env(), out, b.reference_sha256)


def _restore_pair(ctx: _Context, endpoint: str, name: str, b) -> list[Command]:
    cfg, db_path = ctx.config(name, b, endpoint)
    return [ctx.litestream(name, cfg, db_path, b), ctx.restore(name, cfg, b)]


def _verify_case(ctx: _Context, endpoint: str, name: str, b) -> list[Command]:
    """jobs.verify; jobs.restore --check, what the target compares it with; and, for reference,
    jobs.restore and PRAGMA integrity_check of a copy litestream restores now, untimed.

    Why ``--check`` is the comparison: ``jobs.verify`` has to read the whole restored file back,
    so it writes it through the page cache, as ``jobs.restore --check`` does; plain
    ``jobs.restore`` writes around the cache (``lib/litestream/pages.py``), and the copy the
    reference ``integrity_check`` reads was cached by its untimed restore. That sum leaves out
    the cost of caching 1 GB, which on some machines is seconds (docs/performance.md, round five).
    """
    cfg, db_path = ctx.config(name, b, endpoint)
    check_db = ctx.out_dir / f"{name}-integrity-input.db"
    prepare = ctx.litestream(name, cfg, db_path, b)
    argv = [str(a) for a in prepare.argv]
    argv[argv.index("-o") + 1] = str(check_db)
    subprocess.run(argv, env=prepare.env, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=1800)
    # --drill none: a drill (on by default) restores and checks an older point as well, twice the work.
    # The order matters, and rounds only rotate it: a command that fills the page cache and then
    # deletes its file leaves the next command memory it can take at once, where memory never
    # used before costs seconds per GB on some machines. So neither of the two compared commands
    # follows the other: each follows one that leaves no such memory behind.
    return [
        Command("restorable jobs.verify --drill none", [sys.executable, "-m", "jobs.verify", "--config", cfg,
                                                        *VERIFY_FLAGS, "--drill", "none"], ctx.renv, cwd=ctx.repo),
        ctx.restore(name, cfg, b),
        ctx.restore(name, cfg, b, "--check"),
        Command("PRAGMA integrity_check alone", [sys.executable, "-c", INTEGRITY_SCRIPT, check_db], ctx.renv),
    ]


def _startup(ctx: _Context, built: dict) -> list[Command]:
    """``--help``, and the tiny v0.3 replica restored from its bucket folder as a file replica."""
    b = built["small3"]
    replica = {"type": "file", "path": str(ctx.cache.s3_root / b.bucket / replicas.REPLICA_PATH)}
    cfg, db_path = ctx.config("startup-file", b, "", replica)
    return [
        Command("restorable jobs.verify --help", [sys.executable, "-m", "jobs.verify", "--help"], ctx.renv,
                cwd=ctx.repo),
        ctx.restore("startup-file", cfg, b),
        ctx.litestream("startup-file", cfg, db_path, b),
    ]


def _many(ctx: _Context, endpoint: str, built: dict, count: int) -> list[Command]:
    small = [built["small3"], built["small5"]]
    bucket = replicas.clone_many(ctx.cache, small, count)
    many_cfg = replicas.many_config(ctx.cache, endpoint, bucket, small, count, "bench-many.yml")
    one_cfg = replicas.many_config(ctx.cache, endpoint, bucket, small, 1, "bench-many-one.yml")
    py = sys.executable
    return [
        Command(f"restorable jobs.verify, {count} databases", [py, "-m", "jobs.verify", "--config", many_cfg,
                                                                *VERIFY_FLAGS], ctx.renv, cwd=ctx.repo),
        Command("restorable jobs.verify, 1 database", [py, "-m", "jobs.verify", "--config", one_cfg, *VERIFY_FLAGS],
                ctx.renv, cwd=ctx.repo),
    ]


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
