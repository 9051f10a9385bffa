"""Restore a Litestream v0.5 (LTX) replica natively: apply the plan's files in order into the output file.

Spec: ``docs/formats/litestream-v0.5-ltx.md`` section 3. :func:`restore_v5` takes the
plan from :func:`lib.litestream.v5.plan.plan_v5`, downloads it through the download pool,
streams every page straight into the output file, and returns a :class:`RestoreOutcome`
whose file is byte-identical to ``litestream restore`` (0.5.17) of the same target.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lib.errors import CorruptObject
from lib.litestream.layout import FORMAT_V5
from lib.litestream.outcome import DEFAULT_MAX_RESTORE_BYTES, RestoreOutcome, RestoreTarget, file_sha256
from lib.litestream.pages import STAGE_LIMIT_BYTES, WRITE_RUN_PAGES, PageFile, PageStage
from lib.litestream.sqlite import lock_pgno
from lib.litestream.v5.layout import LtxFile, V5State, with_header_times
from lib.litestream.v5.ltx import LtxDecoder, verify_file
from lib.litestream.v5.plan import plan_v5
from lib.litestream.v5.writeback import WriteBehind, start_writeback
from lib.report.model import Finding, error
from lib.storage.base import ObjectStore
from lib.storage.pool import PREFETCH_OBJECTS, Prefetcher

log = logging.getLogger(__name__)


WRITEBACK_BYTES = 32 << 20  # the kernel is asked to start writing pages out after each this many

STAGE_MIN_RUN = 64  # shorter runs of consecutive pages are staged and written sorted

BITMAP_SCAN_BYTES = 1 << 20  # coverage bitmap bytes examined at a time (no copy of the whole bitmap)

# bytes.translate table: a byte with all eight pages written -> 0, any other -> 1
_NOT_FULL = bytes(0 if b == 0xFF else 1 for b in range(256))


class _PageWriter:
    """Writes pages at ``(pgno - 1) * page_size`` and remembers which were written.

    Consecutive pages are gathered into runs of up to ``WRITE_RUN_PAGES`` and written
    with one ``pwritev``; scattered pages are staged and written in page order; writes
    keep arrival order, so the last writer of a page wins. The writes run on a thread of
    their own (:class:`WriteBehind`), overlapping the decoding of the next pages; a write's
    error is raised by a later call, at the latest by :meth:`finish`. The bitmap holds one bit per
    page written (32 MiB per TiB of 4 KiB pages), grown as pages arrive; the lock page is
    never written and stays a hole of zeros.
    """

    def __init__(self, path: Path):
        self.file = PageFile.create(path)
        self._writes = WriteBehind()
        self._unsynced = 0  # bytes queued since the last writeback was started
        self._stage = PageStage()
        self._bitmap = bytearray()
        self._run: list[bytes] = []
        self._run_start = 0

    @property
    def page_size(self) -> int:
        return self._stage.page_size

    @page_size.setter
    def page_size(self, size: int) -> None:
        self._stage.page_size = size

    def write(self, pgno: int, page: bytes) -> None:
        self.write_run(pgno, [page])

    def write_run(self, start: int, pages: list[bytes]) -> None:
        """Write ``pages`` at pages ``start``, ``start + 1``, ...; a run continuing the one
        gathered joins it (up to ``WRITE_RUN_PAGES``)."""
        if start != self._run_start + len(self._run) or len(self._run) + len(pages) > WRITE_RUN_PAGES:
            self._end_run()
            self._run_start = start
        self._run += pages
        self._mark_range(start, len(pages))

    def _end_run(self) -> None:
        """A long run goes straight to disk; short runs (scattered pages of L0 files) are
        staged and written later in page order, ~4x cheaper than random 4 KiB writes."""
        if len(self._run) >= STAGE_MIN_RUN:
            self._write_stage()
            run, offset = self._run, (self._run_start - 1) * self.page_size
            self._submit(lambda: self.file.pwritev(run, offset), len(run) * self.page_size)
        else:
            for i, page in enumerate(self._run):
                self._stage.put(self._run_start + i, page)
            if self._stage.is_full():
                self._write_stage()
        self._run = []

    def _write_stage(self) -> None:
        """Hand the staged pages to the writer thread and stage anew."""
        stage, self._stage = self._stage, PageStage(self.page_size)
        self._submit(lambda: stage.write(self.file.pwritev), STAGE_LIMIT_BYTES, apart=True)

    def _submit(self, write, size: int, apart: bool = False) -> None:
        """Queue a write; after every ``WRITEBACK_BYTES`` queued, the start of their writeback
        (not for a file written around the page cache: its long runs are on disk already, and
        walking the file's cache for the few scattered pages costs more than it saves)."""
        self._writes.submit(write, size, apart=apart)
        self._unsynced += size
        if self._unsynced >= WRITEBACK_BYTES and not self.file.direct:
            self._unsynced = 0
            self._writes.submit(lambda: start_writeback(self.file.fd), 0)

    def flush(self) -> None:
        self._end_run()
        self._write_stage()

    def _mark_range(self, start: int, count: int) -> None:
        """Set the bits of pages ``start`` .. ``start + count - 1``: whole bytes at once."""
        first, last = start - 1, start + count - 2  # bit numbers
        if last >> 3 >= len(self._bitmap):
            need = (last >> 3) + 1 - len(self._bitmap)
            self._bitmap.extend(bytes(max(need, len(self._bitmap))))  # doubling amortises growth
        bitmap = self._bitmap
        lo, hi = first >> 3, last >> 3
        if lo == hi:
            bitmap[lo] |= (0xFF << (first & 7)) & (0xFF >> (7 - (last & 7)))
            return
        bitmap[lo] |= (0xFF << (first & 7)) & 0xFF
        bitmap[lo + 1:hi] = b"\xff" * (hi - lo - 1)
        bitmap[hi] |= 0xFF >> (7 - (last & 7))

    def first_missing(self, commit: int) -> int | None:
        """The lowest page in 1..commit (the lock page excepted) never written, or None.

        Scans the bitmap of pages written a piece at a time and never grows it: pages
        beyond it were never written, so a header claiming billions of pages costs nothing.
        """
        lock = lock_pgno(self.page_size)
        pgno = self._first_unwritten(1)
        if pgno == lock:
            pgno = self._first_unwritten(lock + 1)
        return pgno if pgno <= commit else None

    def _first_unwritten(self, start: int) -> int:
        """The lowest page at or after ``start`` never written."""
        bit = start - 1
        if bit >> 3 >= len(self._bitmap):
            return start
        byte = self._bitmap[bit >> 3]
        for k in range(bit & 7, 8):
            if not byte & (1 << k):
                return (bit >> 3) * 8 + k + 1
        view = memoryview(self._bitmap)
        for offset in range((bit >> 3) + 1, len(view), BITMAP_SCAN_BYTES):
            at = bytes(view[offset:offset + BITMAP_SCAN_BYTES]).translate(_NOT_FULL).find(1)
            if at >= 0:
                byte = view[offset + at]
                return (offset + at) * 8 + next(k for k in range(8) if not byte & (1 << k)) + 1
        return len(view) * 8 + 1

    def finish(self, commit: int) -> None:
        """Write what is gathered and cut the file to the final commit: pages above it
        are gone (VACUUM, shrink)."""
        self.flush()
        self._writes.drain()
        os.ftruncate(self.file.fd, commit * self.page_size)

    def close(self) -> None:
        """Stop the writer thread (a write under way ends first), then close the file."""
        try:
            self._writes.close()
        finally:
            self.file.close()


@dataclass
class _Applied:
    page_size: int = 0
    commit: int = 0
    max_txid: int = 0
    objects: int = 0


def _apply_plan(plan: list[LtxFile], writer: _PageWriter, fetch: Prefetcher, max_bytes: int) -> _Applied:
    """Apply every plan file in order; raise CorruptObject at the first bad one."""
    done = _Applied()
    for index, f in enumerate(plan):
        with fetch.reader(index) as reader:
            decoder = LtxDecoder(reader, f.key, (f.min_txid, f.max_txid))
            _check_sequence(f, decoder.header.page_size, done, plan[0])
            _check_ceiling(f, decoder.header.commit, decoder.header.page_size, max_bytes)
            writer.page_size = done.page_size = decoder.header.page_size
            for start, pages in decoder.runs():
                writer.write_run(start, pages)
        done.commit, done.max_txid = decoder.header.commit, f.max_txid
        done.objects += 1
    missing = writer.first_missing(done.commit)
    if missing is not None:
        raise CorruptObject(plan[-1].key, f"restored database lacks page {missing} of {done.commit}: "
                                          f"no file in the restore plan contains it")
    writer.finish(done.commit)
    return done


def _check_sequence(f: LtxFile, page_size: int, done: _Applied, first: LtxFile) -> None:
    """Page size equal across the chain; TXIDs contiguous (the chain starts at 1)."""
    if done.page_size and page_size != done.page_size:
        raise CorruptObject(f.key, f"page size {page_size} differs from {done.page_size} in {first.key}")
    prev = done.max_txid
    if not (f.min_txid <= prev + 1 and f.max_txid > prev):
        raise CorruptObject(f.key, f"TXIDs {f.min_txid:016x}-{f.max_txid:016x} do not continue "
                                   f"the chain ending at {prev:016x}")


def _check_ceiling(f: LtxFile, commit: int, page_size: int, max_bytes: int) -> None:
    """The header's commit (every page number is at most it) must fit the restore size ceiling."""
    if commit * page_size > max_bytes:
        raise CorruptObject(f.key, f"header commit of {commit} pages ({commit * page_size} bytes) is beyond "
                                   f"the restore size ceiling of {max_bytes} bytes")


def _corrupt_findings(exc: CorruptObject, plan: list[LtxFile], fetch: Prefetcher) -> list[Finding]:
    """The corrupt file's finding, plus one for every later plan file that is corrupt too
    (each is still downloaded and checked, never applied)."""
    findings = [_corrupt_finding(exc)]
    failed = next((i for i, f in enumerate(plan) if f.key == exc.key), len(plan) - 1)
    for index in range(failed + 1, len(plan)):
        f = plan[index]
        try:
            with fetch.reader(index) as reader:
                verify_file(reader, f.key, (f.min_txid, f.max_txid))
        except CorruptObject as later:
            findings.append(_corrupt_finding(later))
    return findings


def _corrupt_finding(exc: CorruptObject) -> Finding:
    return error("corrupt_object", f"LTX file {exc.key}: {exc.problem}", exc.key)


def restore_v5(store: ObjectStore, state: V5State, out_path: Path, target: RestoreTarget,
               workers: int = PREFETCH_OBJECTS, digest: bool = True,
               max_bytes: int = DEFAULT_MAX_RESTORE_BYTES) -> RestoreOutcome:
    """Restore ``target`` from a listed replica into ``out_path`` (created anew, never through a link).

    The file is byte-identical to ``litestream restore`` of the same target. Plan
    findings are returned as they are (a timestamp target first reads every file's header
    time, see :func:`with_header_times`); with a ``wal_gap`` the chain is still applied as far
    as it goes (``position`` says where), though Litestream would refuse. A corrupt LTX
    file (a header claiming more than ``max_bytes`` included) stops the apply: every
    corrupt file of the plan is reported as ``corrupt_object`` and the partial output is
    deleted (``path`` None).

    ``ObjectNotFound`` propagates (Litestream's compaction or retention removed a listed
    file: re-list and retry), as does ``StorageUnavailable``; the partial output is deleted.

    :param workers: objects downloaded at once (the one being applied included); each
        streams through a bounded queue of 1 MiB chunks.
    :param digest: fill ``outcome.sha256`` (a second read of the file; see ``file_sha256``).
    """
    outcome = RestoreOutcome(format=FORMAT_V5, last_backup_at=state.last_modified)
    if target.timestamp and state.files():
        state = with_header_times(store, state)
    plan, outcome.findings = plan_v5(state, target)
    if plan:
        _restore_plan(store, plan, Path(out_path), outcome, workers, max_bytes)
    if digest and outcome.path is not None:
        outcome.sha256 = file_sha256(outcome.path)
    return outcome


def _restore_plan(store: ObjectStore, plan: list[LtxFile], out_path: Path, outcome: RestoreOutcome,
                  workers: int, max_bytes: int) -> None:
    writer = _PageWriter(out_path)
    applied = None
    try:
        with Prefetcher(store, [f.info for f in plan], workers) as fetch:
            try:
                applied = _apply_plan(plan, writer, fetch, max_bytes)
            except CorruptObject as exc:
                outcome.findings += _corrupt_findings(exc, plan, fetch)
            finally:
                outcome.objects_read = fetch.objects_read
                outcome.bytes_downloaded = fetch.bytes_downloaded
    finally:
        writer.close()
        if applied is None:
            out_path.unlink(missing_ok=True)
    if applied is not None:
        _fill_outcome(outcome, out_path, applied)


def _fill_outcome(outcome: RestoreOutcome, path: Path, applied: _Applied) -> None:
    outcome.path = path
    outcome.position = f"{applied.max_txid:016x}"
    outcome.page_size = applied.page_size
    outcome.bytes = path.stat().st_size
    log.info("restored format=v0.5 txid=%s pages=%d page_size=%d bytes=%d objects=%d",
             outcome.position, applied.commit, applied.page_size, outcome.bytes, applied.objects)
