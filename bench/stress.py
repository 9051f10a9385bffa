"""Stress: many verifications of healthy live replicas; a single "failed" is a false alarm.

Each scenario (v0.3 and v0.5, file and S3 replicas, written by the real litestream 0.3.13
and 0.5.17) runs in its own process: litestream replicates a database that a writer
changes constantly, with 2 s snapshots, 5 s retention and 1 s checkpoints, while
``lib.verify.verify_replica`` verifies it back to back. All scenarios run at once, next to
``--load`` busy processes, so the machine is as loaded as in a full CI run. Every listing
and object a verification reads is recorded as it is read; a failed verification keeps
them (see ``bench/stress_evidence.py``), both restores of the frozen objects, the findings
and litestream's log under ``--out``.

    .venv/bin/python bench/stress.py --seconds 150 --load 2 --out /tmp/stress

Exit 0 when no verification failed, 1 otherwise. ``--json`` prints the summary as JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.stress_evidence import RecordingReplica, keep_failure, write_frozen  # noqa: E402
from bench.stress_live import SCENARIOS, Scenario, live_replica, machine_load, scenario  # noqa: E402
from lib.config.settings_model import Settings  # noqa: E402
from lib.config.sources import load  # noqa: E402
from lib.crosscheck.binary import Binary  # noqa: E402
from lib.crosscheck.run import restore_ours  # noqa: E402
from lib.scratch import Scratch  # noqa: E402
from lib.verify import VerifyOptions, verify_replica  # noqa: E402
from tests.support.litestream import V3, litestream_bin  # noqa: E402

RECHECK_SECONDS = 3.0  # after a failure, verify again this much later: transient or lasting?


def verify_once(live, scratch_root: Path):
    """One whole verification of the live replica, recording what it reads."""
    config = load(str(live.config_path), {})
    db = config.dbs[0]
    replica = RecordingReplica(db.replicas[0])
    options = VerifyOptions(max_age_seconds=3600.0, scratch_root=scratch_root)
    scratch = Scratch(scratch_root)
    try:
        result = verify_replica(db, replica, Settings(source=None).for_db(db.path), options, scratch)
    finally:
        scratch.cleanup()
    return replica, result


def run_scenario(sc: Scenario, name: str, out: Path, seconds: float, max_verifications: int,
                 chase: bool = False) -> dict:
    """Verify one live scenario until ``seconds`` pass or ``max_verifications`` are done; with
    ``chase``, each verification starts as soon as Litestream has written a new snapshot."""
    workdir = out / name
    scratch_root = workdir / "scratch"
    scratch_root.mkdir(parents=True, exist_ok=True)
    binary = Binary(str(litestream_bin(sc.version)), sc.version)
    runs: list[dict] = []
    failures: list[dict] = []
    with live_replica(sc, workdir / "live") as live:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(runs) < max_verifications:
            if chase:
                wait_for_new_snapshot(live, deadline)
            started = time.monotonic()
            with RetryLog() as retries:
                replica, result = verify_once(live, scratch_root)
            runs.append({"status": result.status, "position": result.position, "attempts": len(replica.recordings),
                         "seconds": round(time.monotonic() - started, 3),
                         "kinds": sorted({f.kind for f in result.findings}), "retries": retries.messages})
            if len(replica.recordings) > 1:
                runs[-1]["first_attempt"] = first_attempt(replica, result.format, workdir / "first-attempt")
            if result.status == "failed":
                failures.append(_keep(live, replica, result, binary, workdir / f"failure-{len(failures) + 1}",
                                      scratch_root))
            live.check()
        log = live.replicator.log(limit=1 << 26)
        commits = live.writer.commits
    return {"scenario": name, "verifications": len(runs), "counts": _counts(runs), "failures": failures,
            "commits": commits, "litestream": _activity(sc, log), "runs": runs,
            "median_seconds": _median([r["seconds"] for r in runs])}


class RetryLog(logging.Handler):
    """Collects lib.verify's and the restorers' log lines that say why a verification started again."""

    WORDS = ("re-listing", "verifying again", "changed", "Litestream was uploading", "settle")

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(word in message for word in self.WORDS):
            self.messages.append(message[:300])

    def __enter__(self) -> "RetryLog":
        logging.getLogger("lib").addHandler(self)
        logging.getLogger("lib").setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("lib").removeHandler(self)


def first_attempt(replica, fmt: str | None, dest: Path) -> dict:
    """What the first attempt's objects restore to (it was discarded for a fresh listing): the race it met."""
    shutil.rmtree(dest, ignore_errors=True)
    write_frozen(replica.recordings[0], replica, dest / "frozen")
    try:
        side = restore_ours(dest / "frozen", fmt or "v0.3", dest / "restored.db").to_json()
    except Exception as exc:  # a first attempt may have read too little to restore anything
        side = {"failed": f"{type(exc).__name__}: {exc}"}
    shutil.rmtree(dest, ignore_errors=True)
    return side


def wait_for_new_snapshot(live, deadline: float) -> None:
    """Until a snapshot (v0.3) or L9 file (v0.5) appears that was not there before (or the deadline)."""
    before = snapshot_keys(live)
    while time.monotonic() < deadline and snapshot_keys(live) <= before:
        time.sleep(0.005)


