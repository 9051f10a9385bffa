"""One verification run: for every database and replica, list, restore, check, report.

``run`` reads like the data flow in ``docs/architecture.md``: each (database,
replica) pair is verified in its own scratch directory on a bounded pool; a failure,
an exception or a hang in one never hides another's result; the whole run ends by its
deadline with unfinished work reported inconclusive.
"""
from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lib.checks.freshness import backup_age
from lib.config.model import Config, DbConfig, ReplicaConfig
from lib.crosscheck.run import CrossCheckOptions
from lib.crosscheck.run import apply as cross_check_replica
from lib.errors import ConfigError, ObjectNotFound, StorageUnavailable
from lib.fleet.budget import not_verified
from lib.litestream.archived import archived_finding
from lib.litestream.discover import ReplicaState, discover
from lib.litestream.hazards import EMPTY_RESTART, replica_warnings
from lib.litestream.layout import FORMAT_V3
from lib.litestream.outcome import RestoreOutcome, RestoreTarget, file_sha256, race_kinds
from lib.litestream.restoring import LISTING_ATTEMPTS, restore_state
from lib.recovery.step import RecoveryOptions, after_checks
from lib.report.cost import monthly_cost
from lib.report.model import DbResult, Finding, Report, Restored, could_not_check, error, warning
from lib.report.progress import RestoreProgress
from lib.scratch import Scratch, restore_needs_at_least, scratch_finding, scratch_space_finding
from lib.storage.pool import SIGNAL_POLL_SECONDS, in_background, sliced_result

log = logging.getLogger(__name__)


STORAGE_ATTEMPTS = 3  # whole-replica retries on transport errors before "inconclusive"


@dataclass
class VerifyOptions:
    target: RestoreTarget = field(default_factory=RestoreTarget)
    max_age_seconds: float | None = None  # command-line override
    allow_empty: bool | None = None
    replica_name: str | None = None
    parallel: int = 2
    deadline: float | None = None  # time.monotonic() value after which the run gives up
    scratch_root: Path | None = None
    keep_restored: Path | None = None  # jobs.restore: move the result here instead of deleting it
    cross_check: CrossCheckOptions | None = None  # jobs.verify --cross-check (lib/crosscheck)
    recovery: RecoveryOptions | None = None  # --drill, the vault (lib/recovery/step.py)
    workers: int = 8  # concurrent downloads per replica
    price_per_gb_month: float = 0.015  # USD, for the cost estimate in the report
    # lib.fleet: targets come oldest-verified first, so one never started by the deadline is
    # "not verified this run" (a warning, lib.fleet.budget), not inconclusive.
    fleet_order: bool = False

# --------------------------------------------------------------------------- one replica


def verify_replica(db: DbConfig, replica: ReplicaConfig, db_settings, options: VerifyOptions, scratch: Scratch,
                   notifier=None) -> DbResult:
    """Verify one replica of one database; never raises for storage or backup problems.

    The history (``notifier.previous``) is read here, inside the per-replica work, so a
    hanging history read is bounded by the run's deadline like everything else.
    """
    result = DbResult(db=db.path, replica=replica.name)
    started = time.monotonic()
    previous = notifier.previous(db, replica) if notifier else None
    last_problem = ""
    for attempt in range(max(LISTING_ATTEMPTS, STORAGE_ATTEMPTS)):
        result = DbResult(db=db.path, replica=replica.name)
        workdir = scratch.subdir(f"{replica.name}")
        try:
            changed = _verify_once(db, replica, db_settings, options, workdir, result, previous)
            if not changed:
                break
            last_problem = "the replica changed while it was verified"
        except ObjectNotFound as exc:
            last_problem = str(exc)
            log.info("listing changed during verification, re-listing db=%s replica=%s: %s", db.path, replica.name, exc)
        except StorageUnavailable as exc:
            last_problem = str(exc)
            log.warning("storage error db=%s replica=%s attempt=%d: %s", db.path, replica.name, attempt + 1, exc)
            if attempt + 1 >= STORAGE_ATTEMPTS:
                result.findings = [could_not_check("unreachable", f"could not verify {replica.describe()}: {exc}")]
                break
            time.sleep(min(2.0 * (attempt + 1), 5.0))
        except OSError as exc:
            result.findings = [scratch_finding(exc)]
            break
        finally:
            if options.keep_restored is None:
                shutil.rmtree(workdir, ignore_errors=True)
    else:
        result.findings = [could_not_check("unreachable", f"could not get a stable listing of {replica.describe()} "
                                           f"in {LISTING_ATTEMPTS} attempts: {last_problem}")]
    result.timings["total"] = time.monotonic() - started
    return result


