"""The vault step of a run: keep today's verified copy, prune by the GFS plan, re-read one entry.

Each returns the JSON summary it adds to the database's report and its findings. A vault
that cannot be written is a warning (the backup itself was verified); a vault copy that
no longer matches its manifest or fails ``integrity_check`` is an error (kind ``vault``).
"""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from lib.errors import CorruptObject, ObjectNotFound, StorageError
from lib.report.model import Finding, error, warning
from lib.storage.local import LocalStore
from lib.units import format_iso
from lib.vault.manifest import Manifest, data_key, day_of, manifest_key
from lib.vault.plan import KeepPolicy, plan
from lib.vault.restore import fetch
from lib.vault.store import Entry, VaultLocation, entries, entry_keys, read_checks, write_checks
from lib.vault.upload import Compressed, abort_stale_uploads, put_stream

log = logging.getLogger(__name__)


def verified_by(environ) -> str:
    """The version that verified: the deployed commit when the platform names it."""
    commit = environ.get("RAILWAY_GIT_COMMIT_SHA") or environ.get("SOURCE_COMMIT") or ""
    return f"restorable {commit[:12]}".strip() if commit else "restorable"


def keep_verified(location: VaultLocation, policy: KeepPolicy, result, restored: Path, now: datetime,
                  version: str) -> tuple[dict[str, Any], list[Finding]]:
    """Upload ``restored`` as today's entry unless there is one, then prune (never raises for storage)."""
    summary: dict[str, Any] = {"location": location.describe(), "policy": str(policy), "uploaded": None}
    try:
        found, incomplete = entries(location)
        today = day_of(now)
        if any(e.day == today for e in found):
            summary["skipped"] = f"an entry for {today} exists (at most one a day)"
        else:
            found.append(_upload(location, result, restored, now, version))
            summary["uploaded"] = today
        summary.update(_prune(location, found, incomplete, policy, today))
    except CorruptObject as exc:
        return summary, [error("vault", f"vault at {location.describe()} holds a damaged manifest: {exc}", exc.key)]
    except (StorageError, OSError) as exc:  # OSError: reading the restored file, a directory vault's disk
        return summary, [warning("vault", f"could not keep a verified copy at {location.describe()}: {exc}; "
                                 "the backup itself was verified, the vault will be tried again next run")]
    return summary, []


def _upload(location: VaultLocation, result, restored: Path, now: datetime, version: str) -> Entry:
    day = day_of(now)
    stream = Compressed(restored)
    put_stream(location.store, data_key(location.prefix, day), stream)
    if result.restored and result.restored.sha256 and result.restored.sha256 != stream.sha256:
        location.store.delete([data_key(location.prefix, day)])
        raise StorageError(f"the restored file changed while it was uploaded (sha256 {stream.sha256[:12]} "
                           f"!= verified {result.restored.sha256[:12]}); not kept")
    manifest = Manifest(
        db=result.db, day=day, sha256=stream.sha256, bytes=stream.bytes, compressed_bytes=stream.compressed_bytes,
        page_size=result.restored.page_size if result.restored else 0, verified_at=format_iso(now),
        verified_by=version, replica=result.replica,
        restore_point={"format": result.format, "generation": result.generation, "position": result.position,
                       "last_backup_at": format_iso(result.last_backup_at)},
        tables=dict(result.tables))
    location.store.put(manifest_key(location.prefix, day), manifest.dumps())
    log.info("vault: kept db=%s day=%s bytes=%d compressed=%d", result.db, day, stream.bytes,
             stream.compressed_bytes)
    return Entry(day, manifest, stream.compressed_bytes)


