"""The LTX decoder: real Litestream 0.5.17 files, both page encodings, and damage.

``encode_ltx`` below is a small writer for the format (spec section 2), used to build
files Litestream would not write (legacy frame encoding, broken rules); it is also
imported by ``tests/test_restore_v5.py``.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import anycrc
import lz4.block
import lz4.frame
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.errors import CorruptObject
from lib.litestream.sqlite import lock_pgno
from lib.litestream.v5.header import CHECKSUM_FLAG, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, crc64, page_checksum, parse_header
from lib.litestream.v5.ltx import CRC64_CHECK, PAGE_FLAG_SIZE, LtxDecoder, lz4_block_bound, verify_file

KEY = "ltx/0/0000000000000002-0000000000000002.ltx"


# ----------------------------------------------------------------------------- writer


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_header(*, flags=HEADER_FLAG_NO_CHECKSUM, page_size=4096, commit=1, min_txid=1, max_txid=1,
                  timestamp=1_700_000_000_000, pre_apply=0, wal_offset=0, wal_size=0, salt1=0, salt2=0,
                  node_id=0, magic=b"LTX1") -> bytes:
    return struct.pack(">4sIIIQQqQqqIIQ20s", magic, flags, page_size, commit, min_txid, max_txid, timestamp,
                       pre_apply, wal_offset, wal_size, salt1, salt2, node_id, bytes(20))


def encode_ltx(pages: dict[int, bytes], *, encoding: str = "block", post_apply: int = 0,
               index_override: bytes | None = None, **header) -> bytes:
    """An LTX file holding ``pages`` (pgno -> page bytes), in ``block`` or ``frame`` encoding
    (or ``mixed``: alternating), with a correct page index and file checksum."""
    raw_header = encode_header(**header)
    body = bytearray(raw_header)
    crc = crc64(raw_header)
    index = bytearray()
    for n, pgno in enumerate(sorted(pages)):
        page = pages[pgno]
        offset = len(body)
        use_block = encoding == "block" or (encoding == "mixed" and n % 2 == 0)
        if use_block:
            block = lz4.block.compress(page, store_size=False)
            frame_head = struct.pack(">IHI", pgno, PAGE_FLAG_SIZE, len(block))
            body += frame_head + block
        else:
            frame_head = struct.pack(">IH", pgno, 0)
            body += frame_head + lz4.frame.compress(page, block_linked=False, content_checksum=True)
        crc = crc64(page, crc64(frame_head, crc))
        index += _uvarint(pgno) + _uvarint(offset) + _uvarint(len(body) - offset)
    index += _uvarint(0)
    if index_override is not None:
        index = bytearray(index_override)
    tail = bytes(6) + bytes(index) + struct.pack(">QQ", len(index), post_apply)
    crc = crc64(tail, crc)
    return bytes(body) + tail + struct.pack(">Q", crc | CHECKSUM_FLAG)


def page_bytes(pgno: int, page_size: int = 4096, fill: bytes | None = None) -> bytes:
    """A recognisable, partly compressible page."""
    stem = fill if fill is not None else f"page {pgno} ".encode()
    return (stem * (page_size // len(stem) + 1))[:page_size]


def decode(data: bytes, key: str = KEY, expected=None) -> tuple[LtxDecoder, list[tuple[int, bytes]]]:
    decoder = LtxDecoder(io.BytesIO(data), key, expected)
    return decoder, list(decoder.pages())


def problem_of(data: bytes, expected=None) -> str:
    with pytest.raises(CorruptObject) as info:
        decode(data, expected=expected)
    assert info.value.key == KEY
    return info.value.problem


def _real_ltx_files(replica_dir: Path) -> list[Path]:
    return sorted(replica_dir.glob("ltx/*/*.ltx"))


def _frames_of(data: bytes) -> list[tuple[int, int, int]]:
    """(pgno, offset, size) of every page frame, from the file's own page index."""
    (index_size,) = struct.unpack(">Q", data[-24:-16])
    index = data[len(data) - 24 - index_size:len(data) - 24]
    values, value, shift = [], 0, 0
    for byte in index:
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            values.append(value)
            value = shift = 0
    return [tuple(values[i:i + 3]) for i in range(0, len(values) - 1, 3)]


# ----------------------------------------------------------------------------- checksum


