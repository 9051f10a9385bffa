"""What every job's command line shares: argument parsing, config loading, signals, exit codes.

Exceptions become exit codes here and only here (``guarded``); library code raises the
typed errors of ``lib.errors`` and never exits.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Mapping, TypeVar

from lib.errors import (
    EXIT_CODES_HELP,
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    ConfigError,
    DeadlineExceeded,
    Interrupted,
    RestorableError,
)
from lib.report.scrub import REDACTED, Scrubber, secrets_from_environ
from lib.storage.waits import SIGNAL_POLL_SECONDS

if TYPE_CHECKING:
    from lib.config.model import Config
    from lib.config.settings_model import Settings

# The config loaders (lib.config.sources and its parsers, lib.fleet's tenants and settings,
# yaml) and lib.scratch are imported in the functions below that use them: together ~0.05 s
# of start-up that `--help` and a usage error never need.

log = logging.getLogger("restorable")

T = TypeVar("T")

# Secrets of the configs loaded in this process, for scrubbing what the jobs print.
_CONFIG_SECRETS: list[str] = []

# A secret cut short in a message (``show`` shortens long values) is still redacted
# when at least this many of its first characters appear.
SECRET_PREFIX_CHARS = 12


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; our 2 means "could not verify", so raise ConfigError (3)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise ConfigError(f"{message} (see --help)")


def add_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="*", metavar="REPLICA_URL",
                        help="verify a replica named by URL alone (s3://bucket/path, file:///path) instead of a config")
    parser.add_argument("--config", help="litestream.yml (default: $LITESTREAM_CONFIG, ./litestream.yml, "
                        "/etc/litestream.yml)")
    parser.add_argument("--db", action="append", default=[], metavar="PATH",
                        help="only this database (its path in the config); repeatable")
    parser.add_argument("--replica", metavar="NAME", help="only the replica with this name")


def add_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timestamp", type=parse_timestamp, help="restore the state at this time (RFC 3339, UTC)")
    parser.add_argument("--generation", help="v0.3: restore this generation instead of the newest")
    parser.add_argument("--txid", type=parse_txid, help="v0.5: restore up to this TXID (hex)")


def parse_timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid timestamp {text!r}; use RFC 3339, e.g. 2026-11-26T01:56:22Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_txid(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid TXID {text!r}; use hex, e.g. 000000000000002e")
    if value < 1:
        raise argparse.ArgumentTypeError("TXID must be at least 1")
    return value


def load_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The Config to verify, filtered by ``--db``.

    Source precedence (``lib.config.sources.load_effective``): replica URLs, ``--config``,
    ``$RESTORABLE_REPLICAS``, ``$LITESTREAM_CONFIG``, ``./litestream.yml``, ``/etc/litestream.yml``.

    :raises ConfigError: a bad source, ``--db`` or ``--replica``.
    """
    return _selected(_load_all(args, environ), args)


def load_run_config(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Config, Settings]:
    """``load_config`` plus the settings (``--settings``); every settings block must name a database.

    Blocks are matched against every database of the config, not only those ``--db`` picks.

    :raises ConfigError: as ``load_config``, a bad settings file, or a block naming no database.
    """
    from lib.config.settings import check_blocks_match, load_settings
    from lib.fleet import settings as fleet_settings

    config = _load_all(args, environ)
    settings, fleet_keys = fleet_settings.for_tenants(load_settings(args.settings, environ), config)
    check_blocks_match(settings, [db.path for db in config.dbs] + fleet_keys)
    return _selected(config, args), settings


