"""The LTX header and its checksums (CRC-64/ISO)."""
from __future__ import annotations

import struct
from dataclasses import dataclass

import anycrc

from lib.errors import CorruptObject
from lib.litestream.sqlite import MAX_PAGE_SIZE, MIN_PAGE_SIZE, is_valid_page_size

MAGIC = b"LTX1"

HEADER_SIZE = 100

HEADER_FLAG_NO_CHECKSUM = 0x00000002  # the only header flag defined by ltx v0.5.2

CHECKSUM_FLAG = 1 << 63  # ltx ChecksumFlag: set on every stored non-zero checksum

_HEADER = struct.Struct(">4sIIIQQqQqqIIQ20s")

_U32 = struct.Struct(">I")

# Header times a datetime can hold (years 1..9999), in Unix milliseconds: Litestream writes
# the wall clock, so a time outside them is damage (and would overflow every conversion).
MIN_TIMESTAMP_MS = -62135596800000

MAX_TIMESTAMP_MS = 253402300799999

# CRC-64/GO-ISO: Go hash/crc64 with the ISO table (spec 2.5); catalogue check value below.
CRC64 = anycrc.Model("CRC64-GO-ISO")


def crc64(data: bytes, crc: int = 0) -> int:
    """Continue a CRC-64/GO-ISO over ``data`` (start with 0)."""
    return CRC64.calc(data, crc)


def page_checksum(pgno: int, page: bytes) -> int:
    """One page's term of the rolling database checksum (spec 2.5, checksum-tracked files)."""
    return crc64(page, crc64(_U32.pack(pgno))) | CHECKSUM_FLAG


@dataclass(frozen=True)
class Header:
    """The 100-byte LTX header (spec 2.2)."""

    flags: int
    page_size: int
    commit: int
    min_txid: int
    max_txid: int
    timestamp_ms: int
    pre_apply_checksum: int
    wal_offset: int
    wal_size: int
    wal_salt1: int
    wal_salt2: int
    node_id: int

    @property
    def is_snapshot(self) -> bool:
        """A file starting at TXID 1 holds the whole database (every page but the lock page)."""
        return self.min_txid == 1

    @property
    def has_checksums(self) -> bool:
        return not self.flags & HEADER_FLAG_NO_CHECKSUM


def parse_header(data: bytes, key: str) -> Header:
    """Decode and check a header; raise CorruptObject (and nothing else) if it is invalid."""
    if len(data) < HEADER_SIZE:
        raise CorruptObject(key, f"truncated after {len(data)} bytes (header needs {HEADER_SIZE})")
    (magic, flags, page_size, commit, min_txid, max_txid, timestamp, pre_apply, wal_offset,
     wal_size, salt1, salt2, node_id, _reserved) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptObject(key, f"not an LTX file: magic {magic!r}, expected {MAGIC!r}")
    header = Header(flags, page_size, commit, min_txid, max_txid, timestamp, pre_apply,
                    wal_offset, wal_size, salt1, salt2, node_id)
    problem = header_problem(header)
    if problem:
        raise CorruptObject(key, problem)
    return header


def header_problem(h: Header) -> str | None:
    """The first violated header rule (the reference decoder's, spec 2.2), or None."""
    if h.flags & ~HEADER_FLAG_NO_CHECKSUM:
        return f"header flags 0x{h.flags:08x} have undefined bits"
    if not is_valid_page_size(h.page_size):
        return f"header page size {h.page_size} is not a power of two in {MIN_PAGE_SIZE}..{MAX_PAGE_SIZE}"
    if h.min_txid == 0 or h.max_txid == 0:
        return f"header TXID range 0x{h.min_txid:x}-0x{h.max_txid:x} contains zero"
    if h.min_txid > h.max_txid:
        return f"header min TXID 0x{h.min_txid:x} is above max TXID 0x{h.max_txid:x}"
    if not MIN_TIMESTAMP_MS <= h.timestamp_ms <= MAX_TIMESTAMP_MS:
        return f"header timestamp {h.timestamp_ms} ms is outside years 1..9999"
    if h.wal_offset < 0 or h.wal_size < 0:
        return f"header WAL offset {h.wal_offset} / size {h.wal_size} is negative"
    if h.wal_offset == 0 and (h.wal_salt1 or h.wal_salt2):
        return "header has WAL salts but no WAL offset"
    if h.wal_offset == 0 and h.wal_size:
        return "header has a WAL size but no WAL offset"
    if not h.has_checksums:
        if h.pre_apply_checksum:
            return f"header pre-apply checksum 0x{h.pre_apply_checksum:016x} set on a NoChecksum file"
    elif h.is_snapshot and h.pre_apply_checksum:
        return f"snapshot header has pre-apply checksum 0x{h.pre_apply_checksum:016x}, expected 0"
    elif not h.is_snapshot and not h.pre_apply_checksum & CHECKSUM_FLAG:
        return f"header pre-apply checksum 0x{h.pre_apply_checksum:016x} lacks the checksum flag"
    return None