def test_crc64_go_iso_model_exists_and_has_the_catalogue_check_value():
    assert anycrc.Model("CRC64-GO-ISO").calc(b"123456789") == 0xB90956C775A41001 == CRC64_CHECK
    assert crc64(b"6789", crc64(b"12345")) == CRC64_CHECK  # incremental, as the decoder uses it


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("encoding", ["block", "frame", "mixed"])
def test_decoder_yields_every_page_in_both_encodings(encoding):
    pages = {pgno: page_bytes(pgno) for pgno in range(1, 6)}
    data = encode_ltx(pages, encoding=encoding, commit=5)
    decoder, decoded = decode(data)
    assert decoded == sorted(pages.items())
    assert decoder.page_count == 5
    assert decoder.trailer.post_apply_checksum == 0
    assert decoder.trailer.file_checksum & CHECKSUM_FLAG


def test_incompressible_pages_decode():
    import os
    pages = {1: os.urandom(4096), 2: os.urandom(4096)}
    for encoding in ("block", "frame"):
        _, decoded = decode(encode_ltx(pages, encoding=encoding, commit=2))
        assert dict(decoded) == pages


def test_empty_file_is_valid():
    decoder, decoded = decode(encode_ltx({}, commit=3, min_txid=2, max_txid=2))
    assert decoded == [] and decoder.page_count == 0


def test_decoder_reads_in_bounded_chunks_and_tolerates_short_reads():
    pages = {pgno: page_bytes(pgno) for pgno in range(1, 4)}
    data = encode_ltx(pages, commit=3, encoding="mixed")

    class Trickle(io.RawIOBase):
        def __init__(self):
            self.buf = io.BytesIO(data)
            self.sizes = []

        def readable(self):
            return True

        def read(self, size=-1):
            self.sizes.append(size)
            return self.buf.read(min(size, 7))  # never more than 7 bytes per call

    reader = Trickle()
    decoder = LtxDecoder(reader, KEY)
    assert dict(decoder.pages()) == pages
    assert all(0 < size <= 1 << 20 for size in reader.sizes)


def test_real_litestream_files_decode_and_checksum(v5_file_replica):
    files = _real_ltx_files(v5_file_replica.replica_dir)
    assert len(files) >= 3
    for path in files:
        with open(path, "rb", buffering=0) as reader:
            decoder = verify_file(reader, str(path), _txids_of(path))
        header = decoder.header
        assert header.flags == HEADER_FLAG_NO_CHECKSUM
        assert header.page_size == v5_file_replica.page_size
        assert decoder.trailer.post_apply_checksum == 0


def _txids_of(path: Path) -> tuple[int, int]:
    lo, hi = path.stem.split("-")
    return int(lo, 16), int(hi, 16)


def test_real_files_use_the_block_encoding(v5_file_replica):
    data = _real_ltx_files(v5_file_replica.replica_dir)[0].read_bytes()
    (flags,) = struct.unpack(">H", data[HEADER_SIZE + 4:HEADER_SIZE + 6])
    assert flags == PAGE_FLAG_SIZE  # Litestream 0.5.16+ writes size + raw LZ4 block


def test_real_file_reencoded_as_legacy_lz4_frames_gives_the_same_pages(v5_file_replica):
    """Litestream 0.5.0-0.5.15 wrote each page as an LZ4 frame (page flags 0)."""
    for path in _real_ltx_files(v5_file_replica.replica_dir)[:4]:
        data = path.read_bytes()
        with open(path, "rb") as reader:
            original = LtxDecoder(reader, str(path))
            pages = dict(original.pages())
        h = original.header
        reencoded = encode_ltx(pages, encoding="frame", page_size=h.page_size, commit=h.commit,
                               min_txid=h.min_txid, max_txid=h.max_txid, timestamp=h.timestamp_ms,
                               wal_offset=h.wal_offset, wal_size=h.wal_size, salt1=h.wal_salt1,
                               salt2=h.wal_salt2)
        assert reencoded[HEADER_SIZE + 4:HEADER_SIZE + 6] == b"\x00\x00"  # page flags 0: a frame
        assert reencoded[HEADER_SIZE + 6:HEADER_SIZE + 10] == b"\x04\x22\x4d\x18"  # LZ4 frame magic
        decoder, decoded = decode(reencoded)
        assert dict(decoded) == pages
        assert decoder.header == h
        assert data[:HEADER_SIZE] == reencoded[:HEADER_SIZE]


# ----------------------------------------------------------------------------- header rules


