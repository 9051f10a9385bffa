"""Damaged replicas through the real ``litestream restore`` and through ``python -m jobs.restore``.

Two promises of the README are checked here, on clones of replicas the real binaries wrote:

* ``litestream restore`` (0.3.13) exits 0 on several kinds of damage, handing back a
  malformed database or silently fewer rows (docs/formats/litestream-v0.3.md, "Damage"
  table). The exact exit code and what the file then holds are asserted, so the day a
  litestream release changes this, a test says so.
* ``python -m jobs.restore`` writes nothing at OUT when the backup is damaged: exit 1, the
  finding (kind and object) on stderr, no OUT, no temporary file beside it, and an OUT that
  already existed (``--force``) left as it was. Both layouts.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

from tests.support import run_job
from tests.support.litestream import V3, run_litestream
from tests.support.replicas import (database_row_counts, delete_object, integrity_check, read_object,
                                    sha256_file, write_object)
from tests.test_detection import (Layout, alter_frame, alter_wal_header, decoded, flip_stored_byte, frame_starts,
                                  layout, lz4_frame, middle_segment)
from tests.test_restore_v5 import _index_of, _l0_gap_candidate, _plan_keys

EXIT_OK, EXIT_FAILED = 0, 1


# --------------------------------------------------------------------------- v0.3 damage
# Each returns the replica-relative key restorable must name.

def older_index_frame(replica, lay: Layout) -> str:
    """A page byte flipped (valid LZ4) in the last frame of an index that later ones follow."""
    offset, key = lay.segments[lay.index_with(2)][1]
    alter_frame(replica, key, offset, "last", "page")
    return key


def newest_index_frame(replica, lay: Layout) -> str:
    """A page byte flipped in the first frame of the newest index's last segment."""
    index = max(i for i in lay.indexes if len(lay.segments[i]) >= 2)
    offset, key = lay.segments[index][-1]
    alter_frame(replica, key, offset, "first", "page")
    return key


def wal_header_salt(replica, lay: Layout) -> str:
    """An index's WAL header salt changed, header checksum recomputed."""
    key = lay.segments[lay.index_with(2)][0][1]
    alter_wal_header(replica, key, "salt", fix_checksum=True)
    return key


def middle_segment_deleted(replica, lay: Layout) -> str:
    index, offset, key = middle_segment(replica, lay)
    delete_object(replica, key)
    return key


