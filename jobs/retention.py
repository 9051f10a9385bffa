"""Apply a retention policy to Litestream replicas after verifying them: ``python -m jobs.retention``.

Each replica is verified first (exactly as ``python -m jobs.verify`` does); only a replica
that verified (ok or warning) is considered. Without --enforce (or enforce-retention in
the settings, or RESTORABLE_ENFORCE_RETENTION=true) nothing is deleted: the plan is
reported with the objects and bytes that could go. --dry-run wins over --enforce and
prints exactly what would be deleted, one ``key<TAB>size<TAB>reason`` line each.
v0.5 (LTX) replicas are report-only: Litestream v0.5 enforces its own retention.
"""
from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Mapping

from lib import cli
from lib.config.parsing import positive_int
from lib.config.settings_model import DEFAULT_MAX_RUNTIME, max_runtime_seconds
from lib.errors import EXIT_CODES_HELP
from lib.report.logs import setup_logging
from lib.report.text import print_report
from lib.retention.glue import apply_retention
from lib.scratch import check_scratch_dir
from lib.units import parse_duration
from lib.verify import VerifyOptions, run, targets


def parse_args(argv: list[str] | None):
    parser = cli.Parser(prog="python -m jobs.retention", description=__doc__.strip().splitlines()[0],
                        epilog=__doc__.strip().split("\n\n", 1)[1] + "\n\n" + EXIT_CODES_HELP)
    cli.add_source_args(parser)
    parser.add_argument("--settings", help="restorable.yml (default: $RESTORABLE_SETTINGS, ./restorable.yml)")
    parser.add_argument("--retention", metavar="DURATION",
                        help="keep this much history, e.g. 24h or 7d (default: settings, else the replica's "
                        "retention in litestream.yml, else 24h)")
    parser.add_argument("--enforce", action="store_true", help="delete what the policy allows (default: report only)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted and delete nothing "
                        "(wins over --enforce)")
    parser.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    parser.add_argument("--max-runtime", help=f"give up verifying (inconclusive) after this long (default "
                        f"$RESTORABLE_MAX_RUNTIME or {DEFAULT_MAX_RUNTIME})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None,
         now: datetime | None = None) -> int:
    """Run the job; ``now`` fixes the clock retention judges ages by (tests)."""
    environ = os.environ if environ is None else environ

    def body() -> int:
        args = parse_args(argv)
        override = parse_duration(args.retention, "--retention") if args.retention else None
        config, settings = cli.load_run_config(args, environ)
        setup_logging(environ, secrets=config.secrets())
        options = verify_options(args, environ)
        cli.check_replica_paths(config, args.replica)
        report = run(config, settings, options)
        for (db, replica), result in zip(targets(config, args.replica), report.results):
            apply_retention(db, replica, result, settings.for_db(db.path), args, override, environ, now)
        print_report(report, args.json, config.secrets())
        return report.exit_code()

    cli.tune_process()
    cli.install_signal_handlers()
    return cli.guarded(body, environ=environ)


def verify_options(args, environ: Mapping[str, str]):
    """Verify the newest restore point, with the same environment knobs as ``jobs.verify``."""
    max_runtime = max_runtime_seconds(args.max_runtime, environ)
    scratch = environ.get("RESTORABLE_SCRATCH_DIR")
    return VerifyOptions(
        replica_name=args.replica,
        parallel=positive_int(environ, "RESTORABLE_PARALLEL", 2),
        deadline=time.monotonic() + max_runtime,
        scratch_root=check_scratch_dir(scratch) if scratch else None,
    )


if __name__ == "__main__":
    cli.exit_now(main())
