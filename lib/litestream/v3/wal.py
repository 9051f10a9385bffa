"""SQLite WAL decoding for restore: header, frames, salts and the cumulative checksum.

Facts from ``docs/formats/litestream-v0.3.md`` section 8 and SQLite's wal.c:

* header (32 bytes, big-endian u32): magic, version 3007000, page size, checkpoint
  sequence, salt-1, salt-2, checksum-1, checksum-2 (over bytes 0..23, seed (0, 0));
* frame: 24-byte header (pgno, commit size, salt-1, salt-2, checksum-1, checksum-2) and
  one page; the checksum runs over the frame header's first 8 bytes and the page,
  seeded with the previous frame's (or the WAL header's) checksum;
* checksum words are read little-endian under magic 0x377f0682, big-endian under
  0x377f0683; each pair of words does ``s0 += x0 + s1; s1 += x1 + s0`` (mod 2**32).

The checksum is a linear recurrence, so a frame's effect on (s0, s1) is
``M**n @ (s0, s1) + c(frame)`` with ``M = [[1, 1], [1, 2]]`` and ``c`` a dot product of
the frame's words with precomputed coefficients. Every frame stores the running checksum
after itself, so frame k can be verified from the checksum frame k-1 *stores*: numpy
judges thousands of frames at once with no per-frame Python, and a damaged frame fails
alone instead of hiding every frame after it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lib.litestream.sqlite import is_valid_page_size

WAL_MAGIC_LE = 0x377F0682

WAL_MAGIC_BE = 0x377F0683

WAL_VERSION = 3007000

WAL_HEADER_SIZE = 32

FRAME_HEADER_SIZE = 24

MASK32 = 0xFFFFFFFF


class WalFormatError(ValueError):
    """The bytes are not a valid WAL (header, salts or checksums)."""


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

    @property
    def salts(self) -> tuple[int, int]:
        return self.salt1, self.salt2


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


def frame_salts(frame: bytes | memoryview) -> tuple[int, int]:
    """The salts a frame carries."""
    return struct.unpack(">II", bytes(frame[8:16]))


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


@dataclass(frozen=True)
class FrameScan:
    """Per-frame verdicts for a run of whole frames laid end to end.

    Every frame is judged on its own: its checksum is recomputed from the checksum the
    previous frame *stores* (the seed for the first one), so one damaged frame fails
    alone and the frames after it are still verified. On an intact chain this gives
    exactly SQLite's verdict, since there the stored and the running checksums agree.
    """

    pgnos: np.ndarray  # uint32 page number of each frame
    commits: np.ndarray  # uint32 "database size after commit" (0: not a commit frame)
    problems: np.ndarray  # uint8 PROBLEM_* code per frame, 0 when the frame is sound
    last_stored: tuple[int, int]  # the checksum the last frame stores: the next run's seed

    @property
    def count(self) -> int:
        return len(self.pgnos)

    def first_problem(self) -> int | None:
        """Index of the first unsound frame, or None."""
        bad = np.flatnonzero(self.problems)
        return int(bad[0]) if len(bad) else None

    def bad_count(self) -> int:
        return int(np.count_nonzero(self.problems))


PROBLEM_NONE = 0

PROBLEM_PGNO_ZERO = 1

PROBLEM_SALT = 2

PROBLEM_CHECKSUM = 3

PROBLEM_TEXT = {
    PROBLEM_PGNO_ZERO: "page number 0",
    PROBLEM_SALT: "salts differ from the WAL header's (a stale or foreign frame)",
    PROBLEM_CHECKSUM: "checksum mismatch (page or frame header altered)",
}


def scan_frames(
    frames: bytes | memoryview,
    page_size: int,
    salts: tuple[int, int],
    big_endian: bool,
    seed: tuple[int, int] | None,
) -> FrameScan:
    """Judge every whole frame in ``frames`` (page number, salts, cumulative checksum).

    :param salts: the salts every frame must carry (the WAL header's).
    :param big_endian: checksum byte order (the WAL header's magic).
    :param seed: the checksum before the first frame (the WAL header's, or the checksum
        stored by the frame just before); None when it is unknown (the bytes before are
        missing), in which case the first frame's checksum is not judged.
    """
    frame_size = FRAME_HEADER_SIZE + page_size
    count = len(frames) // frame_size
    heads = np.frombuffer(frames, dtype=">u4", count=count * frame_size // 4).reshape(count, frame_size // 4)[:, :6]
    heads = heads.astype(np.uint64)
    problems = np.zeros(count, dtype=np.uint8)
    if count == 0:
        return FrameScan(heads[:, 0].astype(np.uint32), heads[:, 1].astype(np.uint32), problems, seed or (0, 0))
    c0, c1 = frame_contributions(frames, page_size, big_endian)
    stored0, stored1 = heads[:, 4], heads[:, 5]
    prev0 = np.empty(count, dtype=np.uint64)
    prev1 = np.empty(count, dtype=np.uint64)
    prev0[1:], prev1[1:] = stored0[:-1], stored1[:-1]
    prev0[0], prev1[0] = seed if seed is not None else (0, 0)
    _, _, _, _, (p, q, r) = _coefficients(page_size)
    # uint64 arithmetic wraps modulo 2**64, which preserves the value modulo 2**32.
    n0 = (np.uint64(p) * prev0 + np.uint64(q) * prev1 + c0.astype(np.uint64)) & np.uint64(MASK32)
    n1 = (np.uint64(q) * prev0 + np.uint64(r) * prev1 + c1.astype(np.uint64)) & np.uint64(MASK32)
    bad_sum = (n0 != stored0) | (n1 != stored1)
    if seed is None:
        bad_sum[0] = False
    problems[bad_sum] = PROBLEM_CHECKSUM
    problems[(heads[:, 2] != salts[0]) | (heads[:, 3] != salts[1])] = PROBLEM_SALT
    problems[heads[:, 0] == 0] = PROBLEM_PGNO_ZERO
    return FrameScan(heads[:, 0].astype(np.uint32), heads[:, 1].astype(np.uint32), problems,
                     (int(stored0[-1]), int(stored1[-1])))