@pytest.mark.parametrize("fields, problem", [
    ({"magic": b"LTX0"}, "not an LTX file"),
    ({"flags": 0x3}, "undefined bits"),
    ({"flags": 0x1 << 8}, "undefined bits"),
    ({"page_size": 1000}, "page size 1000"),
    ({"page_size": 256}, "page size 256"),
    ({"page_size": 131072}, "page size 131072"),
    ({"min_txid": 0}, "contains zero"),
    ({"max_txid": 0}, "contains zero"),
    ({"min_txid": 5, "max_txid": 4}, "above max TXID"),
    ({"wal_offset": -1}, "negative"),
    ({"wal_size": -32, "wal_offset": 32}, "negative"),
    ({"salt1": 7}, "salts but no WAL offset"),
    ({"wal_size": 4120}, "WAL size but no WAL offset"),
    ({"pre_apply": 1 << 63 | 5}, "NoChecksum file"),
    ({"flags": 0, "min_txid": 1, "pre_apply": 1 << 63 | 5}, "snapshot header has pre-apply"),
    ({"flags": 0, "min_txid": 2, "max_txid": 2, "pre_apply": 5}, "lacks the checksum flag"),
])
def test_invalid_headers_are_rejected(fields, problem):
    with pytest.raises(CorruptObject) as info:
        parse_header(encode_header(**fields), KEY)
    assert problem in info.value.problem


def test_valid_header_fields_are_decoded():
    h = parse_header(encode_header(page_size=512, commit=35, min_txid=0x1A2, max_txid=0x1A2, wal_offset=32,
                                   wal_size=4120, salt1=0x06F665EA, salt2=0x9CDD768F), KEY)
    assert (h.page_size, h.commit, h.min_txid, h.max_txid) == (512, 35, 0x1A2, 0x1A2)
    assert (h.wal_offset, h.wal_size, h.wal_salt1, h.wal_salt2) == (32, 4120, 0x06F665EA, 0x9CDD768F)
    assert not h.is_snapshot and not h.has_checksums


def test_short_header_is_truncation():
    data = encode_ltx({1: page_bytes(1)})
    assert problem_of(data[:40]) == "truncated after 40 bytes (in header)"


def test_header_txids_must_match_the_name():
    data = encode_ltx({2: page_bytes(2)}, commit=2, min_txid=0x1F, max_txid=0x1F)
    problem = problem_of(data, expected=(0x20, 0x20))
    assert problem == ("header TXIDs 0x1f-0x1f do not match name "
                       "0000000000000020-0000000000000020")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=120))
def test_header_parser_raises_only_corrupt_object_on_garbage(data):
    try:
        header = parse_header(data, KEY)
    except CorruptObject as exc:
        assert exc.key == KEY and exc.problem
    else:
        assert 512 <= header.page_size <= 65536 and 1 <= header.min_txid <= header.max_txid


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(page_size=st.sampled_from([512, 1024, 4096]), commit=st.integers(0, 2**32 - 1),
       min_txid=st.integers(0, 2**64 - 1), max_txid=st.integers(0, 2**64 - 1),
       flags=st.sampled_from([0, 2, 3]), wal_offset=st.integers(-(2**63), 2**63 - 1),
       wal_size=st.integers(-(2**63), 2**63 - 1), salt1=st.integers(0, 2**32 - 1),
       pre_apply=st.integers(0, 2**64 - 1))
def test_header_parser_on_structured_garbage(page_size, commit, min_txid, max_txid, flags, wal_offset,
                                             wal_size, salt1, pre_apply):
    raw = encode_header(page_size=page_size, commit=commit, min_txid=min_txid, max_txid=max_txid, flags=flags,
                        wal_offset=wal_offset, wal_size=wal_size, salt1=salt1, pre_apply=pre_apply)
    try:
        parse_header(raw, KEY)
    except CorruptObject:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decoder_raises_only_corrupt_object_on_garbage_after_a_valid_header(tail):
    data = encode_header(commit=10, min_txid=2, max_txid=2) + tail
    try:
        decode(data)
    except CorruptObject:
        pass


# ----------------------------------------------------------------------------- page rules


def test_pages_must_ascend():
    data = encode_ltx({1: page_bytes(1), 2: page_bytes(2)}, commit=3, min_txid=2, max_txid=2)
    first = HEADER_SIZE
    frames = _frames_of(data)
    # renumber the second frame as page 1: page numbers no longer ascend
    second = frames[1][1]
    broken = bytearray(data)
    broken[second:second + 4] = struct.pack(">I", 1)
    assert "page 1 follows page 1" in problem_of(bytes(broken))
    assert first == frames[0][1]


def test_page_beyond_commit_is_rejected():
    data = encode_ltx({7: page_bytes(7)}, commit=5, min_txid=2, max_txid=2)
    assert problem_of(data) == "page 7 is beyond the commit size of 5 pages"