def _verify_once(db, replica, db_settings, options: VerifyOptions, workdir: Path, result: DbResult,
                 previous: dict | None) -> bool:
    """One attempt. Returns True when the listing changed under error findings (retry)."""
    store = replica.open_store()
    t0 = time.monotonic()
    state = discover(store, replica)
    result.timings["list"] = time.monotonic() - t0
    result.format = state.format
    result.extra["replica_bytes"] = state.bytes
    result.extra["monthly_cost_usd"] = monthly_cost(state.bytes, options.price_per_gb_month)
    result.findings += replica_warnings(db, state)
    if state.format is None:
        result.findings.append(_no_backups(replica, db_settings, options, state.ignored))
        return False
    archived = archived_finding(state)
    if archived:
        result.findings.append(archived)
        return False
    space = scratch_space_finding(workdir, restore_needs_at_least(state, options.target))
    if space:
        result.findings.append(space)
        return False
    out = workdir / "restored.db"
    t0 = time.monotonic()
    with RestoreProgress(out, f"{db.path} ({replica.name})", state.bytes):
        outcome = restore_state(store, state, out, options.target, options.workers, digest=False)
    result.timings["restore"] = time.monotonic() - t0
    _record_outcome(result, outcome)
    now = store.server_now() or datetime.now(timezone.utc)
    _judge(result, outcome, state, now, db_settings, options, replica, previous, workdir)
    if options.cross_check is not None:
        cross_check_replica(result, store, state, options.target, workdir, options.cross_check, db_settings, db.path,
                            replica.name)
    after_checks(db, replica, store, state, result, outcome.path, db_settings, options, workdir, previous, now,
                 options.target == RestoreTarget())
    if any(f.severity == "error" and f.kind in race_kinds(state.format) for f in result.findings):
        return _listing_changed(store, replica, state, result.findings, options.target)
    if options.keep_restored is not None and outcome.path is not None:
        shutil.move(str(outcome.path), options.keep_restored)
    return False


def _listing_changed(store, replica, state: ReplicaState, findings: list[Finding], target: RestoreTarget) -> bool:
    """Before calling a backup damaged, make sure it was not changing under us.

    v0.3: only a change to what the findings rest on counts (``restore.findings_stand``),
    so damage on a replica Litestream keeps writing to is still reported as such.
    """
    if state.format == FORMAT_V3:
        _settle(store, replica, state, findings, target)
    fresh = discover(store, replica)
    if state.format == FORMAT_V3 and fresh.format == FORMAT_V3:
        # Deferred: lib.litestream.v3.race imports the WAL replay and numpy with it.
        from lib.litestream.v3.race import findings_stand

        changed = not findings_stand(state.v3, fresh.v3, findings, target)
    else:
        changed = fresh.fingerprint() != state.fingerprint()
    if changed:
        log.info("replica changed during verification; verifying again replica=%s", replica.describe())
    return changed


def _settle(store, replica, state: ReplicaState, findings: list[Finding], target: RestoreTarget) -> None:
    """Give a young snapshot time to be followed by the WAL it may be ahead of (``race.settle_delay``):
    Litestream 0.3.13 uploads that WAL a sync or two after the snapshot (issue 19)."""
    from lib.litestream.v3.race import settle_delay  # deferred like findings_stand above

    now = store.server_now() or datetime.now(timezone.utc)
    delay = settle_delay(state.v3, findings, now, replica.sync_interval_seconds, target)
    if delay:
        log.info("snapshot younger than the settle time; waiting %.1fs before judging replica=%s", delay,
                 replica.describe())
        time.sleep(delay)


def _no_backups(replica: ReplicaConfig, db_settings, options: VerifyOptions, foreign: list[str]) -> Finding:
    allow = options.allow_empty if options.allow_empty is not None else db_settings.allow_empty
    message = (f"no Litestream backups found at {replica.describe()}: is litestream running with this replica, "
               "and is the path right?")
    if foreign:
        message += (f" (the path holds {len(foreign)} other object(s), e.g. {foreign[0]}: "
                    f"is it the right path?); {EMPTY_RESTART}")
    if allow:
        return warning("no_backups", message + " (allowed: first deploy)")
    return error("no_backups", message + " (use --allow-empty on a first deploy)")


def _record_outcome(result: DbResult, outcome: RestoreOutcome) -> None:
    result.generation = outcome.generation
    result.position = outcome.position
    result.last_backup_at = outcome.last_backup_at
    result.findings.extend(outcome.findings)
    result.extra["objects_read"] = outcome.objects_read
    result.extra["bytes_downloaded"] = outcome.bytes_downloaded
    if outcome.path is not None:
        result.restored = Restored(outcome.bytes, outcome.sha256, outcome.page_size, str(outcome.path))


