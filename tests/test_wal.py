"""WAL decoding: header validation and the vectorised, per-frame checksum verdicts."""
from __future__ import annotations

import random
import sqlite3
import struct

import pytest

from lib.litestream import sqlite
from lib.litestream.v3 import wal


def make_header(page_size: int, salts=(0x11111111, 0x22222222), big_endian: bool = False, seq: int = 3) -> bytes:
    magic = wal.WAL_MAGIC_BE if big_endian else wal.WAL_MAGIC_LE
    head = struct.pack(">6I", magic, wal.WAL_VERSION, page_size, seq, *salts)
    return head + struct.pack(">II", *wal.checksum_bytes(head, 0, 0, big_endian))


def make_wal(page_size: int, frames: int, *, big_endian: bool = False, seed: int = 1) -> bytes:
    """A WAL with ``frames`` random pages, checksummed with the slow reference function;
    every third frame commits."""
    rng = random.Random(seed)
    header = make_header(page_size, big_endian=big_endian)
    salts = header[16:24]
    s0, s1 = struct.unpack(">II", header[24:32])
    out = bytearray(header)
    for n in range(frames):
        page = rng.randbytes(page_size)
        head8 = struct.pack(">II", rng.randint(1, 50), n + 1 if n % 3 == 2 else 0)
        s0, s1 = wal.checksum_bytes(head8 + page, s0, s1, big_endian)
        out += head8 + salts + struct.pack(">II", s0, s1) + page
    return bytes(out)


def scan(data: bytes, page_size: int, seed="header"):
    header = wal.parse_wal_header(data[:32])
    start = (header.checksum1, header.checksum2) if seed == "header" else seed
    return wal.scan_frames(memoryview(data)[32:], page_size, header.salts, header.big_endian_checksums, start)


# --------------------------------------------------------------------------- header


def test_header_round_trip():
    header = wal.parse_wal_header(make_header(4096, salts=(5, 6), seq=9))
    assert (header.page_size, header.checkpoint_seq, header.salts) == (4096, 9, (5, 6))
    assert not header.big_endian_checksums


@pytest.mark.parametrize("offset,value,problem", [
    (0, 0x377F0684, "bad WAL magic"),
    (4, 3007001, "unsupported WAL format version"),
    (8, 1000, "invalid WAL page size"),
    (8, 256, "invalid WAL page size"),
])
def test_header_field_errors_name_the_field(offset, value, problem):
    head = bytearray(make_header(4096))
    head[offset : offset + 4] = struct.pack(">I", value)
    head[24:32] = struct.pack(">II", *wal.checksum_bytes(bytes(head[:24]), 0, 0, False))
    with pytest.raises(wal.WalFormatError, match=problem):
        wal.parse_wal_header(bytes(head))


def test_header_checksum_mismatch():
    head = bytearray(make_header(4096))
    head[17] ^= 1
    with pytest.raises(wal.WalFormatError, match="checksum mismatch"):
        wal.parse_wal_header(bytes(head))


def test_short_header():
    with pytest.raises(wal.WalFormatError, match="12 bytes"):
        wal.parse_wal_header(bytes(12))


@pytest.mark.parametrize("size,valid", [(256, False), (512, True), (1024, True), (3000, False), (65536, True),
                                        (131072, False)])
def test_page_sizes(size, valid):
    assert sqlite.is_valid_page_size(size) is valid


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize("page_size", [512, 4096, 65536])
@pytest.mark.parametrize("big_endian", [False, True])
def test_sound_wal_matches_the_reference_checksum(page_size, big_endian):
    data = make_wal(page_size, 12, big_endian=big_endian)
    result = scan(data, page_size)
    assert result.count == 12 and result.first_problem() is None and result.bad_count() == 0
    last = 32 + 11 * (24 + page_size)
    assert result.last_stored == struct.unpack(">II", data[last + 16 : last + 24])
    assert result.commits.tolist() == [n + 1 if n % 3 == 2 else 0 for n in range(12)]


@pytest.mark.parametrize("page_size", [512, 4096])
def test_altered_page_fails_alone(page_size):
    data = bytearray(make_wal(page_size, 10))
    size = 24 + page_size
    data[32 + 4 * size + 24 + page_size // 2] ^= 0x80
    result = scan(bytes(data), page_size)
    assert result.first_problem() == 4
    assert result.problems.tolist() == [0] * 4 + [wal.PROBLEM_CHECKSUM] + [0] * 5


def test_altered_stored_checksum_fails_that_frame_and_the_next():
    data = bytearray(make_wal(4096, 6))
    data[32 + 2 * 4120 + 20] ^= 1
    assert scan(bytes(data), 4096).problems.tolist() == [0, 0, 3, 3, 0, 0]


def test_salt_and_page_number_problems():
    data = bytearray(make_wal(512, 5))
    data[32 + 1 * 536 + 9] ^= 1  # salt-1 of frame 1 (salts are not checksummed)
    data[32 + 3 * 536 : 32 + 3 * 536 + 4] = bytes(4)  # page number 0 of frame 3 (checksummed)
    result = scan(bytes(data), 512)
    assert result.problems.tolist() == [0, wal.PROBLEM_SALT, 0, wal.PROBLEM_PGNO_ZERO, 0]
    assert "salt" in wal.PROBLEM_TEXT[wal.PROBLEM_SALT]


def test_unknown_seed_skips_only_the_first_checksum():
    data = make_wal(4096, 4)
    assert scan(data, 4096, seed=(1, 2)).problems.tolist() == [3, 0, 0, 0]
    assert scan(data, 4096, seed=None).problems.tolist() == [0, 0, 0, 0]


def test_wrong_byte_order_fails_every_frame():
    data = make_wal(4096, 4, big_endian=True)
    header = wal.parse_wal_header(data[:32])
    result = wal.scan_frames(memoryview(data)[32:], 4096, header.salts, False, (header.checksum1, header.checksum2))
    assert result.bad_count() == 4


def test_batches_chain_through_the_stored_checksum():
    data = make_wal(1024, 9)
    size = 24 + 1024
    header = wal.parse_wal_header(data[:32])
    first = wal.scan_frames(memoryview(data)[32 : 32 + 4 * size], 1024, header.salts, False,
                            (header.checksum1, header.checksum2))
    second = wal.scan_frames(memoryview(data)[32 + 4 * size :], 1024, header.salts, False, first.last_stored)
    assert first.bad_count() == second.bad_count() == 0 and second.count == 5


def test_partial_trailing_frame_is_not_judged():
    data = make_wal(512, 3)
    assert scan(data[:-100], 512).count == 2


def test_frame_salts():
    data = make_wal(512, 1)
    assert wal.frame_salts(memoryview(data)[32:]) == (0x11111111, 0x22222222)


def test_real_sqlite_wal_is_sound(tmp_path):
    path = tmp_path / "real.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA page_size = 1024")
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA wal_autocheckpoint = 0")
    con.execute("CREATE TABLE t (x BLOB)")
    for n in range(40):
        con.execute("INSERT INTO t VALUES (?)", (random.randbytes(300 + n * 40),))
    data = (tmp_path / "real.db-wal").read_bytes()
    result = scan(data, 1024)
    assert result.count == (len(data) - 32) // 1048 and result.bad_count() == 0
    assert result.commits[-1] > 0
    con.close()