def test_lock_page_is_rejected():
    lock = lock_pgno(512)
    assert lock == 2097153
    data = encode_ltx({lock: page_bytes(lock, 512)}, page_size=512, commit=lock + 1, min_txid=2, max_txid=2)
    assert problem_of(data) == f"page {lock} is the SQLite lock page, which is never stored"


def test_snapshot_must_hold_every_page():
    data = encode_ltx({1: page_bytes(1), 3: page_bytes(3)}, commit=3)
    assert problem_of(data) == "snapshot lacks page 2 (next page is 3)"
    data = encode_ltx({1: page_bytes(1), 2: page_bytes(2)}, commit=3)
    assert problem_of(data) == "snapshot lacks page 3 (commit is 3 pages)"


def test_undefined_page_flag_is_rejected():
    data = bytearray(encode_ltx({1: page_bytes(1)}))
    data[HEADER_SIZE + 4:HEADER_SIZE + 6] = struct.pack(">H", 3)
    assert problem_of(bytes(data)) == "page 1 header has undefined flags 0x0003"


def test_page_that_decompresses_short_names_both_sizes():
    short_block = lz4.block.compress(page_bytes(7)[:4000], store_size=False)
    frame = struct.pack(">IHI", 7, PAGE_FLAG_SIZE, len(short_block)) + short_block
    data = _splice_frames(encode_header(commit=9, min_txid=2, max_txid=2), [frame])
    assert problem_of(data) == "page 7 decompresses to 4000 bytes, expected 4096"


def test_page_that_decompresses_too_long_is_rejected():
    long_block = lz4.block.compress(page_bytes(7) + page_bytes(7)[:100], store_size=False)
    frame = struct.pack(">IHI", 7, PAGE_FLAG_SIZE, len(long_block)) + long_block
    data = _splice_frames(encode_header(commit=9, min_txid=2, max_txid=2), [frame])
    assert "page 7 is not a valid LZ4 block of at most 4096 bytes" == problem_of(data)


def test_absurd_compressed_size_is_refused_before_reading():
    frame = struct.pack(">IHI", 3, PAGE_FLAG_SIZE, 0xFFFFFFF0)
    data = encode_header(commit=9, min_txid=2, max_txid=2) + frame
    assert problem_of(data) == f"page 3 claims 4294967280 compressed bytes, outside 1..{lz4_block_bound(4096)} " \
                               f"for 4096-byte pages"


def test_frame_page_larger_than_a_page_is_refused():
    big = lz4.frame.compress(bytes(8192))
    data = _splice_frames(encode_header(commit=9, min_txid=2, max_txid=2), [struct.pack(">IH", 3, 0) + big])
    assert problem_of(data) == "page 3 decompresses to more than 4096 bytes"


def test_frame_page_that_never_ends_is_refused():
    broken = lz4.frame.compress(page_bytes(3))[:-8]  # no end mark, no content checksum
    data = encode_header(commit=9, min_txid=2, max_txid=2) + struct.pack(">IH", 3, 0) + broken
    assert problem_of(data).startswith("truncated after")


def test_corrupt_lz4_frame_is_reported():
    frame = bytearray(lz4.frame.compress(page_bytes(3), content_checksum=True))
    frame[-1] ^= 0xFF  # content checksum
    data = _splice_frames(encode_header(commit=9, min_txid=2, max_txid=2), [struct.pack(">IH", 3, 0) + frame])
    assert problem_of(data).startswith("page 3 is not a valid LZ4 frame")


def _splice_frames(header: bytes, frames: list[bytes]) -> bytes:
    """Raw frames after a header, then a marker, an empty index and a zero trailer (only
    good enough to reach the page checks)."""
    return header + b"".join(frames) + bytes(6) + b"\x00" + struct.pack(">QQQ", 1, 0, 0)


# ----------------------------------------------------------------------------- index, trailer


def test_index_must_match_the_frames():
    pages = {1: page_bytes(1), 2: page_bytes(2)}
    good = encode_ltx(pages, commit=2)
    frames = _frames_of(good)
    wrong = b"".join(_uvarint(v) for v in (1, frames[0][1], frames[0][2], 2, frames[1][1] + 1, frames[1][2], 0))
    data = encode_ltx(pages, commit=2, index_override=wrong)
    assert problem_of(data).startswith("page index entry 2 (page 2, offset")


