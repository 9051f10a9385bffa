"""Apply a retention policy to Litestream replicas after verifying them: ``python -m jobs.retention``.

Each replica is verified first (exactly as ``python -m jobs.verify`` does); only a replica
that verified (ok or warning) is considered. Without --enforce (or enforce-retention in
the settings, or RESTORABLE_ENFORCE_RETENTION=true) nothing is deleted: the plan is
reported with the objects and bytes that could go. --dry-run wins over --enforce and
prints exactly what would be deleted, one ``key<TAB>size<TAB>reason`` line each.
v0.5 (LTX) replicas are report-only: Litestream v0.5 enforces its own retention.
"""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from typing import Mapping

from lib import cli
from lib.durations import parse_duration

DEFAULT_MAX_RUNTIME = "30m"


def parse_args(argv: list[str] | None):
    parser = cli.Parser(prog="python -m jobs.retention", description=__doc__.strip().splitlines()[0],
                        epilog=__doc__.strip().split("\n\n", 1)[1] + "\n\n" + cli.EXIT_CODES_HELP)
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
        from lib.logs import setup_logging
        from lib.settings import load_settings
        from lib.verify import run

        args = parse_args(argv)
        override = parse_duration(args.retention, "--retention") if args.retention else None
        config = cli.load_config(args, environ)
        settings = load_settings(args.settings, environ)
        setup_logging(environ, secrets=config.secrets())
        report = run(config, settings, verify_options(args, environ))
        for (db, replica), result in zip(_targets(config, args.replica), report.results):
            apply_retention(db, replica, result, settings.for_db(db.path), args, override, environ, now)
        print_report(report, args, config.secrets())
        return report.exit_code()

    cli.tune_process()
    cli.install_signal_handlers()
    return cli.guarded(body)


def verify_options(args, environ: Mapping[str, str]):
    """Verify the newest restore point, with the same environment knobs as ``jobs.verify``."""
    from jobs.verify import check_scratch_dir
    from lib.verify import VerifyOptions

    max_runtime = parse_duration(args.max_runtime or environ.get("RESTORABLE_MAX_RUNTIME") or DEFAULT_MAX_RUNTIME,
                                 "--max-runtime / RESTORABLE_MAX_RUNTIME")
    scratch = environ.get("RESTORABLE_SCRATCH_DIR")
    return VerifyOptions(
        replica_name=args.replica,
        parallel=cli.positive_int(environ, "RESTORABLE_PARALLEL", 2),
        deadline=time.monotonic() + max_runtime,
        scratch_root=check_scratch_dir(scratch) if scratch else None,
    )


def _targets(config, replica_name: str | None):
    from lib.verify import targets

    return targets(config, replica_name)


def apply_retention(db, replica, result, db_settings, args, override: float | None,
                    environ: Mapping[str, str], now: datetime | None) -> None:
    """Plan and (if enabled) enforce retention for one verified replica; findings go into ``result``."""
    from lib.discover import discover
    from lib.errors import StorageError
    from lib.report import warning
    from lib.retention import enforce_after_verify, now_for, policy_for, skipped_unverified

    if skipped_unverified(result):
        return
    policy = policy_for(replica, db_settings, override)
    store = replica.open_store()
    try:
        state = discover(store, replica)
    except StorageError as exc:
        result.findings.append(warning("retention", f"retention not planned: listing {replica.describe()} failed "
                                       f"({exc}); nothing was deleted"))
        return
    enforce = bool(args.enforce or getattr(db_settings, "enforce_retention", False))
    result.findings += enforce_after_verify(
        store, replica, state, result, policy, enforce=enforce, dry_run=args.dry_run,
        now=now or now_for(store), verified_good=last_good(db, replica, environ))


def last_good(db, replica, environ: Mapping[str, str]):
    """The last verified-good run from the history, or None when there is none or it can't be read."""
    from lib.history import HistorySettings, last_good as read_last_good, locate

    try:
        settings = HistorySettings.from_environ(environ)
        if not settings.enabled:
            return None
        location = locate(db, replica, settings)
        return read_last_good(location.store, location.prefix)
    except Exception:  # history is an extra safety net; without it the run's own point is still protected
        return None


def print_report(report, args, secrets: list[str]) -> None:
    from lib.render import render_text
    from lib.scrub import Scrubber

    if args.json:
        text = json.dumps(report.to_json(), indent=2) + "\n"
    else:
        text = render_text(report) + "".join(render_retention(r) for r in report.results)
    sys.stdout.write(Scrubber.from_environ(os.environ, secrets).text(text))
    sys.stdout.flush()


def render_retention(result) -> str:
    """Text lines for one database's ``extra["retention"]``; the dry-run lists every key."""
    summary = result.extra.get("retention")
    if not summary:
        return ""
    head = f"retention {result.db} replica={result.replica}: {summary['mode']}"
    if "policy" in summary:
        policy = summary["policy"]
        head += f", window {policy['window'] or 'off'} ({policy['source']}), keep-snapshots {policy['keep_snapshots']}"
        head += (f"; kept {_objects(summary['kept'])}, reclaimable {_objects(summary['reclaimable'])}, "
                 f"deleted {_objects(summary['deleted'])}")
    lines = [head]
    lines += [f"  note: {note}" for note in summary.get("notes", [])]
    if "would_delete" in summary:
        lines.append(f"  would delete {len(summary['would_delete'])} object(s):")
        lines += [f"{d['key']}\t{d['size']}\t{d['reason']}" for d in summary["would_delete"]]
    return "\n".join(lines) + "\n"


def _objects(count: dict) -> str:
    return f"{count['objects']} object(s) / {count['bytes']:,} bytes"


if __name__ == "__main__":
    cli.exit_now(main())
