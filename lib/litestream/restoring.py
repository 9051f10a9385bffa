"""Restore whichever layout a listing found: the one entry point jobs.restore and lib.verify share.

Kept apart from ``lib.verify`` so that a plain restore does not import the verification
run (its checks, cross-check, drill and report modules: ~0.02 s of start-up).
"""
from __future__ import annotations

from pathlib import Path

from lib.litestream.discover import ReplicaState
from lib.litestream.layout import FORMAT_V3
from lib.litestream.outcome import RestoreOutcome, RestoreTarget

LISTING_ATTEMPTS = 3  # fresh listings tried when objects vanish under us (Litestream retention)


def restore_state(store, state: ReplicaState, out: Path, target: RestoreTarget, workers: int,
                  digest: bool = True) -> RestoreOutcome:
    """Restore whichever layout the replica holds into ``out``; ``digest`` fills ``outcome.sha256``."""
    if state.format == FORMAT_V3:
        # Deferred: the v0.3 restore imports numpy, which a v0.5 run never needs.
        from lib.litestream.v3.restore import restore_v3

        return restore_v3(store, state.v3, out, target, workers=workers, digest=digest)
    from lib.litestream.v5.restore import restore_v5

    return restore_v5(store, state.v5, out, target, digest=digest)