def test_index_varint_split_in_two_is_reported_as_an_extra_entry():
    """A byte that lost its continuation bit splits a varint: the index then has one value too
    many, which is the problem named, not the entry that now reads wrong."""
    pages = {1: page_bytes(1), 2: page_bytes(2), 3: page_bytes(3)}
    frames = _frames_of(encode_ltx(pages, commit=3))
    assert frames[1][1] >= 128  # the second frame's offset takes two varint bytes
    index = bytearray(b"".join(_uvarint(v) for frame in frames for v in frame) + b"\x00")
    split = len(_uvarint(frames[0][0]) + _uvarint(frames[0][1]) + _uvarint(frames[0][2]) + _uvarint(frames[1][0]))
    index[split] &= 0x7F
    assert problem_of(encode_ltx(pages, commit=3, index_override=bytes(index))) == \
        "page index lists more than the 3 pages in the file"


def test_index_with_missing_or_extra_entries_is_rejected():
    pages = {1: page_bytes(1), 2: page_bytes(2)}
    frames = _frames_of(encode_ltx(pages, commit=2))
    short = b"".join(_uvarint(v) for v in (*frames[0], 0))
    assert problem_of(encode_ltx(pages, commit=2, index_override=short)) == \
        "page index lists 1 pages, the file has 2"
    extra = b"".join(_uvarint(v) for v in (*frames[0], *frames[1], 9, 9, 9, 0))
    assert problem_of(encode_ltx(pages, commit=2, index_override=extra)) == \
        "page index lists more than the 2 pages in the file"


def test_index_size_field_must_match():
    data = bytearray(encode_ltx({1: page_bytes(1)}))
    data[-24:-16] = struct.pack(">Q", 99)
    assert problem_of(bytes(data)).startswith("page index size field says 99 bytes")


def test_file_checksum_mismatch():
    data = bytearray(encode_ltx({1: page_bytes(1)}))
    data[-1] ^= 0x01
    assert problem_of(bytes(data)).startswith("file checksum mismatch: trailer has 0x")


def test_flipped_byte_in_compressed_page_is_caught():
    page = page_bytes(1, fill=bytes(range(256)))
    data = bytearray(encode_ltx({1: page}))
    literal = data.index(bytes(range(40, 60)))  # inside the block's first literal run
    data[literal] ^= 0x55
    assert problem_of(bytes(data)).startswith("file checksum mismatch")


def test_post_apply_checksum_on_nochecksum_file_is_rejected():
    data = encode_ltx({1: page_bytes(1)}, post_apply=CHECKSUM_FLAG | 1)
    assert "post-apply checksum" in problem_of(data)


def test_checksum_tracked_snapshot_verifies_its_rolling_checksum():
    pages = {1: page_bytes(1), 2: page_bytes(2)}
    rolling = CHECKSUM_FLAG
    for pgno, page in pages.items():
        rolling ^= page_checksum(pgno, page)
    rolling |= CHECKSUM_FLAG
    decode(encode_ltx(pages, commit=2, flags=0, post_apply=rolling))
    assert "does not match the snapshot's pages" in problem_of(
        encode_ltx(pages, commit=2, flags=0, post_apply=rolling ^ 1))


def test_data_after_trailer_is_rejected():
    data = encode_ltx({1: page_bytes(1)}) + b"x"
    assert problem_of(data).startswith("unexpected data after the trailer")


def test_every_truncation_is_reported_as_truncation():
    data = encode_ltx({1: page_bytes(1), 2: page_bytes(2), 3: page_bytes(3)}, commit=3, encoding="mixed")
    for size in range(len(data)):
        problem = problem_of(data[:size])
        assert problem.startswith(f"truncated after {size} bytes"), (size, problem)


def test_real_file_truncated_or_flipped_anywhere_is_corrupt(v5_file_replica):
    path = max(_real_ltx_files(v5_file_replica.replica_dir), key=lambda p: p.stat().st_size)
    data = path.read_bytes()
    for cut in range(0, len(data), max(1, len(data) // 97)):
        with pytest.raises(CorruptObject, match=f"truncated after {cut} bytes"):
            verify_file(io.BytesIO(data[:cut]), str(path))
    with open(path, "rb") as reader:
        pages = list(LtxDecoder(reader, str(path)).pages())
    for offset in range(0, len(data), max(1, len(data) // 61)):
        flipped = bytearray(data)
        flipped[offset] ^= 0x10
        try:
            decoded = list(LtxDecoder(io.BytesIO(bytes(flipped)), str(path)).pages())
        except CorruptObject:
            continue
        # LZ4 can encode the same bytes two ways (a match offset 1 or 2 into a run of
        # zeros): a flip that changes nothing decoded is not corruption.
        assert decoded == pages, offset
