"""The v0.5 restore's fast paths give the answers of the careful ones.

The LTX decoder reads buffered block pages a batch at a time and compares the page index
with the frames' canonical encoding; the writer marks coverage a run at a time and writes
on a thread of its own. Each is checked here against the page-at-a-time (or bit-at-a-time,
or inline) way it replaces, and for the checks it must still make.
"""
from __future__ import annotations

import io
import random
import struct
import threading

import pytest

from lib.errors import CorruptObject
from lib.litestream.v5 import ltx
from lib.litestream.v5.restore import _PageWriter
from lib.litestream.v5.stream import uvarint
from lib.litestream.v5.writeback import WriteBehind
from tests.test_ltx import KEY, _frames_of, _uvarint, encode_ltx, page_bytes


class _Pieces(io.RawIOBase):
    """The object in pieces of random sizes, as a download may hand it over."""

    def __init__(self, data: bytes):
        self._data, self._pos, self._rng = data, 0, random.Random(len(data))

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._rng.randrange(1, 9000) if size < 0 else min(size, self._rng.randrange(1, 9000))
        piece = self._data[self._pos:self._pos + n]
        self._pos += len(piece)
        return piece


def _decode(data: bytes, careful: bool):
    decoder = ltx.LtxDecoder(_Pieces(data), KEY)
    if careful:
        decoder._batch = lambda *args: []  # every page through _careful_page
    pages = list(decoder.pages())
    return pages, decoder.trailer, decoder.page_count


@pytest.mark.parametrize("encoding", ["block", "mixed", "frame"])
@pytest.mark.parametrize("snapshot", [True, False])
def test_batched_decoding_equals_page_at_a_time(encoding, snapshot):
    rng = random.Random(7)
    if snapshot:
        pages = {p: page_bytes(p, 1024) if p % 3 else rng.randbytes(1024) for p in range(1, 3001)}
        header = dict(flags=0, min_txid=1, max_txid=1, commit=3000, page_size=1024)
        rolling = 0
        for pgno, page in pages.items():
            rolling ^= ltx.page_checksum(pgno, page)
        post_apply = rolling | ltx.CHECKSUM_FLAG
    else:
        pgnos = sorted(rng.sample(range(1, 5000), 700))
        pages = {p: page_bytes(p, 1024) for p in pgnos}
        header = dict(min_txid=5, max_txid=5, commit=5000, page_size=1024)
        post_apply = 0
    data = encode_ltx(pages, encoding=encoding, post_apply=post_apply, **header)
    fast = _decode(data, careful=False)
    assert fast == _decode(data, careful=True)
    assert dict(fast[0]) == pages


def test_snapshot_checksum_is_still_checked_in_batches():
    pages = {p: page_bytes(p, 1024) for p in range(1, 600)}
    data = encode_ltx(pages, flags=0, min_txid=1, max_txid=1, commit=599, page_size=1024,
                      post_apply=0x1234 | ltx.CHECKSUM_FLAG)
    with pytest.raises(CorruptObject, match="does not match the snapshot's pages"):
        _decode(data, careful=False)


@pytest.mark.parametrize("damage, problem", [
    (lambda b, at: b[:at + 4] + b"\x00\x02" + b[at + 6:], "undefined flags 0x0002"),
    (lambda b, at: b[:at + 6] + struct.pack(">I", 0) + b[at + 10:], "claims 0 compressed bytes"),
    (lambda b, at: b[:at] + struct.pack(">I", 9999) + b[at + 4:], "beyond the commit size"),
    (lambda b, at: b[:at + 10] + b"\xff" * 8 + b[at + 18:], "not a valid LZ4 block|decompresses to"),
])
def test_a_bad_page_deep_in_a_batch_is_named_as_page_at_a_time(damage, problem):
    pages = {p: page_bytes(p, 1024) for p in range(1, 400)}
    data = encode_ltx(pages, min_txid=3, max_txid=3, commit=399, page_size=1024)
    pgno, offset, _ = _frames_of(data)[250]
    with pytest.raises(CorruptObject, match=problem):
        _decode(damage(data, offset), careful=False)


def _index(frames, override=None) -> bytes:
    out = bytearray()
    for n, entry in enumerate(frames, 1):
        for value in (override or {}).get(n, entry):
            out += _uvarint(value)
    return bytes(out + b"\x00")