def _prune(location: VaultLocation, found: list[Entry], incomplete: list[str], policy: KeepPolicy,
           today: str) -> dict[str, Any]:
    """Delete what the plan removes, and incomplete entries of earlier days (interrupted uploads)."""
    decided = plan(found, policy)
    doomed = [key for entry in decided.remove for key in entry_keys(location, entry.day)]
    doomed += [key for key in incomplete if f"/{today}/" not in key]
    failures = location.store.delete(doomed) if doomed else []
    abort_stale_uploads(location.store, location.prefix, today)
    _remove_empty_days(location, [e.day for e in decided.remove])
    for failure in failures:
        log.warning("vault: could not delete %s: %s", failure.key, failure.error)
    return {"kept": [{"day": e.day, "reasons": list(r)} for e, r in decided.keep],
            "pruned": [e.day for e in decided.remove], "delete_failures": len(failures)}


def _remove_empty_days(location: VaultLocation, days: list[str]) -> None:
    """A directory vault's pruned days leave empty folders; an object store has none."""
    if not isinstance(location.store, LocalStore):
        return
    for day in days:
        try:
            location.store._path(f"{location.prefix}{day}").rmdir()
        except (OSError, StorageError):  # not empty (a file we do not know) or already gone
            pass


def check_one(location: VaultLocation, workdir: Path, now: datetime) -> tuple[dict[str, Any], list[Finding]]:
    """Re-read one entry in rotation (never checked first, then the least recently checked),
    at most once a UTC day per database (a re-read downloads the whole copy), and check its
    sha256 and ``integrity_check``. Entries found damaged stay error findings on every run
    until they are deleted or re-read sound."""
    try:
        found, _ = entries(location)
        checks = read_checks(location)
    except CorruptObject as exc:
        return {}, [error("vault", f"vault at {location.describe()} holds a damaged manifest: {exc}", exc.key)]
    except StorageError as exc:
        return {}, [warning("vault", f"could not list the vault at {location.describe()}: {exc}")]
    if not found:
        return {}, []
    checks = {e.day: checks[e.day] for e in found if e.day in checks}
    if any(record[:10] == day_of(now) for record in checks.values()):
        summary, findings, entry = {"status": "skipped", "note": "re-read once a day; done today"}, [], None
    else:
        entry = min(found, key=lambda e: (e.day in checks, checks.get(e.day, ""), e.day))
        status, findings = _check_entry(location, entry, workdir)
        summary = {"day": entry.day, "status": status, "at": format_iso(now)}
        if status != "skipped":
            checks[entry.day] = f"{format_iso(now)} {status}"
            try:
                write_checks(location, checks)
            except StorageError as exc:
                log.warning("vault: could not record the check of %s: %s", entry.day, exc)
    for other in found:
        at, _, earlier = checks.get(other.day, "").partition(" ")
        if other is not entry and earlier == "damaged":
            findings.append(_damaged(location, other, f"found damaged when re-read at {at}",
                                     data_key(location.prefix, other.day)))
    return summary, findings


def _check_entry(location: VaultLocation, entry: Entry, workdir: Path) -> tuple[str, list[Finding]]:
    from lib.checks.integrity import integrity, open_readonly

    out = workdir / f"vault-{entry.day}.db"
    key = data_key(location.prefix, entry.day)
    try:
        fetch(location, entry, out)
        with open_readonly(out) as sdb:
            problems = integrity(sdb)
    except ObjectNotFound:
        return "skipped", []  # pruned by another run meanwhile
    except CorruptObject as exc:
        return "damaged", [_damaged(location, entry, exc.problem, key)]
    except (StorageError, OSError) as exc:  # OSError: the scratch disk
        return "skipped", [warning("vault", f"could not re-read vault entry {entry.day} at "
                                   f"{location.describe()}: {exc}")]
    finally:
        out.unlink(missing_ok=True)
    if problems:
        return "damaged", [_damaged(location, entry, problems[0].message, key)]
    return "ok", []


def _damaged(location: VaultLocation, entry: Entry, problem: str, key: str) -> Finding:
    return error("vault", f"vault copy {entry.day} of {entry.manifest.db} at {location.describe()} is damaged "
                 f"({problem}): it can no longer be restored; other entries are unaffected. Delete the entry "
                 "(both keys) once you no longer need it for forensics", key)
