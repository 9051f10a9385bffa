"""Restore a Litestream backup to a file without the litestream binary: ``python -m jobs.restore``.

What the Litestream guide calls "download a backup locally": the newest restore point
(or ``--timestamp`` / ``--generation`` / ``--txid``) of the database's replica, validated
object by object on the way, written to ``-o OUT``. Nothing is written at OUT when the
backup is damaged. Exit codes are listed below.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from lib import cli
from lib.errors import EXIT_FAILED, EXIT_OK, ConfigError, CorruptObject, ObjectNotFound
from lib.litestream.discover import discover
from lib.litestream.pages import page_cache_bypassed, publish
from lib.litestream.outcome import RestoreTarget
from lib.report.logs import setup_logging
from lib.litestream.restoring import LISTING_ATTEMPTS, restore_state


def parse_args(argv: list[str] | None):
    parser = cli.Parser(prog="python -m jobs.restore", description=__doc__.strip().splitlines()[0])
    cli.add_source_args(parser)
    cli.add_target_args(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the restored database")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    parser.add_argument("--check", action="store_true", help="also run PRAGMA integrity_check on the result")
    parser.add_argument("--sha256", action="store_true",
                        help="also print the result's sha256 (a second read of the whole file)")
    parser.add_argument("--from-vault", metavar="latest|YYYY-MM-DD", help="restore the verified copy kept in the "
                        "vault ($RESTORABLE_VAULT_URL, else beside the history) instead of the replica")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ

    def body() -> int:
        args = parse_args(argv)
        config = cli.load_config(args, environ)
        setup_logging(environ, secrets=config.secrets())
        if len(config.dbs) != 1:
            known = ", ".join(db.path for db in config.dbs)
            raise ConfigError(f"the config has {len(config.dbs)} databases; choose one with --db (known: {known})")
        out = Path(args.output).absolute()
        check_output(out, args.force)
        if args.from_vault:
            return restore_from_vault(config.dbs[0], args, out, environ)
        cli.check_replica_paths(config, args.replica)
        return restore_to(config.dbs[0], args, out, environ)

    cli.tune_process()
    cli.install_signal_handlers()
    return cli.guarded(body, environ=environ)


def check_output(out: Path, force: bool) -> None:
    """Refuse an OUT that could not take the result, before anything is downloaded.

    :raises ConfigError: OUT's folder is missing, is not a folder or is not writable;
        OUT is a folder; OUT exists without ``--force``.
    """
    folder = out.parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() or _under_a_file(folder) else "does not exist"
        raise ConfigError(f"-o {out}: the folder {folder} {problem}; create the folder or choose another -o")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"-o {out}: the folder {folder} is not writable by this user; choose another -o")
    if out.is_dir():
        raise ConfigError(f"-o {out} is a folder; name a file, e.g. -o {out / 'restored.db'}")
    if out.exists() and not force:
        raise ConfigError(f"output {out} already exists; remove it or pass --force")


def _under_a_file(path: Path) -> bool:
    """Whether some parent of ``path`` is a file (``/etc/passwd/x``)."""
    return any(parent.exists() and not parent.is_dir() for parent in path.parents)


def restore_to(db, args, out: Path, environ: Mapping[str, str]) -> int:
    """Restore ``db``'s replica to ``out``; nothing is written there when the backup is damaged."""
    replica = next(r for r in db.replicas if args.replica in (None, r.name))
    tmp = out.with_name(f".{out.name}.restorable-tmp")
    target = RestoreTarget(timestamp=args.timestamp, generation=args.generation, txid=args.txid)
    try:
        with page_cache_bypassed(not (args.check or args.sha256)):  # unless the file is read back here
            restored = restore_relisting(replica, tmp, target, digest=args.sha256)
        if restored is None:
            cli.say(f"restorable: no Litestream backups found at {replica.describe()}", environ)
            return EXIT_FAILED
        state, outcome = restored
        findings = list(outcome.findings)
        if outcome.path is not None and args.check:
            from lib.checks import integrity as checks  # deferred: imports sqlite_utils (~0.17 s), only for --check

            with checks.open_readonly(outcome.path) as sdb:
                findings += checks.integrity(sdb)
        for f in findings:
            where = f" ({f.object})" if f.object else ""
            cli.say(f"restorable: {f.severity}: [{f.kind}] {f.message}{where}", environ)
        if outcome.path is None or any(f.severity == "error" for f in findings):
            cli.say(f"restorable: backup is damaged; nothing written to {out}", environ)
            return EXIT_FAILED
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    digest = f", sha256 {outcome.sha256}" if outcome.sha256 else ""
    cli.say(f"restored {state.format} {outcome.position} to {out} ({outcome.bytes:,} bytes{digest})", environ)
    return EXIT_OK


def restore_from_vault(db, args, out: Path, environ: Mapping[str, str]) -> int:
    """``--from-vault``: the vault copy, written to ``out`` only once its sha256 matches its manifest."""
    if args.timestamp or args.generation or args.txid:
        raise ConfigError("--from-vault restores a kept copy; it takes no --timestamp, --generation or --txid")
    try:
        # Deferred: the vault (its store, manifests and cross-check) is ~0.03 s of imports a replica restore never needs.
        from lib.vault.restore import restore_to as vault_restore_to

        entry = vault_restore_to(db, args.from_vault, out, environ)
    except CorruptObject as exc:
        cli.say(f"restorable: error: [vault] the vault copy is damaged: {exc}; nothing written to {out}", environ)
        return EXIT_FAILED
    point = entry.manifest.restore_point
    cli.say(f"restored vault copy {entry.day} ({point.get('format')} {point.get('position')}, verified "
            f"{entry.manifest.verified_at}) to {out} ({entry.manifest.bytes:,} bytes, sha256 "
            f"{entry.manifest.sha256})", environ)
    return EXIT_OK


def restore_relisting(replica, out: Path, target, digest: bool = False):
    """List and restore, listing afresh when objects vanish under us (Litestream's retention).

    Returns (state, outcome), or None when the replica holds no backups; ``ObjectNotFound``
    escapes (exit 2) only when every attempt raced.
    """
    store = replica.open_store()
    for attempt in range(LISTING_ATTEMPTS):
        state = discover(store, replica)
        if state.format is None:
            return None
        try:
            return state, restore_state(store, state, out, target, workers=8, digest=digest)
        except ObjectNotFound:
            if attempt + 1 == LISTING_ATTEMPTS:
                raise
    return None


if __name__ == "__main__":
    cli.exit_now(main())
