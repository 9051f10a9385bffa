"""Verify the newest Litestream backup of every database: ``python -m jobs.verify``.

Lists each replica, restores it natively into a private scratch directory, checks the
restored file (integrity, row counts, freshness, probes) and reports to the terminal,
Sentry and email. Exit codes are listed in ``--help``.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from lib import cli
from lib.config.parsing import positive_int
from lib.config.settings_model import DEFAULT_MAX_RUNTIME, max_runtime_seconds
from lib.config.settings_values import DRILL_MODES
from lib.fleet import run as fleet_run
from lib.fleet import sizing

# The run's own modules (verification, reporting, retention, recovery) are imported in
# build_options() and main()'s body, after the arguments are parsed: importing them costs
# ~0.08 s of CPU that `--help` and a usage error never need.


def parse_args(argv: list[str] | None):
    parser = cli.Parser(prog="python -m jobs.verify", description=__doc__.strip().splitlines()[0])
    cli.add_source_args(parser)
    cli.add_target_args(parser)
    parser.add_argument("--settings", help="restorable.yml with probes and limits (default: $RESTORABLE_SETTINGS, "
                        "./restorable.yml)")
    parser.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    parser.add_argument("--max-age", help="a backup older than this is stale, e.g. 90s, 2h, 7d")
    parser.add_argument("--allow-empty", action="store_true", default=None,
                        help="an empty replica is a warning, not a failure (first deploy)")
    parser.add_argument("--max-runtime", help=f"give up (inconclusive) after this long (default "
                        f"$RESTORABLE_MAX_RUNTIME or {DEFAULT_MAX_RUNTIME})")
    parser.add_argument("--parallel", type=int, default=None, help="replicas verified at once (default "
                        "$RESTORABLE_PARALLEL, else one per usable CPU, fewer if free memory holds fewer "
                        f"than {sizing.TARGET_MEMORY_BYTES >> 20} MiB each; here {sizing.machine_parallel()})")
    parser.add_argument("--retention", metavar="DURATION", help="retention window to plan with, e.g. 24h or 7d "
                        "(default: settings, else the replica's retention, else 24h)")
    parser.add_argument("--enforce", action="store_true", help="after a successful verification, delete what the "
                        "retention policy allows (default: report only; also enforce-retention in the settings)")
    parser.add_argument("--dry-run", action="store_true", help="print what retention would delete; delete nothing "
                        "(wins over --enforce)")
    parser.add_argument("--cross-check", action="store_true", help="also restore the same objects with `litestream "
                        "restore` ($RESTORABLE_LITESTREAM_BIN or litestream on PATH) and compare; also cross-check "
                        "in the settings")
    parser.add_argument("--keep-evidence", action="store_true", help="when the cross-check finds a restorable bug, "
                        "keep the objects and both restores in the scratch directory")
    parser.add_argument("--drill", choices=DRILL_MODES, help="also restore and check one older restore point: "
                        "the oldest, a random time in the window, an older generation, or in rotation (default: "
                        "drill: in the settings, else rotate); none turns drills off")
    fleet_run.add_args(parser)
    parser.add_argument("--enqueue", action="store_true", help="distributed mode: put one job per target on the "
                        "Redis queue ($REDIS_URL) for python -m jobs.worker instead of verifying here")
    parser.add_argument("--wait", action="store_true", help="with --enqueue: wait for the workers' results and "
                        "report them as a local run would (same output and exit code)")
    cli.add_print_config_arg(parser)
    return parser.parse_args(argv)


def build_options(args, environ: Mapping[str, str]):
    import tempfile

    from lib.crosscheck.binary import candidates
    from lib.crosscheck.run import CrossCheckOptions
    from lib.litestream.outcome import RestoreTarget
    from lib.recovery.step import recovery_options
    from lib.report.cost import price_per_gb_month
    from lib.scratch import check_scratch_dir
    from lib.units import parse_duration
    from lib.verify import VerifyOptions

    max_runtime = max_runtime_seconds(args.max_runtime, environ)
    scratch = environ.get("RESTORABLE_SCRATCH_DIR")
    return VerifyOptions(
        target=RestoreTarget(timestamp=args.timestamp, generation=args.generation, txid=args.txid),
        max_age_seconds=parse_duration(args.max_age, "--max-age") if args.max_age else None,
        allow_empty=args.allow_empty,
        replica_name=args.replica,
        parallel=args.parallel or positive_int(environ, "RESTORABLE_PARALLEL", sizing.machine_parallel()),
        deadline=time.monotonic() + max_runtime,
        scratch_root=check_scratch_dir(scratch) if scratch else None,
        price_per_gb_month=price_per_gb_month(environ),
        cross_check=CrossCheckOptions(args.cross_check, tuple(candidates(environ)), Path(
            scratch or tempfile.gettempdir()) if args.keep_evidence else None),
        recovery=recovery_options(args.drill, environ),
    )


REPORTING_GRACE_SECONDS = 5.0  # history/email/Sentry after the deadline


def reporting_budget(options) -> float:
    """Time left for history, email and Sentry: what remains of the run, plus a short grace."""
    return max(0.0, options.deadline - time.monotonic()) + REPORTING_GRACE_SECONDS


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    notifier = None

    def abort(reason: str) -> None:
        if notifier is not None:
            notifier.run_aborted(reason)

    def body() -> int:
        nonlocal notifier
        args = parse_args(argv)
        from lib.config.overrides import with_overrides
        from lib.litestream.outcome import RestoreTarget
        from lib.report.logs import setup_logging
        from lib.report.model import Report
        from lib.report.notify import RunNotifier
        from lib.report.ping import refuse_litestream_heartbeat
        from lib.report.text import print_report
        from lib.retention.glue import apply_retention_all
        from lib.verify import run, targets

        config, settings = cli.load_run_config(args, environ)
        if args.print_config:
            settings = with_overrides(settings, max_age=args.max_age, allow_empty=args.allow_empty)
            cli.print_config(config, settings, args.json, environ)
            return 0
        options = build_options(args, environ)
        fleet = fleet_run.options_from(args, environ)
        cli.check_replica_paths(config, args.replica)
        refuse_litestream_heartbeat(environ, [db.v5.heartbeat_url for db in config.dbs if db.v5 and db.v5.heartbeat_url])
        setup_logging(environ, secrets=config.secrets())
        notifier = RunNotifier.from_environ(environ, secrets=config.secrets(), job="verify")
        notifier.run_started()
        config = fleet_run.plan(config, fleet, notifier, options.deadline)
        options.fleet_order = fleet_run.is_fleet(config, fleet)
        started = datetime.now(timezone.utc)
        if args.enqueue:
            # Deferred: redis and rq are imported only in distributed mode.
            from lib.fleet import rq as fleet_rq

            results = fleet_rq.run(config, options, args, environ)
            if results is None:
                notifier.run_finished(Report(finished_at=datetime.now(timezone.utc)), [])
                return 0
            report = Report(results=results, started_at=started, finished_at=datetime.now(timezone.utc))
        else:
            report = run(config, settings, options, notifier)
        pairs = targets(config, options.replica_name)
        if options.target == RestoreTarget():
            apply_retention_all(pairs, report, settings, args, environ)
        finished = fleet_run.finish(pairs, report.results, fleet, settings)
        cli.bounded(lambda: notifier.run_finished(report, finished), reporting_budget(options), "reporting")
        print_report(report, args.json, config.secrets())
        return report.exit_code()

    cli.tune_process()
    cli.install_signal_handlers()
    return cli.guarded(body, abort, environ)


if __name__ == "__main__":
    cli.exit_now(main())
