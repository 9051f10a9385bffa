"""List what is in the bucket for each database, without restoring: ``python -m jobs.status``.

v0.3 generations or v0.5 LTX levels, the restore point ``jobs.verify`` would use, the
age of the newest object, size and estimated monthly cost, and the last verification.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Mapping

from lib import cli
from lib.config.settings_model import DEFAULT_MAX_RUNTIME, max_runtime_seconds
from lib.errors import EXIT_INCONCLUSIVE, EXIT_OK, DeadlineExceeded
from lib.report.cost import price_per_gb_month
from lib.report.history import HistorySettings, locate, read_latest
from lib.report.logs import setup_logging
from lib.report.status import ReplicaStatus, render_status, replica_status
from lib.storage.pool import in_background
from lib.verify import targets


def parse_args(argv: list[str] | None):
    parser = cli.Parser(prog="python -m jobs.status", description=__doc__.strip().splitlines()[0])
    cli.add_source_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--max-runtime", metavar="DURATION", help=f"give up listing (inconclusive) after this long "
                        f"(default $RESTORABLE_MAX_RUNTIME or {DEFAULT_MAX_RUNTIME})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ

    def body() -> int:
        args = parse_args(argv)
        deadline = time.monotonic() + max_runtime_seconds(args.max_runtime, environ)
        config = cli.load_config(args, environ)
        setup_logging(environ, secrets=config.secrets())
        price = price_per_gb_month(environ)
        cli.check_replica_paths(config, args.replica)
        statuses = [status_by(deadline, db, rep, price, environ) for db, rep in targets(config, args.replica)]
        if args.json:
            cli.say(json.dumps({"replicas": [s.to_json() for s in statuses]}, indent=2), environ, sys.stdout)
        else:
            cli.say(render_status(statuses), environ, sys.stdout)
        return EXIT_INCONCLUSIVE if any(s.error for s in statuses) else EXIT_OK

    cli.tune_process()
    cli.install_signal_handlers()
    return cli.guarded(body, environ=environ)


def status_by(deadline: float, db, replica, price: float, environ: Mapping[str, str]) -> ReplicaStatus:
    """``replica_status`` listed on a daemon thread; past ``deadline`` an error status, not a wait."""
    def work() -> ReplicaStatus:
        return replica_status(db, replica, price, last_verification(db, replica, environ), environ)

    try:
        if time.monotonic() >= deadline:
            raise DeadlineExceeded("listing not started: the maximum runtime had passed "
                                   "(--max-runtime / RESTORABLE_MAX_RUNTIME)")
        return cli.result_by(in_background(work, name="status"), deadline, "listing")
    except DeadlineExceeded as exc:
        return ReplicaStatus(db=db.path, replica=replica.name, location=replica.describe(), format=None,
                             error=str(exc))


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
    keep = ("status", "checked_at", "at", "last_good_at", "generation", "position", "drills")
    return {k: doc[k] for k in keep if k in doc} or doc


if __name__ == "__main__":
    cli.exit_now(main())
