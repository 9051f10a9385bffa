"""The run's time budget in a fleet run: what was never started is "not verified this run".

In a fleet run the targets go oldest-verified first (``lib.fleet.select``). When
``--max-runtime`` is reached, a target that never started is not a storage problem:
it gets a warning (``not_verified``), no history entry (so it stays the oldest and goes
first next run), and no alert. A target that had started and did not finish is still
inconclusive, as in any run: its storage may be hanging.
"""
from __future__ import annotations

from typing import Sequence

from lib.report.model import DbResult, Finding, could_not_check, warning

NOT_VERIFIED = "not_verified"


def not_verified(replica) -> Finding:
    return warning(NOT_VERIFIED, f"{replica.describe()} was not verified this run: the run reached its maximum "
                   "runtime (--max-runtime / RESTORABLE_MAX_RUNTIME) before starting it; it goes first next run")


def was_verified(result: DbResult) -> bool:
    """False for a target the budget left out (its history must not move)."""
    return not any(f.kind == NOT_VERIFIED for f in result.findings)


def nothing_verified(results: Sequence[DbResult]) -> None:
    """A run that verified no target at all cannot pass: its "not verified" warnings become
    inconclusive (in place), so a budget too small for even one target is noticed."""
    if not results or any(was_verified(r) for r in results):
        return
    for result in results:
        result.findings = [could_not_check(NOT_VERIFIED, f.message + "; no target was verified in this run")
                           if f.kind == NOT_VERIFIED else f for f in result.findings]