def _load_all(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    from lib.config import sources
    from lib.fleet import tenants

    config = sources.load_effective(list(args.urls), args.config, environ)
    _CONFIG_SECRETS.extend(config.secrets())
    config = tenants.expand(config)  # dir: entries -> their tenants, one listing per replica
    return config


def _selected(config: Config, args: argparse.Namespace) -> Config:
    if args.db:
        from lib.config import sources

        config = type(config)(source=config.source, dbs=sources.select_dbs(config, args.db), overridden=config.overridden)
    if args.replica and not any(r.name == args.replica for db in config.dbs for r in db.replicas):
        names = sorted({r.name for db in config.dbs for r in db.replicas})
        raise ConfigError(f"--replica {args.replica}: no replica with that name (replicas: {', '.join(names)})")
    return config


def check_replica_paths(config: Config, replica_name: str | None) -> None:
    """Refuse file replicas (those ``--replica`` picks) whose path is missing or not a folder.

    Called once the flags are known to be good, so that their errors come first.

    :raises ConfigError: naming the path and where it came from.
    """
    from lib.config.replicas import check_file_replica

    for db in config.dbs:
        for replica in db.replicas:
            if replica_name in (None, replica.name):
                check_file_replica(replica)


def add_print_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective configuration (secrets masked, each value with its source) "
                        "and exit 0 without verifying; with --json as JSON")


def print_config(config, settings, as_json: bool, environ: Mapping[str, str]) -> None:
    """Write the effective configuration to stdout: YAML with ``# from`` comments, or JSON."""
    from lib.config.effective import effective_config

    document = effective_config(config, settings)
    text = json.dumps(document, indent=2) + "\n" if as_json else _config_text(document)
    sys.stdout.write(Scrubber.from_environ(environ, config.secrets()).text(text))
    sys.stdout.flush()


def _config_text(document: dict) -> str:
    lines = ["# restorable: effective configuration (secrets masked); nothing was verified",
             f"# replicas from: {document['source']}",
             f"# precedence: {' > '.join(document['precedence'])}"]
    lines += [f"# not used (a stronger source is set): {name}" for name in document["overridden"]]
    lines += [f"# settings from: {document['settings_source']}", "dbs:"]
    for db in document["dbs"]:
        lines.append(f"  - path: {_scalar(db['path'])}")
        lines.append("    replicas:")
        for replica in db["replicas"]:
            lines += _field_lines(replica, "      - ", "        ")
        lines.append("    settings:")
        lines += _field_lines(db["settings"], "      ", "      ")
        if db.get("litestream_0_5"):
            lines.append("    litestream-0.5:  # what Litestream 0.5 does with this database's backups")
            lines += _field_lines(db["litestream_0_5"], "      ", "      ")
        lines += [f"    # warning: {message}" for message in db.get("warnings", ())]
    return "\n".join(lines) + "\n"


def _field_lines(fields: dict, first: str, rest: str) -> list[str]:
    lines = []
    for number, (key, entry) in enumerate(fields.items()):
        comment = f"  # from {entry['from']}" if entry.get("from") else ""
        lines.append(f"{first if number == 0 else rest}{key}: {_scalar(entry['value'])}{comment}")
    return lines


