"""Native restore of Litestream v0.3 replicas (no litestream binary).

Follows ``docs/formats/litestream-v0.3.md``: choose the generation and snapshot
as ``litestream restore`` does (4.1-4.3), stream the snapshot through LZ4 into the output
file, then replay WAL indexes S..max frame by frame straight into the file, which is
byte-identical to SQLite's checkpoint of the same WAL (4.5). Unlike Litestream, every
object is validated on the way and every problem becomes a finding naming the object.
"""
from __future__ import annotations

from pathlib import Path

from lib.litestream.layout import FORMAT_V3
from lib.litestream.outcome import DEFAULT_MAX_RESTORE_BYTES, RestoreOutcome, RestoreTarget, file_sha256
from lib.litestream.v3 import age
from lib.litestream.v3.layout import V3State, generation_of, segment_order, wal_key
from lib.litestream.v3.plan import V3Plan, fallback_generation, plan_v3
from lib.litestream.v3.replay import WAL_PREFETCH_BYTES, Replay
from lib.litestream.v3.output import Output
from lib.litestream.v3.snapshot import SnapshotDamaged, SnapshotStream, restore_snapshot
from lib.litestream.v3.unknown import unknown_objects
from lib.report.model import Finding, error
from lib.storage.base import ObjectStore
from lib.storage.pool import ObjectChanged, stream


def restore_v3(
    store: ObjectStore,
    state: V3State,
    out_path: Path,
    target: RestoreTarget = RestoreTarget(),
    *,
    workers: int = 8,
    max_bytes: int = DEFAULT_MAX_RESTORE_BYTES,
    digest: bool = True,
) -> RestoreOutcome:
    """Restore the chosen restore point of a v0.3 replica into ``out_path``, validating everything.

    ``digest`` fills ``outcome.sha256`` (a second read of the file; callers that can hash
    while doing something else pass False and use ``file_sha256``).

    ``ObjectNotFound`` (including ``ObjectChanged``) and ``StorageUnavailable`` propagate:
    the caller re-lists or reports inconclusive. Damage becomes findings; on a damaged
    replica ``outcome.position`` is where the sound part ends.
    """
    outcome = RestoreOutcome(format=FORMAT_V3)
    outcome.findings.extend(unknown_objects(state))
    plan, findings = plan_v3(state, target)
    if plan is None:
        outcome.findings.extend(_prove_fallback(store, state, target, out_path, f, workers, max_bytes)
                                if f.kind == "missing_snapshot" else f for f in findings)
        return outcome
    outcome.findings.extend(findings)
    outcome.findings.extend(_confirm_warnings(store, state.prefix, plan))
    outcome.generation = plan.generation.id
    outcome.last_backup_at = plan.last_backup_at
    snapshot = SnapshotStream(store, plan.snapshot, out_path, max_bytes)
    try:
        replay = _replay_onto_snapshot(snapshot, store, plan, state.prefix, out_path, outcome, workers, max_bytes)
    finally:
        snapshot.stop()
    if replay is None:
        damage = snapshot.error
        outcome.findings.append(error("corrupt_object", f"snapshot: {damage.problem}", damage.key))
        _replay(store, plan, state.prefix, None, outcome, workers, max_bytes=max_bytes)
        return outcome
    if replay.behind_snapshot:
        if not _target_cuts_index(plan, plan.snapshot.index):
            outcome.findings.append(_wal_behind_snapshot(store, state.prefix, plan, replay.behind_snapshot))
        restore_snapshot(store, plan.snapshot, out_path, max_bytes)  # the newest consistent state
    outcome.position = str(replay.stopped_at or plan.end)
    outcome.path = out_path
    outcome.bytes = out_path.stat().st_size
    if digest:
        outcome.sha256 = file_sha256(out_path)
    return outcome


def _replay_onto_snapshot(snapshot: SnapshotStream, store: ObjectStore, plan: V3Plan, prefix: str, out_path: Path,
                          outcome: RestoreOutcome, workers: int, max_bytes: int) -> Replay | None:
    """Replay the WAL into ``out_path`` while ``snapshot`` streams into it; written pages wait for the snapshot.

    Returns None, with ``outcome`` as it was, when the snapshot turns out damaged: the
    caller then validates the WAL without applying it, downloading it again (only a
    damaged replica pays for that, and the findings come from the same code as before).
    """
    findings_before = len(outcome.findings)
    try:
        header = snapshot.header()
        output = Output(out_path, header, max_bytes, snapshot.finished)
        try:
            replay = _replay(store, plan, prefix, output, outcome, workers, header.change_counter, max_bytes=max_bytes)
            output.close()  # writes the staged pages once the snapshot is complete
        except BaseException:
            output.abandon()
            raise
    except SnapshotDamaged:
        del outcome.findings[findings_before:]
        outcome.objects_read = outcome.bytes_downloaded = 0
        return None
    outcome.objects_read += 1
    outcome.bytes_downloaded += plan.snapshot.info.size
    outcome.page_size = header.page_size
    return replay


def _target_cuts_index(plan: V3Plan, index: int) -> bool:
    """True when the generation lists segments of ``index`` (or later) that the plan leaves out
    (a point-in-time target before them): the snapshot alone is then the consistent state."""
    planned = {s.info.key for s in plan.segments}
    return any(s.index >= index and s.info.key not in planned for s in plan.generation.segments)


