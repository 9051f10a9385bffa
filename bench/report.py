"""The benchmark's tables: replicas, every command's runs, and issue 21's targets."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from bench.replicas import V3

# Targets from issue 21 (medians; ratios against litestream restore of the same version).
TARGET_RATIO = {"v3": 0.8, "v5": 0.45}
TARGET_V3_CPU_RATIO = 1.5
TARGET_HELP_SECONDS = 0.15
TARGET_TINY_RESTORE_SECONDS = 0.3
TARGET_VERIFY_RATIO = 1.05
TARGET_RSS_MB = 120
_REPLICA_LABELS = {"big": "snapshot-heavy", "wal": "WAL-heavy", "seg": "tiny segments", "huge": "verify (big)",
                   "small": "small"}


def print_report(cases, built: dict, args) -> None:
    print(f"\nrestorable benchmark: {platform.python_implementation()} {platform.python_version()}, "
          f"{_cpu()}, rounds={args.rounds}{' (quick)' if args.quick else ''}, remote delay {args.delay_ms:g} ms, "
          f"load average {args.load[0][0]:.1f} before / {args.load[1][0]:.1f} after\n")
    print("| replica | database | stored objects | WAL / L0-8 objects | segments after snapshot |")
    print("|---|---:|---:|---:|---:|")
    for key, b in sorted(built.items()):
        label = f"v0.{'3' if b.spec.version == V3 else '5'} {_REPLICA_LABELS[key[:-1]]}"
        print(f"| {label} | {b.db_bytes / 1e6:.1f} MB | {b.objects}, {b.object_bytes / 1e6:.1f} MB | "
              f"{b.wal_objects}, {b.wal_bytes / 1e6:.1f} MB | {b.transactions} |")
    print("\n| case | command | median wall s | min-max wall s | median CPU s | min-max CPU s | peak RSS MB "
          "| same bytes |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for case_name, case in cases.items():
        for c in case:
            times, cpus = [r.seconds for r in c.runs], [r.cpu_seconds for r in c.runs]
            same = {None: "", True: "yes", False: "NO"}[c.same_bytes]
            fail = "" if not any(r.returncode for r in c.runs) else f" (exit {max(r.returncode for r in c.runs)})"
            print(f"| {case_name} | {c.name}{fail} | {c.median():.2f} | {min(times):.2f}-{max(times):.2f} | "
                  f"{c.median_cpu():.2f} | {min(cpus):.2f}-{max(cpus):.2f} | {c.peak_rss():.0f} | {same} |")
    print("\n| check (issue 21) | measured | target | met |")
    print("|---|---:|---:|---|")
    for name, value, target, met in checks(cases, args):
        print(f"| {name} | {value} | {target} | {met} |")


def checks(cases, args):
    """(name, measured, target, met) rows for the cases that ran."""
    if args.baseline_repo:
        for name, case in cases.items():
            for cmd in case:
                base = next((c for c in case if c.name == cmd.name + " [baseline]"), None)
                if base is not None:
                    yield _ratio_row(f"{name}: {cmd.name} / [baseline]", cmd, base, None)
        return
    for name, case in cases.items():
        tag = name.rsplit("-", 1)[-1]
        if name.startswith(("restore-", "wal-", "segments-", "remote-")):
            theirs, ours = case[0], case[1]
            yield _ratio_row(f"{name}: restorable / {theirs.name}", ours, theirs, TARGET_RATIO[tag])
            if tag == "v3":
                cpu = ours.median_cpu() / theirs.median_cpu()
                yield (f"{name}: CPU restorable / litestream", f"{cpu:.2f}x", f"<= {TARGET_V3_CPU_RATIO}x",
                       _met(cpu <= TARGET_V3_CPU_RATIO))
        elif name.startswith("verify-"):
            verify, checked = _exact(case, "restorable jobs.verify --drill none"), _exact(case, "restorable jobs.restore --check")
            restore, integrity = _exact(case, "restorable jobs.restore"), _exact(case, "PRAGMA integrity_check alone")
            ratio = verify.median() / checked.median()
            yield (f"{name}: verify / jobs.restore --check = {verify.median():.2f} / {checked.median():.2f} s",
                   f"{ratio:.2f}x", f"<= {TARGET_VERIFY_RATIO:.2f}x", _met(ratio <= TARGET_VERIFY_RATIO))
            apart = verify.median() / (restore.median() + integrity.median())
            yield (f"{name}, for reference: verify / (restore + integrity_check of a cached copy) = "
                   f"{verify.median():.2f} / ({restore.median():.2f} + {integrity.median():.2f}) s", f"{apart:.2f}x",
                   "", "")
        elif name == "startup":
            for cmd, target in ((case[0], TARGET_HELP_SECONDS), (case[1], TARGET_TINY_RESTORE_SECONDS)):
                yield (f"startup: {cmd.name} (median wall; CPU {cmd.median_cpu():.2f} s)", f"{cmd.median():.2f} s",
                       f"< {target} s", _met(cmd.median() < target))
        elif name == "many":
            many, one = case
            per_db = (many.median() - one.median()) / max(1, args.many - 1)
            yield "many: per-database overhead, (verify N - verify 1) / (N - 1)", f"{per_db * 1000:.0f} ms", "", ""
        for cmd in case:
            if cmd.name.startswith("restorable") and "--help" not in cmd.name:
                rss = cmd.peak_rss()
                yield f"{name}: peak RSS, {cmd.name}", f"{rss:.0f} MB", f"< {TARGET_RSS_MB} MB", _met(rss < TARGET_RSS_MB)


def _exact(case, name: str):
    return next(c for c in case if c.name == name)


def _ratio_row(name, ours, theirs, target):
    """Wall-time ratio of medians; the CPU-time ratio alongside, as it moves less with machine load."""
    ratio = ours.median() / theirs.median()
    cpu = ours.median_cpu() / theirs.median_cpu()
    return (f"{name} = {ours.median():.2f} / {theirs.median():.2f} s wall", f"{ratio:.2f}x (CPU {cpu:.2f}x)",
            f"<= {target}x" if target else "", _met(ratio <= target) if target else "")


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _cpu() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs{' ' + model if model else ''}"


def write_json(path: Path, cases, built: dict, args) -> None:
    """Every run of every command (wall, CPU, peak RSS, exit code), and the replicas' facts."""
    doc = {"args": {k: str(v) for k, v in vars(args).items()},
           "replicas": {k: {"bucket": b.bucket, "db_bytes": b.db_bytes, "objects": b.objects,
                            "wal_objects": b.wal_objects, "transactions": b.transactions} for k, b in built.items()},
           "cases": {name: [{"command": c.name, "seconds": [r.seconds for r in c.runs],
                             "cpu_seconds": [r.cpu_seconds for r in c.runs], "max_rss_mb": [r.max_rss_mb for r in c.runs],
                             "returncodes": [r.returncode for r in c.runs], "same_bytes": c.same_bytes} for c in case]
                     for name, case in cases.items()}}
    path.write_text(json.dumps(doc, indent=2))