def test_index_mismatch_beyond_the_first_compared_piece_names_its_entry():
    pages = {p: page_bytes(p, 512) for p in range(1, 5001)}
    base = dict(min_txid=3, max_txid=3, commit=5000, page_size=512)
    frames = _frames_of(encode_ltx(pages, **base))
    pgno, offset, size = frames[4499]
    data = encode_ltx(pages, index_override=_index(frames, {4500: (pgno, offset, size + 1)}), **base)
    with pytest.raises(CorruptObject, match=r"page index entry 4500 \(page 4500, offset \d+, size \d+\) does not match"):
        _decode(data, careful=False)


def test_an_index_in_another_valid_encoding_is_accepted():
    pages = {p: page_bytes(p, 512) for p in range(1, 5001)}
    base = dict(min_txid=3, max_txid=3, commit=5000, page_size=512)
    canonical = encode_ltx(pages, **base)
    index = _index(_frames_of(canonical))
    # entry 4700's page number spelled with a redundant continuation byte, as Go's Uvarint accepts
    at = len(_index(_frames_of(canonical)[:4699])) - 1
    assert index[at] == 4700 & 0x7F | 0x80
    longer = index[:at + 1] + bytes([index[at + 1] | 0x80, 0x00]) + index[at + 2:]
    decoded, _, count = _decode(encode_ltx(pages, index_override=longer, **base), careful=False)
    assert count == 5000 and dict(decoded) == pages


def test_uvarint_is_gos_encoding():
    values = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**35 + 5, 2**63, 2**64 - 1]
    values += random.Random(3).sample(range(2**40), 200)
    assert [uvarint(v) for v in values] == [_uvarint(v) for v in values]


def test_coverage_is_marked_a_run_at_a_time_as_page_by_page(tmp_path):
    rng = random.Random(11)
    writer = _PageWriter(tmp_path / "x.db")
    try:
        writer.page_size = 4096
        marked = set()
        for _ in range(300):
            start, count = rng.randrange(1, 5000), rng.choice([1, 2, 7, 8, 9, 63, 64, 300])
            writer._mark_range(start, count)
            marked.update(range(start, start + count))
        bits = {n + 1 for n in range(len(writer._bitmap) * 8) if writer._bitmap[n >> 3] >> (n & 7) & 1}
        assert bits == marked
    finally:
        writer.close()


def test_write_behind_runs_writes_in_order_and_raises_the_first_error():
    done: list[int] = []
    writes = WriteBehind(limit=10)
    try:
        for n in range(50):
            writes.submit(lambda n=n: done.append(n), 4)
        writes.drain()
        assert done == list(range(50))

        def fail():
            raise OSError(28, "No space left on device")

        writes.submit(fail, 4)
        with pytest.raises(OSError, match="No space left"):
            writes.drain()
        with pytest.raises(OSError, match="No space left"):
            writes.submit(lambda: done.append(99), 4)
        assert 99 not in done
    finally:
        writes.close()


def test_write_behind_close_waits_for_the_write_under_way_and_drops_the_rest():
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def slow():
        started.set()
        release.wait(10)
        done.append("slow")

    writes = WriteBehind(limit=1 << 20)
    writes.submit(slow, 1)
    writes.submit(lambda: done.append("queued"), 1)
    assert started.wait(10)
    closer = threading.Thread(target=writes.close)
    closer.start()
    release.set()
    closer.join(10)
    assert not closer.is_alive() and done == ["slow"]


def test_a_stage_written_apart_holds_up_neither_later_writes_nor_order_but_one_at_a_time():
    """A page stage (``apart``) being written does not stop the decoder queueing the next
    runs (they wait behind it, in order); a second stage waits until the first is written."""
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def stage(name):
        def write():
            started.set()
            release.wait(10)
            done.append(name)
        return write

    writes = WriteBehind(limit=8)
    try:
        writes.submit(stage("stage 1"), 16 << 20, apart=True)
        assert started.wait(10)
        for n in range(3):  # under the limit: queued at once while the stage is under way
            writes.submit(lambda n=n: done.append(f"run {n}"), 4)
        second = threading.Thread(target=writes.submit, args=(lambda: done.append("stage 2"), 16 << 20),
                                  kwargs={"apart": True})
        second.start()
        second.join(0.2)  # not a timing assertion: only gives a wrongly unblocked submit the chance to return
        assert second.is_alive() and done == []
        release.set()
        second.join(10)
        assert not second.is_alive()
        writes.drain()
        assert done == ["stage 1", "run 0", "run 1", "run 2", "stage 2"]
    finally:
        release.set()
        writes.close()