def _judge(result: DbResult, outcome: RestoreOutcome, state: ReplicaState, now: datetime, db_settings,
           options: VerifyOptions, replica: ReplicaConfig, previous: dict | None, workdir: Path) -> None:
    """Check the restored file and, for the newest restore point, how fresh the backup is.

    SQLite's temporary files go to the run's scratch folder (``workdir``'s parent), which
    outlives every replica's own folder."""
    # Deferred: the checks import sqlite_utils (and numpy through it, ~0.2 s of CPU), which
    # jobs.restore, jobs.status and every --help import this module without needing.
    from lib.checks.suite import check_freshness, check_restored

    if outcome.path is not None:
        # Hash while the checks run: both release the GIL, so two cores overlap them.
        digest = in_background(file_sha256, outcome.path, name="sha256")
        # An older point (--txid, --timestamp, --generation) holds fewer rows than the newest by
        # design: row-count drift compares the newest point with the last good run only.
        baseline = previous if options.target == RestoreTarget() else None
        checked = check_restored(outcome.path, db_settings, baseline, workdir.parent, options.deadline)
        result.findings += checked.findings
        result.tables, result.litestream_tables = checked.counts.tables, checked.counts.litestream
        if checked.counts.virtual:
            result.extra["virtual_tables"] = checked.counts.virtual
        result.timings.update(checked.timings)
        result.restored.sha256 = sliced_result(digest)
    if options.target != RestoreTarget():
        return
    max_age = options.max_age_seconds or db_settings.effective_max_age(replica.sync_interval_seconds)
    result.findings += backup_age(state.objects(), now, max_age)
    if db_settings.freshness and outcome.path is not None:
        result.findings += check_freshness(outcome.path, db_settings.freshness, now, workdir.parent, options.deadline)

# --------------------------------------------------------------------------- the run


def targets(config: Config, replica_name: str | None = None) -> list[tuple[DbConfig, ReplicaConfig]]:
    pairs = []
    for db in config.dbs:
        for replica in db.replicas:
            if replica_name is None or replica.name == replica_name:
                pairs.append((db, replica))
    return pairs


def run(config: Config, settings, options: VerifyOptions, notifier=None) -> Report:
    """Verify every (database, replica) pair; return the report. Never raises for backup or storage problems."""
    report = Report()
    pairs = targets(config, options.replica_name)
    scratch = Scratch(options.scratch_root)
    pool = ThreadPoolExecutor(max_workers=max(1, options.parallel), thread_name_prefix="verify")
    try:
        futures: dict[Future, tuple[DbConfig, ReplicaConfig]] = {}
        for db, replica in pairs:
            fut = pool.submit(verify_replica, db, replica, settings.for_db(db.path), options, scratch, notifier)
            futures[fut] = (db, replica)
        results = _collect(futures, options.deadline, options.fleet_order)
        report.results = [results[f] for f in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        scratch.cleanup()
    report.finished_at = datetime.now(timezone.utc)
    return report


def _collect(futures: dict[Future, tuple[DbConfig, ReplicaConfig]], deadline: float | None,
             fleet_order: bool = False) -> dict[Future, DbResult]:
    results: dict[Future, DbResult] = {}
    pending = set(futures)
    while pending:
        # Wait in short slices: the kernel may deliver SIGTERM to a worker thread, which does
        # not interrupt this wait, and Python runs the handler only when the main thread
        # returns to the interpreter. A long wait would ignore SIGTERM until a replica finished.
        timeout = SIGNAL_POLL_SECONDS
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        for fut in done:
            results[fut] = _result_of(fut, *futures[fut])
        if deadline is not None and time.monotonic() >= deadline and pending:
            for fut in pending:
                db, replica = futures[fut]
                unstarted = fleet_order and not fut.running() and not fut.done()
                finding = not_verified(replica) if unstarted else _deadline_finding(replica)
                results[fut] = DbResult(db=db.path, replica=replica.name, findings=[finding])
            break
    return results


def _deadline_finding(replica: ReplicaConfig) -> Finding:
    """Inconclusive: the run's deadline passed first. Names the storage, as every storage finding does."""
    where = replica.describe() + (f" (endpoint {replica.endpoint})" if replica.endpoint else "")
    return could_not_check("unreachable", f"verification of {where} did not finish within the maximum runtime "
                           "(RESTORABLE_MAX_RUNTIME); storage too slow or hanging?")


def _result_of(fut: Future, db: DbConfig, replica: ReplicaConfig) -> DbResult:
    try:
        return fut.result()
    except ConfigError:  # found only once objects are read (an age identity that opens nothing): exit 3
        raise
    except Exception as exc:  # a bug must not hide the other databases' results
        log.exception("internal error verifying db=%s replica=%s", db.path, replica.name)
        return DbResult(db=db.path, replica=replica.name, findings=[could_not_check(
            "internal", f"internal error while verifying: {type(exc).__name__}: {exc}")])
