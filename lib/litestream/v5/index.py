"""The page index of an LTX file (spec section 2.4), checked against the page frames read.

Split from :class:`lib.litestream.v5.ltx.LtxDecoder`, which hands it the stream positioned
at the index and the file checksum so far, and takes the checksum back.
"""
from __future__ import annotations

import itertools

from lib.errors import CorruptObject
from lib.litestream.v5.header import crc64
from lib.litestream.v5.stream import FrameLog, Stream

_INDEX_CHUNK = 64 << 10  # page index bytes decoded at a time

_MAX_UVARINT_BYTES = 10  # Go's binary.MaxVarintLen64

_INDEX_ENTRIES = 4096  # page index entries compared at a time (~40 KB)


class PageIndexReader:
    """Reads one page index from ``stream``, continuing the file checksum ``crc`` over it.

    :meth:`read` raises :class:`CorruptObject` naming the object ``key`` when the index
    does not list exactly the frames read, in order, or is malformed or truncated.
    """

    def __init__(self, stream: Stream, key: str, crc: int):
        self._stream = stream
        self.key = key
        self.crc = crc

    def _fail(self, problem: str) -> CorruptObject:
        return CorruptObject(self.key, problem)

    def read(self, frames: FrameLog) -> int:
        """Read the index and require it to list exactly ``frames``; return the bytes it took.

        The index Litestream writes is the frames' canonical encoding, so it is compared with
        that encoding a piece at a time (``_INDEX_ENTRIES`` entries each; no copy of the whole
        index is held). From the first piece that differs on, it is decoded entry by entry
        (:meth:`_decode_index`), which accepts any valid encoding and names what is wrong.
        """
        matched = length = 0
        for count, piece in frames.encoded(_INDEX_ENTRIES):
            if self._stream.peek(len(piece)) != piece:
                break
            self.crc = crc64(piece, self.crc)
            self._stream.skip(len(piece))
            matched += count
            length += len(piece)
        else:
            if self._stream.peek(1) == b"\x00":
                self.crc = crc64(b"\x00", self.crc)
                self._stream.skip(1)
                return length + 1
        return self._decode_index(frames, matched, length)

    def _decode_index(self, frames: FrameLog, matched: int, length: int) -> int:
        """Read the rest of the index (Go uvarints: pgno, offset, size per page, up to a 0
        terminator), its first ``matched`` entries (``length`` bytes) already read and matched,
        comparing each entry with the frame read, in order; return the bytes the index took.

        The index is read in ``_INDEX_CHUNK`` pieces and each entry compared as it is
        decoded: no copy of the index (a few MB at 1 GB) is held. The first entry that
        differs is reported only once the whole index has decoded, so a broken varint still
        reads as the structural problem it causes (as when the index was decoded first).
        """
        entries = len(frames)
        mismatch: CorruptObject | None = None
        limit = 3 * entries * _MAX_UVARINT_BYTES + 1  # the longest an index of that many entries can be
        expected = itertools.islice(frames.entries(), matched, None)
        entry: list[int] = []
        decoded = 3 * matched
        value = shift = 0
        while length < limit:
            chunk = self._stream.peek(min(_INDEX_CHUNK, limit - length))
            if not chunk:
                break
            for at, byte in enumerate(chunk):
                value |= (byte & 0x7F) << shift
                if byte & 0x80:
                    shift += 7
                    if shift >= 7 * _MAX_UVARINT_BYTES:
                        raise self._fail(f"page index has an overlong varint at offset {self._stream.offset + at}")
                    continue
                if value == 0 and not entry:
                    if mismatch is not None:
                        raise mismatch
                    if decoded < 3 * entries:
                        raise self._fail(f"page index lists {decoded // 3} pages, the file has {entries}")
                    self.crc = crc64(chunk[:at + 1], self.crc)
                    self._stream.skip(at + 1)
                    return length + at + 1
                if value >> 64:
                    raise self._fail(f"page index has an overlong varint at offset {self._stream.offset + at}")
                entry.append(value)
                decoded += 1
                value = shift = 0
                if decoded > 3 * entries:
                    raise self._fail(f"page index lists more than the {entries} pages in the file")
                if len(entry) == 3:
                    mismatch = mismatch or self._entry_mismatch(decoded // 3, tuple(entry), next(expected))
                    entry = []
            self.crc = crc64(chunk, self.crc)
            self._stream.skip(len(chunk))
            length += len(chunk)
        if length < limit:
            raise self._fail(f"truncated after {self._stream.offset} bytes (in page index)")
        raise self._fail(f"page index is not terminated within {length} bytes")

    def _entry_mismatch(self, number: int, got: tuple[int, int, int],
                        want: tuple[int, int, int]) -> CorruptObject | None:
        if got == want:
            return None
        return self._fail(f"page index entry {number} (page {got[0]}, offset {got[1]}, size {got[2]}) "
                          f"does not match the frame (page {want[0]}, offset {want[1]}, size {want[2]})")