def _wal_behind_snapshot(store: ObjectStore, prefix: str, plan: V3Plan, behind: tuple[int, int, int]) -> Finding:
    """The WAL of the snapshot's index ends before the snapshot's state: a race, or segments are missing.

    Raises ``ObjectChanged`` when a fresh listing shows that index grew since the plan
    (Litestream uploaded the snapshot before the WAL it contains: the caller re-lists);
    otherwise the segments are missing and this returns the finding.
    """
    reached, wanted, wal_end = behind
    index = plan.snapshot.index
    listed = {s.info.key for s in plan.segments if s.index >= index}
    wal_prefix = f"{prefix}{plan.generation.id}/wal/"
    fresh = [o for o in store.list(wal_prefix) if segment_order(o.key[len(wal_prefix):])[0] >= index]
    if any(o.key not in listed for o in fresh):
        raise ObjectChanged(plan.snapshot.info.key, "the snapshot is newer than the WAL listed with it: Litestream "
                            "was uploading")
    return error("wal_gap", f"WAL index {index:08x} ends at offset {wal_end}, before the state snapshot "
                 f"{index:08x} was taken at (page 1 change counter {reached} < the snapshot's {wanted}): its last "
                 "segments are missing, or litestream stopped right after the snapshot; `litestream restore` would "
                 "write these older pages over the snapshot's newer ones. Restored the snapshot alone",
                 wal_key(prefix, plan.generation.id, index, wal_end))


def _confirm_warnings(store: ObjectStore, prefix: str, plan: V3Plan) -> list[Finding]:
    """Keep the planning warnings (an index below the snapshot without its offset-0
    segment) that a fresh listing confirms: Litestream's retention deletes such indexes
    segment by segment, so a listing taken meanwhile shows one half deleted."""
    if not plan.findings:
        return []
    wal_prefix = f"{prefix}{plan.generation.id}/wal/"
    fresh: dict[int, list[int]] = {}
    for obj in store.list(wal_prefix):
        order = segment_order(obj.key)
        fresh.setdefault(order[0], []).append(order[1])
    return [f for f in plan.findings if _still_without_offset0(f, fresh)]


def _still_without_offset0(finding: Finding, fresh: dict[int, list[int]]) -> bool:
    index = segment_order(finding.object or "")[0]
    return index < 0 or (index in fresh and 0 not in fresh[index])


def _replay(store: ObjectStore, plan: V3Plan, prefix: str, output: Output | None, outcome: RestoreOutcome,
            workers: int, snapshot_counter: int = 0, *, max_bytes: int) -> Replay:
    """Stream the plan's WAL segments through the replay, downloading ahead (``WAL_PREFETCH_BYTES``)."""
    listed_ends = {s.index: s.offset for s in plan.generation.segments}  # segments are in (index, offset) order
    replay = Replay(plan.generation.id, prefix, plan.snapshot.index, output, outcome.findings, listed_ends,
                    snapshot_counter, max_bytes=max_bytes, age_keys=age.keys_of(store))
    for seg, reader in stream(store, plan.segments, workers=workers, max_buffered_bytes=WAL_PREFETCH_BYTES):
        outcome.objects_read += 1
        replay.segment(seg, reader.chunks())
        outcome.bytes_downloaded += reader.bytes
    replay.finish()
    return replay


def _prove_fallback(store: ObjectStore, state: V3State, target: RestoreTarget, out_path: Path, finding: Finding,
                    workers: int, max_bytes: int) -> Finding:
    """Say whether the generation a ``missing_snapshot`` finding points to really restores.

    The older generation is restored into ``out_path`` (then removed) and integrity-checked;
    the finding's message then says which generation to use, or that it is damaged too.
    """
    gen_id = generation_of(finding.object or "", state.prefix)
    gen = next((g for g in state.generations if g.id == gen_id), None)
    best = fallback_generation(state, gen, target) if gen is not None else None
    if best is None:
        return finding
    sub = restore_v3(store, state, out_path, RestoreTarget(timestamp=target.timestamp, generation=best.id),
                     workers=workers, max_bytes=max_bytes, digest=False)
    problems = [f.message for f in sub.findings if f.severity == "error"]
    if sub.path is not None:
        # Deferred: lib.checks imports sqlite_utils (~100 ms), which only this rare path of a restore needs.
        from lib.checks import integrity as checks

        with checks.open_readonly(sub.path) as db:
            problems += [f.message for f in checks.integrity(db)]
        sub.path.unlink(missing_ok=True)
    if problems:
        verdict = f"older generation {best.id} has a snapshot but does not restore cleanly either ({problems[0]})"
    else:
        verdict = (f"older generation {best.id} restores cleanly (verified up to {sub.position}, last upload "
                   f"{best.updated_at:%Y-%m-%dT%H:%M:%SZ}): restore it with --generation {best.id}")
    message = (f"generation {gen.id} has WAL but no usable snapshot; {verdict}; restart litestream so it "
               "starts a new generation with a snapshot")
    return error(finding.kind, message, finding.object)

