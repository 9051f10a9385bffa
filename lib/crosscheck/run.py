"""One cross-check: freeze the plan's objects, restore them with restorable and with
``litestream restore``, compare, and keep the evidence of a restorable bug when asked."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from lib.crosscheck.binary import Binary, BinaryUnavailable, choose
from lib.crosscheck.compare import KIND, RESTORABLE_DIFFERS, Side, inspect, judge
from lib.crosscheck.freeze import freeze, plan_objects
from lib.errors import ObjectNotFound
from lib.litestream.discover import ReplicaState, list_replica
from lib.litestream.layout import FORMAT_V3
from lib.litestream.outcome import RestoreTarget
from lib.litestream.v5.restore import restore_v5
from lib.report.model import Finding, warning
from lib.storage.base import ObjectStore
from lib.storage.local import LocalStore

SKIPPED = "skipped"

# litestream restore of a replica restorable could restore within the run's limits; a hang
# beyond this is reported as litestream's failure, not waited for.
LITESTREAM_TIMEOUT_SECONDS = 600.0

# litestream 0.5.17 cannot build even a file replica's client with AWS_CA_BUNDLE set, and a
# replica URL must not be combined with a config file.
_STRIPPED_ENV = ("AWS_CA_BUNDLE", "LITESTREAM_CONFIG")

EVIDENCE_PREFIX = "restorable-evidence-"


@dataclass
class CrossCheck:
    """The ``cross_check`` section of a result."""

    status: str  # a verdict of lib.crosscheck.compare, or "skipped"
    reason: str = ""  # why it was skipped
    binary: Binary | None = None
    objects: int = 0
    bytes: int = 0
    ours: Side | None = None
    theirs: Side | None = None
    evidence: str | None = None
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.binary:
            out["litestream"] = {"path": self.binary.path, "version": self.binary.version}
        if self.ours and self.theirs:
            out.update(objects=self.objects, bytes=self.bytes, restorable=self.ours.to_json(),
                       litestream_restore=self.theirs.to_json())
        if self.evidence:
            out["evidence"] = self.evidence
        out["seconds"] = round(self.seconds, 3)
        return out


def cross_check(store: ObjectStore, state: ReplicaState, target: RestoreTarget, workdir: Path, binaries: list[str],
                restore_command: str, evidence_root: Path | None = None,
                environ: Mapping[str, str] | None = None) -> CrossCheck:
    """Cross-check the plan of ``state`` for ``target``; never raises for backup or binary problems.

    ``ObjectNotFound`` while freezing (Litestream deleted or replaced an object since the
    listing) skips the cross-check without a finding: the next run does it.
    """
    started = time.monotonic()
    result = _cross_check(store, state, target, workdir, binaries, restore_command, evidence_root,
                          os.environ if environ is None else environ)
    result.seconds = time.monotonic() - started
    return result


def _cross_check(store, state, target, workdir, binaries, restore_command, evidence_root, environ) -> CrossCheck:
    try:
        binary = choose(state.format, binaries)
    except BinaryUnavailable as exc:
        return CrossCheck(SKIPPED, reason=str(exc), findings=[warning(KIND, f"cross-check not run: {exc}")])
    objects = plan_objects(state, target)
    if not objects:
        return CrossCheck(SKIPPED, reason="nothing to restore", binary=binary)
    frozen = workdir / "frozen"
    try:
        size = freeze(store, objects, frozen)
    except ObjectNotFound as exc:
        return CrossCheck(SKIPPED, reason=f"the replica changed before its objects were frozen ({exc})",
                          binary=binary)
    ours = restore_ours(frozen, state.format, workdir / "restorable.db")
    theirs = restore_theirs(binary, frozen, workdir / "litestream.db", environ)
    status, findings = judge(ours, theirs, restore_command, binary.version)
    result = CrossCheck(status, binary=binary, objects=len(objects), bytes=size, ours=ours, theirs=theirs,
                        findings=findings)
    if status == RESTORABLE_DIFFERS and evidence_root is not None:
        result.evidence = str(keep_evidence(workdir, result, evidence_root))
        result.findings = [_with_evidence(f, result.evidence) for f in findings]
    return result


def restore_ours(frozen: Path, fmt: str, out: Path) -> Side:
    """restorable's restore of the frozen file replica (the newest point it holds)."""
    side = Side("restorable")
    store = LocalStore(frozen)
    if fmt == FORMAT_V3:
        # Deferred: the v0.3 restore imports numpy, which a v0.5 cross-check does not need.
        from lib.litestream.v3.layout import parse_v3_listing
        from lib.litestream.v3.restore import restore_v3

        outcome = restore_v3(store, parse_v3_listing(store.list("generations/"), "generations/"), out, digest=False)
    else:
        outcome = restore_v5(store, list_replica(store, "file", str(frozen)).v5, out, RestoreTarget(), digest=False)
    side.damage = [f.message for f in outcome.findings if f.severity == "error"]
    if outcome.path is None:
        side.failed = side.damage[0] if side.damage else "no restore point"
        return side
    return inspect(side, outcome.path)


