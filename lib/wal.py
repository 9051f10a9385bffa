"""SQLite WAL decoding for restore: header, frames, salts and the cumulative checksum.

Facts from ``../shared/docs/litestream-v0.3-format.md`` section 8 and SQLite's wal.c:

* header (32 bytes, big-endian u32): magic, version 3007000, page size, checkpoint
  sequence, salt-1, salt-2, checksum-1, checksum-2 (over bytes 0..23, seed (0, 0));
* frame: 24-byte header (pgno, commit size, salt-1, salt-2, checksum-1, checksum-2) and
  one page; the checksum runs over the frame header's first 8 bytes and the page,
  seeded with the previous frame's (or the WAL header's) checksum;
* checksum words are read little-endian under magic 0x377f0682, big-endian under
  0x377f0683; each pair of words does ``s0 += x0 + s1; s1 += x1 + s0`` (mod 2**32).

The checksum is a linear recurrence, so a frame's effect on (s0, s1) is
``M**n @ (s0, s1) + c(frame)`` with ``M = [[1, 1], [1, 2]]`` and ``c`` a dot product of
the frame's words with precomputed coefficients: numpy computes ``c`` for thousands of
frames at once, and only a 2x2 step per frame stays in Python.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

WAL_MAGIC_LE = 0x377F0682
WAL_MAGIC_BE = 0x377F0683
WAL_VERSION = 3007000
WAL_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 24
MASK32 = 0xFFFFFFFF


class WalFormatError(ValueError):
    """The bytes are not a valid WAL (header, salts or checksums)."""


def is_valid_page_size(size: int) -> bool:
    return 512 <= size <= 65536 and size & (size - 1) == 0


@dataclass(frozen=True)
class WalHeader:
    magic: int
    version: int
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    checksum1: int
    checksum2: int

    @property
    def big_endian_checksums(self) -> bool:
        return self.magic == WAL_MAGIC_BE


def parse_wal_header(data: bytes) -> WalHeader:
    """Parse and validate a 32-byte WAL header; raise WalFormatError naming the problem."""
    if len(data) < WAL_HEADER_SIZE:
        raise WalFormatError(f"WAL header is {len(data)} bytes, expected 32")
    header = WalHeader(*struct.unpack(">8I", data[:WAL_HEADER_SIZE]))
    if header.magic not in (WAL_MAGIC_LE, WAL_MAGIC_BE):
        raise WalFormatError(f"bad WAL magic 0x{header.magic:08x}")
    if header.version != WAL_VERSION:
        raise WalFormatError(f"unsupported WAL format version {header.version}")
    if not is_valid_page_size(header.page_size):
        raise WalFormatError(f"invalid WAL page size {header.page_size}")
    expected = checksum_bytes(data[:24], 0, 0, header.big_endian_checksums)
    if expected != (header.checksum1, header.checksum2):
        raise WalFormatError("WAL header checksum mismatch")
    return header


def checksum_bytes(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """The plain (slow) WAL checksum of ``data``; used for the header and in tests."""
    fmt = ">" if big_endian else "<"
    words = struct.unpack(f"{fmt}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & MASK32
        s1 = (s1 + words[i + 1] + s0) & MASK32
    return s0, s1


@lru_cache(maxsize=8)
def _coefficients(page_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Coefficient vectors over a frame's words (8 header bytes + page) and M**n.

    For pair i of n, with k = n - 1 - i and M**k = [[p, q], [q, r]], pair (x0, x1)
    contributes (p+q)*x0 + q*x1 to s0 and (q+r)*x0 + r*x1 to s1.
    """
    n = 1 + page_size // 8
    p, q, r = 1, 0, 1  # M**0
    powers = []
    for _ in range(n):
        powers.append((p, q, r))
        # M**(k+1) = M**k @ M with M = [[1,1],[1,2]]
        p, q, r = (p + q) & MASK32, (p + 2 * q) & MASK32, (q + 2 * r) & MASK32
    mn = (p, q, r)
    powers.reverse()  # index i -> k = n - 1 - i
    arr = np.array(powers, dtype=np.uint64)
    a0 = ((arr[:, 0] + arr[:, 1]) & MASK32).astype(np.uint32)
    a1 = arr[:, 1].astype(np.uint32)
    b0 = ((arr[:, 1] + arr[:, 2]) & MASK32).astype(np.uint32)
    b1 = arr[:, 2].astype(np.uint32)
    return a0, a1, b0, b1, mn


def frame_contributions(frames: bytes | memoryview, page_size: int, big_endian: bool) -> tuple[np.ndarray, np.ndarray]:
    """For whole frames laid end to end, each frame's additive checksum term (c0, c1)."""
    frame_size = FRAME_HEADER_SIZE + page_size
    count = len(frames) // frame_size
    words = np.frombuffer(frames, dtype=">u4" if big_endian else "<u4", count=count * frame_size // 4)
    words = words.reshape(count, frame_size // 4)
    if big_endian:
        words = words.astype(np.uint32)
    a0, a1, b0, b1, _ = _coefficients(page_size)
    # pair 0 is the frame header's first two words; pairs 1.. are the page's words
    x0_head = words[:, 0].astype(np.uint32)
    x1_head = words[:, 1].astype(np.uint32)
    page_x0 = words[:, 6::2]
    page_x1 = words[:, 7::2]
    c0 = x0_head * a0[0] + x1_head * a1[0] + page_x0 @ a0[1:] + page_x1 @ a1[1:]
    c1 = x0_head * b0[0] + x1_head * b1[0] + page_x0 @ b0[1:] + page_x1 @ b1[1:]
    return c0, c1


@dataclass
class FrameBatchResult:
    """What a batch of frames did to the running checksum."""

    valid_frames: int  # frames that passed, from the start of the batch
    s0: int
    s1: int
    problem: str | None = None  # why frame ``valid_frames`` failed, if one did


def check_frames(
    frames: bytes | memoryview, page_size: int, header: WalHeader, s0: int, s1: int
) -> FrameBatchResult:
    """Validate salts and the cumulative checksum of consecutive whole frames.

    Stops at the first frame whose salts or checksum are wrong, or whose page number is
    0, like SQLite's WAL recovery; returns the running checksum after the last good one.
    """
    frame_size = FRAME_HEADER_SIZE + page_size
    count = len(frames) // frame_size
    if count == 0:
        return FrameBatchResult(0, s0, s1)
    c0, c1 = frame_contributions(frames, page_size, header.big_endian_checksums)
    heads = np.frombuffer(frames, dtype=">u4", count=count * frame_size // 4).reshape(count, frame_size // 4)[:, :6]
    pgnos = heads[:, 0].tolist()
    salt1 = heads[:, 2].tolist()
    salt2 = heads[:, 3].tolist()
    stored1 = heads[:, 4].tolist()
    stored2 = heads[:, 5].tolist()
    c0l = c0.tolist()
    c1l = c1.tolist()
    _, _, _, _, (p, q, r) = _coefficients(page_size)
    for i in range(count):
        if pgnos[i] == 0:
            return FrameBatchResult(i, s0, s1, "frame has page number 0")
        if salt1[i] != header.salt1 or salt2[i] != header.salt2:
            return FrameBatchResult(i, s0, s1, "frame salt does not match the WAL header (stale or foreign frame)")
        n0 = (p * s0 + q * s1 + c0l[i]) & MASK32
        n1 = (q * s0 + r * s1 + c1l[i]) & MASK32
        if n0 != stored1[i] or n1 != stored2[i]:
            return FrameBatchResult(i, s0, s1, "frame checksum mismatch")
        s0, s1 = n0, n1
    return FrameBatchResult(count, s0, s1)
