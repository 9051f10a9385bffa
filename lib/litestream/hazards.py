"""States of a replica that make the app's next restart lose data, in plain words.

Checked against the real binaries (``tests/test_hazards.py``):

* ``litestream restore -if-replica-exists`` (0.3.13 and 0.5.17) and ``replicate`` with
  ``restore-if-db-not-exists: true`` (0.5.17) exit 0 and leave no database when the
  restore finds nothing it can start from: 0.3.13 when no generation holds an object
  it recognises, 0.5.17 when no snapshot and no chain from TXID 1 exists
  (``ErrTxNotAvailable``). An app started that way comes up with an empty database,
  and Litestream then replicates the empty one.
* a v0.3 generation with WAL but no snapshot makes the same command fail instead
  (``no snapshots available``): the app does not start.
* Litestream 0.5 resets its local state on its own with ``auto-recover: true`` (when an
  LTX file is missing or damaged), and after a reset it uploads the whole database again
  as one level-0 file: restores to points before that file use the older chain, the
  one Litestream found broken.
"""
from __future__ import annotations

from lib.litestream.layout import FORMAT_V5
from lib.litestream.v5.compaction import stalled_levels
from lib.report.model import Finding, warning

EMPTY_RESTART = (
    "a restart of the app with `litestream restore -if-replica-exists` (or `restore-if-db-not-exists: true`) "
    "would take this for 'no backup yet' and come up with an EMPTY database, which Litestream then replicates"
)

FAILED_RESTART = (
    "`litestream restore -if-replica-exists` fails on it too (no snapshots available), so an app that restores "
    "at start-up will not start"
)


def auto_recover_warning(origin: str) -> Finding:
    """``auto-recover: true``: Litestream may silently start a new lineage."""
    return warning(
        "auto_recover",
        f"auto-recover is enabled ({origin}): when an LTX file is missing or damaged Litestream resets its local "
        "state and uploads the whole database again instead of stopping, so a broken chain is papered over; "
        "point-in-time restores to before such a reset depend on the broken part")


def lineage_switch_warning(key: str, txid: int, level: int) -> Finding:
    """A file holding the whole database after earlier files: Litestream restarted its lineage there."""
    return warning(
        "lineage_switch",
        f"level-{level} file at TXID {txid:016x} holds the whole database although earlier files exist: Litestream "
        "reset its local state there (a lineage switch, e.g. auto-recover or a restore over the live database); "
        f"the newest restore is sound, but restores to points before TXID {txid:016x} replay the older files, "
        "which Litestream had found missing or damaged", key)


def replica_warnings(db, state) -> list[Finding]:
    """Warnings from how the app's litestream.yml configures a database whose replica is in ``state``.

    Unknown keys (``db.warnings``) for every replica; for a v0.5 replica also
    ``auto-recover: true`` and compaction that stopped keeping up with the configured levels.
    """
    findings = [warning("config", message) for message in getattr(db, "warnings", ())]
    v5 = getattr(db, "v5", None)
    if state.format != FORMAT_V5 or v5 is None:
        return findings
    if v5.auto_recover:
        findings.append(auto_recover_warning(v5.origin("auto_recover")))
    return findings + stalled_levels(state.v5, v5.level_intervals, v5.snapshot_interval)
