"""Buffered access to one LTX object: a forward-only stream and the log of page frames read.

Split from :mod:`lib.litestream.v5.ltx` (whose decoder uses both); the decoder's batch loop
reads :class:`Stream`'s buffer in place (``buf``/``pos``) and moves it on with :meth:`Stream.skip`.
"""
from __future__ import annotations

from array import array
from typing import BinaryIO, Iterator

from lib.errors import CorruptObject

READ_CHUNK = 1 << 20


class Stream:
    """A forward-only buffered view of a reader that knows its absolute offset.

    Reads the underlying object in 1 MiB chunks, so one object never costs more memory
    than that, whatever its size.
    """

    def __init__(self, reader: BinaryIO, key: str):
        self._reader = reader
        self._key = key
        self._buf = b""
        self._pos = 0
        self.offset = 0  # absolute offset of the next unread byte

    def _available(self) -> int:
        return len(self._buf) - self._pos

    def _fill(self, need: int) -> bool:
        """Make at least ``need`` bytes available; False if the object ends first."""
        while self._available() < need:
            chunk = self._reader.read(max(READ_CHUNK, need - self._available()))
            if not chunk:
                return False
            self._buf = self._buf[self._pos:] + chunk
            self._pos = 0
        return True

    def read_exact(self, size: int, what: str) -> bytes:
        if not self._fill(size):
            end = self.offset + self._available()
            raise CorruptObject(self._key, f"truncated after {end} bytes (in {what})")
        data = self._buf[self._pos:self._pos + size]
        self._pos += size
        self.offset += size
        return data

    def peek(self, limit: int) -> bytes:
        """The next ``limit`` bytes (fewer only at the end of the object), not consumed."""
        self._fill(limit)
        return self._buf[self._pos:self._pos + limit]

    def window(self) -> tuple[bytes, int]:
        """The buffer and the position in it of the next unread byte, for reading in place
        (then :meth:`skip` what was used)."""
        return self._buf, self._pos

    def fill(self, need: int) -> bool:
        """Make at least ``need`` bytes available; False if the object ends first."""
        return self._fill(need)

    def skip(self, size: int) -> None:
        self._pos += size
        self.offset += size

    def at_end(self) -> bool:
        return not self._fill(1)


class FrameLog:
    """(pgno, offset, size) of each page frame of an LTX file, in 8 bytes a page.

    Frames follow each other, so each offset is the previous one plus its size: only
    the first is kept. Page numbers are 32-bit in SQLite; a frame is far below 4 GiB.
    """

    def __init__(self):
        self._pgnos = array("I")
        self._sizes = array("I")
        self._first_offset = 0

    def add(self, pgno: int, offset: int, size: int) -> None:
        if not self._pgnos:
            self._first_offset = offset
        self._pgnos.append(pgno)
        self._sizes.append(size)

    def add_many(self, offset: int, pgnos: list[int], sizes: list[int]) -> None:
        """Log consecutive frames, the first at ``offset``."""
        if not self._pgnos and pgnos:
            self._first_offset = offset
        self._pgnos.extend(pgnos)
        self._sizes.extend(sizes)

    def __len__(self) -> int:
        return len(self._pgnos)

    def encoded(self, batch: int) -> Iterator[tuple[int, bytes]]:
        """The page index Litestream writes for these frames (Go uvarints of pgno, offset,
        size per frame; the 0 terminator not included), ``batch`` entries a piece:
        ``(entries, bytes)``."""
        offset = self._first_offset
        for at in range(0, len(self._pgnos), batch):
            parts: list[bytes] = []
            for pgno, size in zip(self._pgnos[at:at + batch], self._sizes[at:at + batch]):
                parts += (uvarint(pgno), uvarint(offset), uvarint(size))
                offset += size
            yield len(parts) // 3, b"".join(parts)

    def entries(self) -> Iterator[tuple[int, int, int]]:
        offset = self._first_offset
        for pgno, size in zip(self._pgnos, self._sizes):
            yield pgno, offset, size
            offset += size


_ONE_BYTE = [bytes((v,)) for v in range(0x80)]


def uvarint(value: int) -> bytes:
    """Go's ``binary.AppendUvarint`` of a non-negative integer: 7 bits a byte, low first."""
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 1 << 14:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 1 << 21:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
