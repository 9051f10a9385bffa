"""GFS pruning of the vault, as restic's forget --keep-daily/--keep-weekly/--keep-monthly: tables and a simulated year."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lib.errors import ConfigError
from lib.vault.plan import Dated, KeepPolicy, parse_policy, plan

NOON = timedelta(hours=12)


def _day(text: str) -> Dated:
    moment = datetime.fromisoformat(text).replace(tzinfo=timezone.utc) + NOON
    return Dated(text, moment)


def _kept(entries, policy) -> list[str]:
    return [e.key for e, _ in plan([_day(t) for t in entries], policy).keep]


@pytest.mark.parametrize("text, policy", [
    ("daily=7 weekly=4 monthly=12", KeepPolicy(7, 4, 12)),
    ("daily=7,monthly=3", KeepPolicy(daily=7, monthly=3)),
    ("  weekly=2  ", KeepPolicy(weekly=2)),
])
def test_parse_policy(text, policy):
    assert parse_policy(text) == policy


@pytest.mark.parametrize("text", ["", "daily=7 daily=3", "daily=seven", "yearly=1", "daily=0", "daily"])
def test_parse_policy_refuses_what_it_cannot_read(text):
    with pytest.raises(ConfigError, match="RESTORABLE_VAULT_KEEP"):
        parse_policy(text)


# (entries, policy, kept newest first) -- worked out by hand with restic's rules.
CASES = [
    # Daily keeps one per day, newest first; the oldest is kept while count is left.
    (["2026-01-01", "2026-01-02", "2026-01-03"], KeepPolicy(daily=2), ["2026-01-03", "2026-01-02"]),
    (["2026-01-01", "2026-01-02"], KeepPolicy(daily=5), ["2026-01-02", "2026-01-01"]),
    # Weekly: ISO weeks (Mon 2026-01-05 starts week 2); the newest entry of each week is kept.
    (["2026-01-04", "2026-01-05", "2026-01-07", "2026-01-12"], KeepPolicy(weekly=2), ["2026-01-12", "2026-01-07"]),
    # ISO week 1 of 2026 starts on Mon 2025-12-29: 12-31 and 01-02 share a week.
    (["2025-12-28", "2025-12-31", "2026-01-02"], KeepPolicy(weekly=2), ["2026-01-02", "2025-12-28"]),
    # Monthly: the last copy of each month.
    (["2026-01-10", "2026-01-31", "2026-02-01", "2026-03-15"], KeepPolicy(monthly=2), ["2026-03-15", "2026-02-01"]),
    # Rules combine: one entry can be kept for several reasons and counts once per rule.
    (["2026-01-30", "2026-01-31", "2026-02-01"], KeepPolicy(daily=1, monthly=2), ["2026-02-01", "2026-01-31"]),
    # Count left at the end: the oldest stays (restic keeps it "to maximise the history length").
    (["2026-01-01", "2026-01-01", "2026-01-01"], KeepPolicy(monthly=3), ["2026-01-01", "2026-01-01"]),
]


@pytest.mark.parametrize("entries, policy, kept", CASES)
def test_plan_table(entries, policy, kept):
    assert _kept(entries, policy) == kept


def test_every_entry_is_kept_or_removed_and_reasons_name_the_rule():
    entries = [_day(f"2026-01-{d:02d}") for d in range(1, 21)]
    result = plan(entries, KeepPolicy(daily=3, weekly=2, monthly=1))
    kept = [e for e, _ in result.keep]
    assert sorted(e.key for e in kept + result.remove) == sorted(e.key for e in entries)
    reasons = {e.key: r for e, r in result.keep}
    assert reasons["2026-01-20"] == ("daily copy", "weekly copy", "monthly copy")
    assert reasons["2026-01-18"] == ("daily copy", "weekly copy")  # Sunday ends ISO week 3
    assert len(result.keep) == 3 and "2026-01-01" not in reasons  # every count used up


def test_oldest_entry_kept_while_a_rule_has_count_left():
    result = plan([_day("2026-01-05"), _day("2026-01-06")], KeepPolicy(weekly=3))
    assert [(e.key, r) for e, r in result.keep] == [("2026-01-06", ("weekly copy",)),
                                                   ("2026-01-05", ("oldest copy, weekly count left",))]


def test_a_year_of_daily_runs_keeps_7_daily_4_weekly_12_monthly():
    policy = KeepPolicy(daily=7, weekly=4, monthly=12)
    start = datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)
    vault: list[Dated] = []
    for day in range(365):  # a clock injected: one run a day, each prunes after its upload
        now = start + timedelta(days=day)
        vault.append(Dated(f"{now:%Y-%m-%d}", now))
        result = plan(vault, policy)
        vault = [e for e, _ in result.keep]
        assert len(vault) <= 7 + 4 + 12
    days = sorted(e.at.date() for e in vault)
    last = days[-1]
    assert days[-7:] == [last - timedelta(days=n) for n in range(6, -1, -1)]  # the last 7 days
    months = {(d.year, d.month) for d in days}
    assert len(months) == 12  # one copy in each of the 12 months
    weeks = {d.isocalendar()[:2] for d in days}
    assert len(weeks) >= 4 + 1  # the daily week(s) plus 4 weekly
    assert days[0].month == 1  # January's copy survived the whole year
