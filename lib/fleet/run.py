"""The fleet options of ``jobs.verify``: ``--shard``, ``--sample``, ``--archive-after``, and what they change.

A run is a fleet run when it has ``dir:`` tenants, a shard or a sample. Then targets
are verified oldest-verified first (``lib.fleet.select``), targets the time budget never
started are "not verified this run" (``lib.fleet.budget``) and leave no history, and
long-idle tenants may be archived (``lib.fleet.archived``). A plain run is unchanged.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Mapping, Sequence

from lib.config.model import Config, DbConfig, ReplicaConfig
from lib.config.settings_model import Settings
from lib.fleet import archived, budget, select
from lib.report.model import DbResult


@dataclass(frozen=True)
class FleetOptions:
    shard: select.Shard | None = None
    sample: select.Sample | None = None
    archive_after: float | None = None


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard", metavar="I/N", help="verify only shard I of N (I from 0), a stable partition of "
                        "the targets (default $RESTORABLE_SHARD)")
    parser.add_argument("--sample", metavar="P%|K", help="verify only P%% or K targets this run, oldest-verified "
                        "first (default $RESTORABLE_SAMPLE)")
    parser.add_argument("--archive-after", metavar="DURATION", help="a dir: tenant with no new backup for this long "
                        "is reported archived (a warning), not stale (default $RESTORABLE_ARCHIVE_AFTER; off)")


def options_from(args: argparse.Namespace, environ: Mapping[str, str]) -> FleetOptions:
    """:raises ConfigError: a bad shard, sample or duration, naming the flag or variable."""
    return FleetOptions(
        shard=select.parse_shard(getattr(args, "shard", None), environ),
        sample=select.parse_sample(getattr(args, "sample", None), environ),
        archive_after=archived.archive_after_seconds(getattr(args, "archive_after", None), environ),
    )


def is_fleet(config: Config, fleet: FleetOptions) -> bool:
    return bool(fleet.shard or fleet.sample or any(getattr(db, "parent", None) for db in config.dbs))


def plan(config: Config, fleet: FleetOptions, notifier, deadline: float | None) -> Config:
    """The targets of this run: the shard, oldest-verified first (history via ``notifier``), the sample."""
    config = select.apply_shard(config, fleet.shard)
    if not is_fleet(config, fleet) or notifier is None:
        return config
    planned, _ = select.oldest_first(config, lambda db, r: select.history_time(notifier.previous(db, r)),
                                     fleet.sample, deadline)
    return planned


def finish(pairs: Sequence[tuple[DbConfig, ReplicaConfig]], results: Sequence[DbResult],
           fleet: FleetOptions, settings: Settings | None = None) -> list[tuple[DbConfig, ReplicaConfig, DbResult]]:
    """Archive long-idle tenants (in place; a tenant's ``archive-after`` in ``settings`` over
    the run's) and return the targets to report on: those the budget never started leave no
    history, alert or event."""
    def archive_after(db: DbConfig) -> float | None:
        block = settings.for_db(db.path).archive_after_seconds if settings is not None else None
        return archived.threshold(block, fleet.archive_after)

    archived.apply([(db, res) for (db, _), res in zip(pairs, results)], archive_after)
    budget.nothing_verified(results)
    return [(db, rep, res) for (db, rep), res in zip(pairs, results) if budget.was_verified(res)]