def snapshot_keys(live) -> set[str]:
    if live.replica_dir is not None:
        pattern = "generations/*/snapshots/*.snapshot.lz4" if live.scenario.version == V3 else "ltx/9/*.ltx"
        return {p.name for p in live.replica_dir.glob(pattern)}
    marker = "/snapshots/" if live.scenario.version == V3 else "/0009/"
    return {k for k in live.s3.list_keys(live.bucket, "db/") if marker in k}


def _keep(live, replica, result, binary, dest: Path, scratch_root: Path) -> dict:
    fmt = result.format or ("v0.3" if live.scenario.version == V3 else "v0.5")
    summary = keep_failure(dest, replica, result, fmt, binary, live.replicator.log(limit=1 << 22))
    time.sleep(RECHECK_SECONDS)
    _, later = verify_once(live, scratch_root)
    summary.update(evidence=str(dest), recheck_status=later.status, recheck_position=later.position)
    (dest / "result.json").write_text(json.dumps(summary, indent=1))
    return summary


def _counts(runs: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    return counts


def _activity(sc: Scenario, log: str) -> dict[str, int]:
    """What litestream did meanwhile, counted from its log."""
    if sc.version == V3:
        return {"snapshots": log.count('msg="snapshot written"'),
                "wal_deletions": log.count('msg="wal segmented deleted before"'),
                "snapshot_deletions": log.count('msg="snapshot deleted"'),
                "generations": log.count("new generation")}
    return {"snapshots": log.count("snapshot"), "compactions": log.count("compact"),
            "deletions": log.count("delet")}


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else 0.0


# --------------------------------------------------------------------------- parent


def run_all(names: list[str], out: Path, seconds: float, max_verifications: int, load: int,
            chase: bool = False) -> dict:
    """Every scenario in its own process, all at once, next to ``load`` busy processes."""
    out.mkdir(parents=True, exist_ok=True)
    with machine_load(load):
        children = [subprocess.Popen([sys.executable, __file__, "--child", name, "--out", str(out), "--seconds",
                                      str(seconds), "--max-verifications", str(max_verifications)]
                                     + (["--chase-snapshots"] if chase else []),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(out / f"{_dirname(name)}.stderr", "wb")) for name in names]
        codes = [child.wait(timeout=seconds + 300) for child in children]
    results = []
    for name, code in zip(names, codes):
        path = out / _dirname(name) / "summary.json"
        if code != 0 or not path.exists():
            tail = (out / f"{_dirname(name)}.stderr").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"scenario {name} exited {code}:\n{tail}")
        results.append(json.loads(path.read_text()))
    total: dict[str, int] = {}
    for res in results:
        for status, n in res["counts"].items():
            total[status] = total.get(status, 0) + n
    return {"scenarios": results, "totals": total, "verifications": sum(r["verifications"] for r in results),
            "load_processes": load, "seconds": seconds, "chase_snapshots": chase}


def _numbered(names: list[str]) -> list[str]:
    """A scenario named twice runs twice: ``v3-file``, ``v3-file#2``."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _dirname(child: str) -> str:
    return child.replace("#", "-")


def print_table(summary: dict) -> None:
    print("| scenario | verifications | ok | warning | inconclusive | failed | commits | litestream | "
          "median s |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for res in summary["scenarios"]:
        c = res["counts"]
        activity = ", ".join(f"{k} {v}" for k, v in res["litestream"].items())
        print(f"| {res['scenario']} | {res['verifications']} | {c.get('ok', 0)} | {c.get('warning', 0)} | "
              f"{c.get('inconclusive', 0)} | {c.get('failed', 0)} | {res['commits']} | {activity} | "
              f"{res['median_seconds']:.2f} |")
    t = summary["totals"]
    print(f"| all | {summary['verifications']} | {t.get('ok', 0)} | {t.get('warning', 0)} | "
          f"{t.get('inconclusive', 0)} | {t.get('failed', 0)} | | | |")
    for res in summary["scenarios"]:
        for failure in res["failures"]:
            print(f"FAILED {res['scenario']}: {failure['evidence']}: {json.dumps(failure['findings'])[:500]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--seconds", type=float, default=120.0, help="verification time per scenario")
    parser.add_argument("--max-verifications", type=int, default=10**9, help="per scenario")
    parser.add_argument("--load", type=int, default=2, help="busy processes next to the scenarios")
    parser.add_argument("--out", type=Path, required=True, help="work and evidence directory")
    parser.add_argument("--chase-snapshots", action="store_true",
                        help="start each verification right after Litestream writes a snapshot (the racy moment)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        res = run_scenario(scenario(args.child.rsplit("#", 1)[0]), _dirname(args.child), args.out, args.seconds,
                           args.max_verifications, args.chase_snapshots)
        (args.out / _dirname(args.child) / "summary.json").write_text(json.dumps(res, indent=1))
        return 0
    names = _numbered([scenario(n.strip()).name for n in args.scenarios.split(",") if n.strip()])
    summary = run_all(names, args.out, args.seconds, args.max_verifications, args.load, args.chase_snapshots)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_table(summary)
    return 1 if summary["totals"].get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