def _scalar(value) -> str:
    """``value`` as one line of YAML flow text."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("\n...").strip()


def _raise_interrupted(signum, frame):
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def tune_process() -> None:
    """Process settings for a job, before it imports numpy or starts a thread.

    * numpy (WAL checksums) brings OpenBLAS, which starts a thread per core at import:
      ~50 ms of CPU per run for linear algebra restorable never does.
    * glibc keeps up to 8 malloc arenas per core; download threads that each allocate
      1 MiB chunks leave memory parked in their own (a v0.5 restore peaked at 96 MB at 1 GB
      instead of 86 MB), so they are capped at 2, with no measurable change in speed.

    Settings the operator made in the environment win (an empty ``MALLOC_ARENA_MAX`` is no
    setting: glibc ignores it too); other C libraries are left alone.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if not os.environ.get("MALLOC_ARENA_MAX", "").strip():
        try:
            ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX
        except (OSError, AttributeError):
            pass


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT raise Interrupted in the main thread, so ``finally`` blocks clean up."""
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)


def guarded(body: Callable[[], int], on_abort: Callable[[str], None] | None = None,
            environ: Mapping[str, str] | None = None) -> int:
    """Run a job body and map every way it can end to an exit code (the only such place).

    Every message printed here is scrubbed of the secrets in ``environ`` (default
    ``os.environ``) and in the configs loaded meanwhile, even when the config itself
    failed to load (``RESTORABLE_REPLICAS`` set to a secret by mistake).
    """
    environ = os.environ if environ is None else environ
    try:
        return body()
    except Interrupted as exc:
        log.warning("%s; stopping", exc)
        _abort(on_abort, str(exc))
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _abort(on_abort, "interrupted")
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        say(f"restorable: error: {exc}", environ)
        return EXIT_CONFIG
    except RestorableError as exc:
        say(f"restorable: error: {exc}", environ)
        _abort(on_abort, scrubbed(str(exc), environ))
        return exc.exit_code
    except Exception as exc:  # a bug: one line for the operator, the traceback at debug level
        log.debug("internal error", exc_info=True)
        say(f"restorable: internal error: {type(exc).__name__}: {exc} (rerun with LOG_LEVEL=debug for details)",
            environ)
        _abort(on_abort, f"internal error: {type(exc).__name__}")
        return EXIT_INTERNAL


def say(message: str, environ: Mapping[str, str], stream=None) -> None:
    """Print one scrubbed line (``scrubbed``) to ``stream`` (default stderr)."""
    print(scrubbed(message, environ), file=stream or sys.stderr)


def scrubbed(text: str, environ: Mapping[str, str]) -> str:
    """``text`` without the secrets of ``environ`` and of the loaded configs, whole or cut short."""
    secrets = [*_CONFIG_SECRETS, *secrets_from_environ(environ)]
    return _without_secret_prefixes(Scrubber(secrets).text(text), secrets)


def _without_secret_prefixes(text: str, secrets: list[str]) -> str:
    """Redact what remains of a secret whose first ``SECRET_PREFIX_CHARS`` characters appear."""
    for secret in secrets:
        if len(secret) < SECRET_PREFIX_CHARS:
            continue
        start = text.find(secret[:SECRET_PREFIX_CHARS])
        while start != -1:
            end = start + SECRET_PREFIX_CHARS
            while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
                end += 1
            text = text[:start] + REDACTED + text[end:]
            start = text.find(secret[:SECRET_PREFIX_CHARS], start + len(REDACTED))
    return text


def _abort(on_abort, reason: str) -> None:
    from lib.scratch import Scratch

    Scratch.cleanup_all()
    if on_abort:
        try:
            on_abort(reason)
        except Exception:
            log.debug("abort hook failed", exc_info=True)


def bounded(work: Callable[[], None], seconds: float, what: str) -> None:
    """Run ``work`` in a daemon thread and wait at most ``seconds``; a hang is logged, not waited for.

    For reporting after the run's deadline (history, email, Sentry): slow storage must not
    keep a cron job alive past its maximum runtime.
    """
    thread = threading.Thread(target=work, name=what, daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        log.warning("%s did not finish within %.0fs; giving up on it", what, seconds)


def result_by(future: Future[T], deadline: float, what: str) -> T:
    """``future``'s result, waited for in short slices (signal handlers run) until ``deadline``.

    :param deadline: a ``time.monotonic()`` value.
    :raises DeadlineExceeded: the deadline passed first; the work is not waited for.
    """
    while True:
        try:
            return future.result(timeout=min(SIGNAL_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        except FuturesTimeout:
            if future.done():
                return future.result()
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"{what} did not finish within the maximum runtime "
                                       "(--max-runtime / RESTORABLE_MAX_RUNTIME)") from None


def exit_now(code: int) -> None:
    """End the process with ``code`` now: flush logs and output, then ``os._exit``.

    Used by every job once ``main`` has returned (everything is cleaned up, reported and
    flushed by then): the interpreter's own teardown of boto3's, numpy's and sqlite_utils'
    objects takes 0.1-0.17 s, 10-15 % of a 200 MB restore. Also ends a run whose worker
    threads are stuck in I/O past the deadline, which a normal exit would wait for.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)
