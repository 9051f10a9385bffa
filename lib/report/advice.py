"""What to say about a result, shared by every alert channel (email, Sentry, chat, pings).

Pure functions: a headline naming the database, the replica and the first deciding
finding; the next step for a finding kind; and the "tell people?" rule every alerting
channel applies to its own memory (``problem`` when a database turns bad while its
audience was last told it was good, ``recovery`` once when it turns good again).
"""
from __future__ import annotations

from lib.report.model import FAILED, INCONCLUSIVE, OK, WARN, DbResult, Finding
from lib.report.sentry import deciding_findings

GOOD = "good"

BAD = "bad"

PROBLEM = "problem"

RECOVERY = "recovery"

# What to do about each finding kind; the first kind of a problem picks the advice.
NEXT_STEPS = {
    "no_backups": "Litestream has uploaded nothing here: check that Litestream runs next to the app and that "
                  "its replica URL, bucket and credentials match litestream.yml.",
    "missing_snapshot": "A generation has no usable snapshot: restart Litestream so it starts a new generation "
                        "with a fresh snapshot, then run the check again.",
    "corrupt_object": "An object in the replica can't be decoded: restart Litestream to take a fresh snapshot; "
                      "keep the bad object for inspection.",
    "wal_gap": "The WAL chain has a gap, so recent changes can't be restored: restart Litestream to start a new "
               "generation and look for anything else deleting objects (bucket lifecycle rules).",
    "integrity": "The restored database fails SQLite's integrity check: reproduce with `litestream restore -o "
                 "/tmp/check.db <replica-url>` and `PRAGMA integrity_check`; if the live database is fine, restart "
                 "Litestream to take a new snapshot.",
    "stale": "No recent backup data: check that Litestream is running and can write to the bucket (its logs), "
             "and that the app is writing.",
    "row_count": "A table lost many rows since the last good run: if that was on purpose, accept the new counts; "
                 "otherwise restore from an earlier point with `litestream restore -timestamp`.",
    "probe": "The probe check failed: check the probe configured for this database against the live app.",
    "retention": "Retention could not finish: check delete permissions on the bucket; nothing unverified was "
                 "deleted.",
    "unreachable": "The store could not be reached: check the endpoint, bucket name and credentials "
                   "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), then run the check again.",
    "restore_time": "Restoring took longer than max-restore-time: a restore after an incident would take as long; "
                    "raise the limit or restore from a faster place (region, provider).",
    "window": "The bucket cannot reach back as far as min-window: check Litestream's retention (and "
              "enforce-retention) against how far back you need to restore.",
    "drill": "An older restore point does not restore: restores to the time the finding names will fail; restore "
             "a later point and restart Litestream so a new snapshot starts a sound chain.",
    "vault": "A vault copy is damaged or the vault could not be written: delete the damaged entry (both keys of "
             "its day) and check the vault's bucket and RESTORABLE_VAULT_* credentials.",
    "interrupted": "The run was stopped before it finished: if this repeats, raise the job's maximum runtime or "
                   "look for slow storage.",
    "archived_object": "Backup objects sit in an archive storage class (Glacier, Deep Archive) and can't be read: "
                       "give Litestream a readable storage-class and exclude its prefix from archive lifecycle rules.",
    "snapshot_ahead": "The newest snapshot has no WAL after it yet: nothing to do if Litestream is running; if the "
                      "app kept writing, check that Litestream is still uploading (its logs).",
    "unknown_objects": "The replica holds objects no Litestream release writes: find what put them there; they are "
                       "in no restore.",
    "config": "litestream.yml has a key Litestream ignores (a misspelling?): fix the key named in the finding.",
    "auto_recover": "auto-recover hides broken LTX chains: consider turning it off so Litestream stops and tells you.",
    "compaction_stalled": "Compaction stopped keeping up: check Litestream's log for compaction errors and that it "
                          "can write to the bucket; L0 keeps growing meanwhile.",
}

DEFAULT_NEXT_STEP = "See the findings in the report and the README's list of finding kinds."

VERDICTS = {
    FAILED: "backup verification failed",
    INCONCLUSIVE: "backup could not be verified",
    WARN: "backup verified with warnings",
    OK: "backup verified",
}


def alert_class(status: str) -> str:
    return BAD if status in (FAILED, INCONCLUSIVE) else GOOD


def alert_kind(alerted_before: str | None, status: str) -> str | None:
    """``problem``, ``recovery`` or None: does this status need telling an audience that
    was last told ``alerted_before`` (``good``/``bad``; anything else counts as good)?"""
    before = alerted_before if alerted_before in (GOOD, BAD) else GOOD
    now = alert_class(status)
    if now == before:
        return None
    return PROBLEM if now == BAD else RECOVERY


def headline(result: DbResult, replica: str) -> str:
    """One line saying what is wrong: ``/data/app.db on s3://b/app.db: backup verification failed: ...``."""
    deciding = deciding_findings(result)
    line = f"{result.db} on {replica}: {VERDICTS[result.status]}"
    if deciding:
        line += f": {deciding[0].message}"
        if len(deciding) > 1:
            line += f" (+{len(deciding) - 1} more)"
    return line


def advice(findings: list[Finding]) -> str | None:
    """What to do, from the first finding whose kind we know."""
    if not findings:
        return None
    for finding in findings:
        if finding.kind in NEXT_STEPS:
            return NEXT_STEPS[finding.kind]
    return DEFAULT_NEXT_STEP


def restore_point(result: DbResult) -> str:
    """``generation 1a2b… position 1a2b…/00000003:4096`` or ``txid …``, as far as known."""
    parts = []
    if result.generation:
        parts.append(f"generation {result.generation}")
    if result.position:
        parts.append(f"position {result.position}")
    return ", ".join(parts) or "none restored"
