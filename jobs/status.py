"""List what is in the bucket for each database, without restoring: ``python -m jobs.status``.

v0.3 generations or v0.5 LTX levels, the restore point ``jobs.verify`` would use, the
age of the newest object, size and estimated monthly cost, and the last verification.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

from lib import cli
from lib.errors import EXIT_INCONCLUSIVE, EXIT_OK
from lib.report.cost import price_per_gb_month
from lib.report.history import HistorySettings, locate, read_latest
from lib.report.logs import setup_logging
from lib.report.status import render_status, replica_status
from lib.verify import targets


def parse_args(argv: list[str] | None):
    parser = cli.Parser(prog="python -m jobs.status", description=__doc__.strip().splitlines()[0])
    cli.add_source_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ

    def body() -> int:
        args = parse_args(argv)
        config = cli.load_config(args, environ)
        setup_logging(environ, secrets=config.secrets())
        price = price_per_gb_month(environ)
        statuses = [replica_status(db, rep, price, last_verification(db, rep, environ))
                    for db, rep in targets(config, args.replica)]
        if args.json:
            print(json.dumps({"replicas": [s.to_json() for s in statuses]}, indent=2))
        else:
            print(render_status(statuses))
        return EXIT_INCONCLUSIVE if any(s.error for s in statuses) else EXIT_OK

    cli.tune_process()
    cli.install_signal_handlers()
    return cli.guarded(body)


def last_verification(db, replica, environ) -> dict | None:
    """The history's latest document for this replica, trimmed to its verdict; None if unknown."""
    try:
        settings = HistorySettings.from_environ(environ)
        if not settings.enabled:
            return None
        doc = read_latest(locate(db, replica, settings))
    except Exception:
        return None
    if not doc:
        return None
    keep = ("status", "checked_at", "at", "last_good_at", "generation", "position")
    return {k: doc[k] for k in keep if k in doc} or doc


if __name__ == "__main__":
    cli.exit_now(main())