def restore_theirs(binary: Binary, frozen: Path, out: Path, environ: Mapping[str, str]) -> Side:
    """``litestream restore -o OUT file:///frozen`` and the checks on what it wrote."""
    side = Side("litestream")
    out.unlink(missing_ok=True)
    env = {k: v for k, v in environ.items() if k not in _STRIPPED_ENV}
    cmd = [binary.path, "restore", "-o", str(out), frozen.resolve().as_uri()]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                              timeout=LITESTREAM_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        side.failed = f"no result after {LITESTREAM_TIMEOUT_SECONDS:.0f} s"
        return side
    except OSError as exc:
        side.failed = f"could not run {binary.path}: {exc.strerror}"
        return side
    if proc.returncode != 0:
        side.failed = f"exit {proc.returncode}: {_last_line(proc.stderr or proc.stdout)}"
        return side
    if not out.exists():
        side.failed = "exit 0 but no database written"
        return side
    return inspect(side, out)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def keep_evidence(workdir: Path, result: CrossCheck, root: Path) -> Path:
    """Copy the frozen objects, both restored files and the section into a new 0700 directory
    under ``root`` (named so that the scratch sweeper leaves it alone); return its path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = Path(root) / f"{EVIDENCE_PREFIX}{stamp}-{os.getpid()}-{workdir.name}"
    dest.mkdir(mode=0o700, parents=True)
    shutil.copytree(workdir / "frozen", dest / "frozen")
    for name in ("restorable.db", "litestream.db"):
        if (workdir / name).exists():
            shutil.copy2(workdir / name, dest / name)
    section = result.to_json() | {"evidence": str(dest), "findings": [f.to_json() for f in result.findings],
                                  "reproduce": f"{result.binary.path} restore -o OUT {(dest / 'frozen').as_uri()}"}
    (dest / "cross_check.json").write_text(json.dumps(section, indent=2))
    return dest


def _with_evidence(finding: Finding, where: str) -> Finding:
    return Finding(finding.severity, finding.kind, f"{finding.message}; evidence kept in {where}", finding.object,
                   finding.inconclusive)


@dataclass(frozen=True)
class CrossCheckOptions:
    """What ``jobs.verify`` asked for; the per-database setting ``cross-check`` also enables it."""

    enabled: bool = False  # --cross-check
    binaries: tuple[str, ...] = ()  # candidates, see lib.crosscheck.binary.candidates
    evidence_root: Path | None = None  # --keep-evidence: where evidence of a restorable bug is kept


def apply(result, store: ObjectStore, state: ReplicaState, target: RestoreTarget, workdir: Path,
          options: CrossCheckOptions, db_settings, db_path: str, replica_name: str) -> None:
    """Cross-check one verified replica when asked; adds ``result.extra["cross_check"]`` and its findings."""
    if not (options.enabled or getattr(db_settings, "cross_check", False)) or state.format is None:
        return
    command = (f"python -m jobs.restore --db {db_path} --replica {replica_name} -o OUT"
               " (with this run's configuration)")
    checked = cross_check(store, state, target, workdir / "cross-check", list(options.binaries), command,
                          options.evidence_root)
    result.extra["cross_check"] = checked.to_json()
    result.findings.extend(checked.findings)
    result.timings["cross_check"] = checked.seconds
