"""Which vault entries to keep: grandfather-father-son pruning as restic's ``forget`` defines it.

``plan(entries, policy)`` is pure. Entries are taken newest first; for each rule (daily,
weekly, monthly) an entry is kept when its period (the UTC day, ISO week, month) differs
from the last period that rule kept, while the rule has count left. Like restic, the
oldest entry is kept too while a rule still has count left, so a young vault keeps its
whole history. Every kept entry carries the rules that kept it (its reasons).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Sequence

from lib.errors import ConfigError

_RULES: tuple[tuple[str, Callable[[datetime], tuple]], ...] = (
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: t.isocalendar()[:2]),  # (ISO year, ISO week), restic's yw bucket
    ("monthly", lambda t: (t.year, t.month)),
)

_TERM = re.compile(r"(daily|weekly|monthly)=(\d+)")


@dataclass(frozen=True)
class KeepPolicy:
    """How many daily, weekly and monthly copies to keep (``RESTORABLE_VAULT_KEEP``)."""

    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @property
    def is_empty(self) -> bool:
        return not (self.daily or self.weekly or self.monthly)

    def __str__(self) -> str:
        return " ".join(f"{name}={getattr(self, name)}" for name, _ in _RULES if getattr(self, name))


def parse_policy(text: str, where: str = "RESTORABLE_VAULT_KEEP") -> KeepPolicy:
    """``"daily=7 weekly=4 monthly=12"`` (spaces or commas; each term at most once).

    :raises ConfigError: names ``where`` and shows the expected form.
    """
    terms = [t for t in re.split(r"[\s,]+", text.strip()) if t]
    counts: dict[str, int] = {}
    for term in terms:
        match = _TERM.fullmatch(term)
        if match is None or match[1] in counts:
            raise ConfigError(f"{where}: cannot read {term!r}; use e.g. \"daily=7 weekly=4 monthly=12\" "
                              "(each of daily, weekly, monthly at most once)")
        counts[match[1]] = int(match[2])
    policy = KeepPolicy(**counts)
    if policy.is_empty:
        raise ConfigError(f"{where}: keeps nothing; use e.g. \"daily=7 weekly=4 monthly=12\"")
    return policy


@dataclass(frozen=True)
class Dated:
    """Anything the planner can sort: a vault entry's key and its time (UTC)."""

    key: str
    at: datetime


@dataclass
class VaultPlan:
    keep: list[tuple[Dated, tuple[str, ...]]] = field(default_factory=list)  # (entry, reasons), newest first
    remove: list[Dated] = field(default_factory=list)


def plan(entries: Sequence[Dated], policy: KeepPolicy) -> VaultPlan:
    """Keep and remove lists for ``entries`` under ``policy`` (see the module docstring)."""
    ordered = sorted(entries, key=lambda e: e.at, reverse=True)
    if policy.is_empty:
        return VaultPlan(keep=[(e, ("policy is empty",)) for e in ordered])
    left = {name: getattr(policy, name) for name, _ in _RULES}
    last: dict[str, tuple | None] = {name: None for name, _ in _RULES}
    result = VaultPlan()
    for number, entry in enumerate(ordered):
        reasons = []
        for name, period_of in _RULES:
            if left[name] <= 0:
                continue
            period = period_of(entry.at)
            is_new_period = period != last[name]
            if is_new_period or number == len(ordered) - 1:
                last[name] = period
                left[name] -= 1
                reasons.append(f"{name} copy" if is_new_period else f"oldest copy, {name} count left")
        if reasons:
            result.keep.append((entry, tuple(reasons)))
        else:
            result.remove.append(entry)
    return result
