"""The two restores of one frozen plan, and the pure decision of what their difference means."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.checks import integrity
from lib.litestream.outcome import file_sha256
from lib.report.model import Finding, error, warning

KIND = "cross_check"

AGREE = "agree"
LITESTREAM_DAMAGED = "litestream_damaged"  # litestream's restore fails integrity_check, or fails
LITESTREAM_LOSES_ROWS = "litestream_loses_rows"  # sound, but fewer rows than ours
RESTORABLE_DIFFERS = "restorable_differs"  # ours differs and litestream's is the sound one: our bug
BOTH_DAMAGED = "both_damaged"
DIFFER = "differ"  # both sound, different, explained by the damage restorable reported


@dataclass
class Side:
    """One restore of the frozen objects and what the checks found on it."""

    name: str  # "restorable" | "litestream"
    sha256: str | None = None
    integrity: list[str] = field(default_factory=list)  # integrity_check problems; [] when sound
    tables: dict[str, int] = field(default_factory=dict)
    failed: str | None = None  # the restore produced no file: why
    damage: list[str] = field(default_factory=list)  # restorable only: its error findings on the frozen copy

    @property
    def sound(self) -> bool:
        return self.failed is None and self.sha256 is not None and not self.integrity

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256, "integrity": self.integrity or ["ok"], "tables": self.tables}
        if self.failed:
            out = {"failed": self.failed}
        if self.damage:
            out["damage"] = self.damage
        return out


def inspect(side: Side, path: Path) -> Side:
    """Fill ``side`` from the restored file: sha256, integrity_check, row counts."""
    # Deferred: lib.checks.counts imports sqlite_utils (and numpy, ~0.2 s of CPU); every job
    # imports this module through lib.verify, and only a cross-check counts rows here.
    from lib.checks import counts

    side.sha256 = file_sha256(path)
    with integrity.open_readonly(path) as db:
        side.integrity = [f.message for f in integrity.integrity(db)]
        if not side.integrity:
            side.tables = dict(counts.count_rows(db).tables)
    return side


def judge(ours: Side, theirs: Side, restore_command: str, version: str) -> tuple[str, list[Finding]]:
    """What the two restores of the same objects say, as (verdict, findings). Pure.

    Warnings when ``litestream restore`` would hand back a damaged database or silently
    lose rows where restorable's restore is sound; an error when restorable's restore is
    unsound or different for no damage it reported while litestream's is sound (that is
    a bug of ours).
    """
    if ours.sha256 is not None and ours.sha256 == theirs.sha256:
        return AGREE, []
    if ours.sound and not theirs.sound:
        what = (f"fails ({theirs.failed})" if theirs.failed else
                f"gives a damaged database (integrity_check: {theirs.integrity[0]})")
        return LITESTREAM_DAMAGED, [warning(KIND, f"`litestream restore` (v{version}) of these same objects {what}, "
                                             f"while restorable's restore is sound: in a disaster, restore with "
                                             f"`{restore_command}` instead")]
    if ours.sound and theirs.sound and ours.damage:
        # Explained by the damage restorable reported (it stops at the last sound commit).
        lost = _lost_rows(ours.tables, theirs.tables)
        if lost:
            return LITESTREAM_LOSES_ROWS, [warning(KIND, f"`litestream restore` (v{version}) of these same objects "
                                                 f"silently loses rows ({lost}) and exits 0: in a disaster, restore "
                                                 f"with `{restore_command}` instead")]
        return DIFFER, []
    if not theirs.sound:
        return BOTH_DAMAGED, []
    if ours.damage and not ours.sound:
        return DIFFER, []
    how = (f"fails ({ours.failed})" if ours.failed else
           f"fails integrity_check ({ours.integrity[0]})" if ours.integrity else
           f"differs (sha256 {_short(ours.sha256)} vs {_short(theirs.sha256)}, rows {ours.tables} vs {theirs.tables})")
    return RESTORABLE_DIFFERS, [error(KIND, f"restorable's restore of these objects {how} while `litestream restore` "
                                      f"(v{version}) of the same objects is sound: a restorable bug; please report it "
                                      "with the evidence (--keep-evidence)")]


def _lost_rows(ours: dict[str, int], theirs: dict[str, int]) -> str:
    lost = [f"{t}: {theirs.get(t, 0)} of {n}" for t, n in sorted(ours.items()) if theirs.get(t, 0) < n]
    return ", ".join(lost)


def _short(sha: str | None) -> str:
    return (sha or "none")[:12]