def segment_cut_mid_frame(replica, lay: Layout) -> str:
    """A middle segment cut inside its last frame and recompressed (valid LZ4)."""
    offset, key = lay.segments[lay.index_with(3)][1]
    wal = decoded(replica, key)
    starts = frame_starts(wal, offset, replica.page_size)
    write_object(replica, key, lz4_frame(bytes(wal[: starts[-1] + 24 + replica.page_size // 3])))
    return key


def stored_byte_flipped(replica, lay: Layout) -> str:
    offset, key = lay.segments[lay.index_with(3)][1]
    flip_stored_byte(replica, key, "middle")
    return key


def offset_zero_deleted(replica, lay: Layout) -> str:
    key = lay.segments[lay.index_with(2)][0][1]
    delete_object(replica, key)
    return key


def whole_index_deleted(replica, lay: Layout) -> str:
    index = lay.indexes[len(lay.indexes) // 2]
    for _, key in lay.segments[index]:
        delete_object(replica, key)
    return lay.segments[index][0][1]


def snapshot_deleted(replica, lay: Layout) -> str:
    delete_object(replica, lay.snapshot)
    return lay.snapshot.rsplit("/", 1)[0] + "/"


def empty_segment(replica, lay: Layout) -> str:
    offset, key = lay.segments[lay.index_with(3)][1]
    write_object(replica, key, b"")
    return key


class Case(NamedTuple):
    damage: Callable[[object, Layout], str]
    litestream_exit: int
    # exit 0: what the file litestream wrote holds: "malformed", "fewer rows" (integrity ok,
    # rows missing) or "reference" (byte-identical to the undamaged restore: later indexes
    # rewrote every page the damage touched). exit 1: fragments of its error, one of which it
    # prints; it downloads indexes concurrently, so the first failure may cancel the others and
    # be reported as "context canceled".
    litestream_result: str | tuple[str, ...]
    finding: str  # the kind restorable reports


# Letters are the rows of the format doc's damage table.
V3_CASES = {
    "B-older-index-frame": Case(older_index_frame, 0, "reference", "corrupt_object"),
    "C-newest-index-frame": Case(newest_index_frame, 0, "fewer rows", "corrupt_object"),
    "D-wal-header-salt": Case(wal_header_salt, 0, "reference", "corrupt_object"),
    "E-middle-segment-deleted": Case(middle_segment_deleted, 0, "malformed", "wal_gap"),
    "M-segment-cut-mid-frame": Case(segment_cut_mid_frame, 0, "malformed", "corrupt_object"),
    "A-stored-byte-flipped": Case(stored_byte_flipped, 1, ("lz4: invalid frame checksum", "context canceled"),
                                  "corrupt_object"),
    "F-offset-zero-deleted": Case(offset_zero_deleted, 1, "missing initial wal segment", "wal_gap"),
    "G-whole-index-deleted": Case(whole_index_deleted, 1, "missing WAL index", "wal_gap"),
    "I-empty-segment": Case(empty_segment, 1, ("EOF", "context canceled"), "corrupt_object"),
    "J-snapshot-deleted": Case(snapshot_deleted, 1, "no snapshots available", "missing_snapshot"),
}


def litestream_outcome(replica, out: Path) -> tuple[int, str]:
    """(exit code, what it gave): for exit 0 one of Case.litestream_result's words, else its log."""
    proc = run_litestream(V3, "restore", "-config", replica.config_path, "-o", out, replica.db_path, check=False)
    if proc.returncode != 0:
        return proc.returncode, proc.stdout + proc.stderr
    assert out.exists(), proc.stderr
    if sha256_file(out) == replica.reference_sha256:
        return 0, "reference"
    try:
        problems, counts = integrity_check(out), database_row_counts(out)
    except sqlite3.DatabaseError as e:
        assert "malformed" in str(e)
        return 0, "malformed"
    if problems != ["ok"]:
        return 0, "malformed"
    assert sum(counts.values()) < sum(replica.row_counts.values()), (counts, replica.row_counts)
    return 0, "fewer rows"


@pytest.mark.parametrize("name", V3_CASES)
def test_litestream_0_3_13_on_a_damaged_replica(name, v3_file_replica, clone, tmp_path):
    """What `litestream restore` does, pinned: five kinds of damage exit 0."""
    case = V3_CASES[name]
    replica = clone(v3_file_replica)
    case.damage(replica, layout(replica))
    code, result = litestream_outcome(replica, tmp_path / "theirs.db")
    assert code == case.litestream_exit, result[-2000:]
    if code == 0:
        assert result == case.litestream_result
    else:
        fragments = case.litestream_result if isinstance(case.litestream_result, tuple) else (case.litestream_result,)
        assert any(fragment in result for fragment in fragments), result[-2000:]


def restore_job(replica, out: Path, *args):
    return run_job("jobs.restore", "--config", replica.config_path, "-o", out, *args)


def assert_nothing_written(proc, out: Path, kind: str, key: str, replica) -> None:
    """Exit 1, the finding on stderr naming ``key``, and OUT's folder as it was (empty)."""
    assert proc.returncode == EXIT_FAILED, proc.stderr[-3000:]
    assert f"[{kind}]" in proc.stderr, proc.stderr[-3000:]
    full = key if replica.kind == "file" else f"{replica.prefix}/{key}"
    assert full in proc.stderr, proc.stderr[-3000:]
    assert f"nothing written to {out}" in proc.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [], "OUT or a temporary file was left behind"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", V3_CASES)
def test_restore_job_writes_nothing_for_a_damaged_v3_replica(name, v3_file_replica, clone, tmp_path):
    case = V3_CASES[name]
    replica = clone(v3_file_replica)
    key = case.damage(replica, layout(replica))
    out = tmp_path / "out" / "restored.db"
    out.parent.mkdir()
    assert_nothing_written(restore_job(replica, out), out, case.finding, key, replica)


# --------------------------------------------------------------------------- v0.5 damage


def ltx_page_flipped(replica) -> str:
    """A byte inside the first page block of the plan's largest LTX file (the CRC catches it)."""
    victim = max(_plan_keys(replica), key=lambda k: len(read_object(replica, k)))
    data = bytearray(read_object(replica, victim))
    _pgno, offset, size = _index_of(bytes(data))[0]
    data[offset + size - 1] ^= 0x01
    write_object(replica, victim, bytes(data))
    return victim


def ltx_truncated(replica) -> str:
    victim = _plan_keys(replica)[-1]
    data = read_object(replica, victim)
    write_object(replica, victim, data[: len(data) // 2])
    return victim


def ltx_gap(replica) -> None:
    """Every file holding one TXID in the middle of the chain deleted."""
    _txid, holders = _l0_gap_candidate(replica)
    for key in holders:
        delete_object(replica, key)


V5_CASES = {
    "page-flipped": (ltx_page_flipped, "corrupt_object"),
    "truncated": (ltx_truncated, "corrupt_object"),
}


@pytest.mark.parametrize("name", V5_CASES)
def test_restore_job_writes_nothing_for_a_damaged_v5_replica(name, v5_file_replica, clone, tmp_path):
    damage, kind = V5_CASES[name]
    replica = clone(v5_file_replica)
    key = damage(replica)
    out = tmp_path / "out" / "restored.db"
    out.parent.mkdir()
    assert_nothing_written(restore_job(replica, out), out, kind, key, replica)


def test_restore_job_writes_nothing_for_a_v5_chain_with_a_gap(v5_file_replica, clone, tmp_path):
    """The chain up to the gap restores soundly, but it is not the newest state: nothing at OUT."""
    replica = clone(v5_file_replica)
    ltx_gap(replica)
    out = tmp_path / "out" / "restored.db"
    out.parent.mkdir()
    proc = restore_job(replica, out)
    assert proc.returncode == EXIT_FAILED, proc.stderr[-3000:]
    assert "[wal_gap]" in proc.stderr and f"nothing written to {out}" in proc.stderr
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("fixture, damage", [("v3_file_replica", "C-newest-index-frame"),
                                             ("v5_file_replica", "page-flipped")])
def test_damaged_restore_with_force_leaves_the_existing_out_untouched(fixture, damage, request, clone, tmp_path):
    replica = clone(request.getfixturevalue(fixture))
    if replica.is_v3:
        V3_CASES[damage].damage(replica, layout(replica))
    else:
        V5_CASES[damage][0](replica)
    out = tmp_path / "restored.db"
    out.write_bytes(b"yesterday's good restore")
    proc = restore_job(replica, out, "--force")
    assert proc.returncode == EXIT_FAILED, proc.stderr[-3000:]
    assert out.read_bytes() == b"yesterday's good restore"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restored.db"]
