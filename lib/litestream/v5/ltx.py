"""Streaming decoder and validator for one Litestream v0.5 LTX file.

Format: ``docs/formats/litestream-v0.5-ltx.md`` section 2 (superfly/ltx v0.5.2,
magic ``LTX1``). In one pass over a binary reader, never holding more than a buffer's
worth of the object, :class:`LtxDecoder`:

* parses and checks the 100-byte header (:func:`parse_header`);
* yields ``(pgno, page bytes)`` for every page frame, in either page encoding
  (``flags & 1``: size + raw LZ4 block, Litestream 0.5.16+; ``flags == 0``: an LZ4 frame,
  Litestream 0.5.0-0.5.15), so the caller can write pages straight to disk;
* checks the end-of-pages marker, the page index against the frames actually read, the
  index size and the trailer, and finally the file checksum (CRC-64/GO-ISO over the
  logical stream, with decompressed pages).

Every problem is raised as :class:`lib.errors.CorruptObject` naming the object key and
the precise problem. Pages are yielded *before* the file checksum can be checked (it is
the last 8 bytes), so a caller must treat what it wrote as untrusted until the generator
is exhausted without raising.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import lz4.block
import lz4.frame

from lib.errors import CorruptObject
from lib.litestream.sqlite import lock_pgno
from lib.litestream.v5.header import _U32, CHECKSUM_FLAG, CRC64, HEADER_SIZE, crc64, page_checksum, parse_header
from lib.litestream.v5.index import PageIndexReader
from lib.litestream.v5.stream import FrameLog, Stream

PAGE_HEADER_SIZE = 6  # pgno u32, flags u16 (format version 3)

SIZE_FIELD_SIZE = 4

TRAILER_SIZE = 16  # post-apply checksum u64, file checksum u64

INDEX_SIZE_FIELD = 8

PAGE_FLAG_SIZE = 0x0001  # "size follows": page data is a raw LZ4 block (ltx v0.5.2)

_PAGE_HEADER = struct.Struct(">IH")

_BLOCK_PAGE_HEADER = struct.Struct(">IHI")  # page header + the size field of a block-encoded page

BLOCK_PAGE_HEADER_SIZE = _BLOCK_PAGE_HEADER.size

MAX_RUN_PAGES = 256  # pages per run yielded by LtxDecoder.runs

_BATCH_BYTES = 1 << 20  # stored bytes decoded by one batch at most

_decompress = lz4.block.decompress

_crc64 = CRC64.calc  # crc64() without the wrapper's call, for the batch loop
# The file checksum runs over each page's header and page in turn, so a batch hashes them
# joined, 128 pages per call: ~0.8 us a page less than two calls per page (call overhead).
_CRC_PARTS = 256

_U64 = struct.Struct(">Q")

_TRAILER = struct.Struct(">QQ")

_END_OF_PAGES = bytes(PAGE_HEADER_SIZE)

CRC64_CHECK = 0xB90956C775A41001  # crc(b"123456789")


def lz4_block_bound(size: int) -> int:
    """LZ4_compressBound: the largest block LZ4 produces for ``size`` input bytes."""
    return size + size // 255 + 16


def lz4_frame_bound(size: int) -> int:
    """Largest LZ4 frame holding one page: block bound plus header, block size, end mark,
    content and block checksums (19 + 4 + 4 + 4 + 4 bytes, rounded up)."""
    return lz4_block_bound(size) + 64


@dataclass(frozen=True)
class Trailer:
    post_apply_checksum: int
    file_checksum: int


class LtxDecoder:
    """Decode one LTX file from a binary reader, checking everything as it goes.

    The header is read and checked on construction. :meth:`pages` then yields the pages;
    only when it finishes without raising has the whole file (index, trailer, file
    checksum) been verified. Raises :class:`CorruptObject` for any invalid content;
    errors of the reader itself (``ObjectNotFound``, ``StorageUnavailable``) pass through.

    :param expected_txids: the (min, max) TXIDs from the object's name; the header must agree.
    """

    def __init__(self, reader: BinaryIO, key: str, expected_txids: tuple[int, int] | None = None):
        self.key = key
        self._stream = Stream(reader, key)
        raw = self._stream.read_exact(HEADER_SIZE, "header")
        self.header = parse_header(raw, key)
        self._check_name(expected_txids)
        self._crc = crc64(raw)
        self.trailer: Trailer | None = None
        self.page_count = 0
        self._rolling = 0  # database checksum of a checksum-tracked snapshot
        self._prev = 0  # the last page number read

    def _check_name(self, expected: tuple[int, int] | None) -> None:
        if expected is None:
            return
        h = self.header
        if (h.min_txid, h.max_txid) != tuple(expected):
            name = f"{expected[0]:016x}-{expected[1]:016x}"
            raise CorruptObject(
                self.key, f"header TXIDs 0x{h.min_txid:x}-0x{h.max_txid:x} do not match name {name}")

    def _fail(self, problem: str) -> CorruptObject:
        return CorruptObject(self.key, problem)

    def pages(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(pgno, page)`` in ascending pgno, then verify the rest of the file."""
        for start, run in self.runs():
            yield from enumerate(run, start)

    def runs(self, max_run: int = MAX_RUN_PAGES) -> Iterator[tuple[int, list[bytes]]]:
        """Yield the pages as ``(first pgno, [page, ...])`` runs of consecutive page numbers
        (at most ``max_run`` pages each, ascending), then verify the rest of the file.

        Pages fully buffered in the common encoding (size + LZ4 block) are decoded a buffer
        at a time by :meth:`_batch`; any other page (the end marker, an LZ4 frame, one
        across a buffer's end, anything failing a check) goes through :meth:`_careful_page`,
        which applies the same checks one at a time and names the problem.
        """
        frames = FrameLog()  # to compare with the page index
        lock = lock_pgno(self.header.page_size)
        while True:
            runs = self._batch(frames, lock, max_run)
            if runs:
                yield from runs
                continue
            page = self._careful_page(frames, lock)
            if page is None:
                break
            yield page[0], [page[1]]
        self._check_snapshot_complete(self._prev, lock)
        self._crc = crc64(_END_OF_PAGES, self._crc)
        self._read_index(frames)
        self._read_trailer()

    def _batch(self, frames: FrameLog, lock: int, max_run: int) -> list[tuple[int, list[bytes]]]:
        """Decode the buffered run of size + LZ4 block pages that pass every page check.

        The checks are :meth:`_check_pgno`'s, the size bound and the decompressed size of
        :meth:`_read_block_page`; it stops before the first page that fails one (or is not
        wholly buffered), leaving it to :meth:`_careful_page`.
        """
        h = self.header
        page_size, commit, snapshot = h.page_size, h.commit, h.is_snapshot
        track = h.has_checksums and snapshot
        bound = lz4_block_bound(page_size)
        buf, begin = self._stream.window()
        end = min(len(buf), begin + _BATCH_BYTES)  # bounds the pages held by one batch
        pos, prev, rolling = begin, self._prev, 0
        crc = self._crc
        pgnos: list[int] = []
        sizes: list[int] = []
        runs: list[tuple[int, list[bytes]]] = []
        run: list[bytes] = []
        hashed: list[bytes] = []  # page headers and pages not yet in crc: one call per _CRC_PARTS
        while pos + BLOCK_PAGE_HEADER_SIZE <= end:
            pgno, flags, size = _BLOCK_PAGE_HEADER.unpack_from(buf, pos)
            if (flags != PAGE_FLAG_SIZE or not prev < pgno <= commit or pgno == lock or not 0 < size <= bound
                    or snapshot and pgno != prev + 1 and not (pgno == prev + 2 and prev + 1 == lock)):
                break
            data = pos + BLOCK_PAGE_HEADER_SIZE
            if data + size > end:
                break
            try:
                page = _decompress(buf[data:data + size], uncompressed_size=page_size)
            except lz4.block.LZ4BlockError:
                break
            if len(page) != page_size:
                break
            hashed += (buf[pos:data], page)
            if len(hashed) >= _CRC_PARTS:
                crc = _crc64(b"".join(hashed), crc)
                hashed = []
            if track:
                rolling ^= _crc64(page, _crc64(_U32.pack(pgno), 0))
            if pgno == prev + 1 and 0 < len(run) < max_run:
                run.append(page)
            else:
                run = [page]
                runs.append((pgno, run))
            pgnos.append(pgno)
            sizes.append(data + size - pos)
            prev, pos = pgno, data + size
        if hashed:
            crc = _crc64(b"".join(hashed), crc)
        if pgnos:
            frames.add_many(self._stream.offset, pgnos, sizes)
            self._stream.skip(pos - begin)
            self._crc = crc
            self._rolling ^= rolling  # each term's CHECKSUM_FLAG is set on the total by _read_trailer
            self.page_count += len(pgnos)
            self._prev = prev
        return runs

    def _careful_page(self, frames: FrameLog, lock: int) -> tuple[int, bytes] | None:
        """Read and check the next page frame; None at the end-of-pages marker."""
        h = self.header
        offset = self._stream.offset
        raw_header = self._stream.read_exact(PAGE_HEADER_SIZE, f"page header {self.page_count + 1}")
        pgno, flags = _PAGE_HEADER.unpack(raw_header)
        if pgno == 0:
            if flags:
                raise self._fail(f"end-of-pages marker at offset {offset} has flags 0x{flags:04x}")
            return None
        self._check_pgno(pgno, flags, self._prev, lock)
        self._crc = crc64(raw_header, self._crc)
        page = self._read_page(pgno, flags)
        self._crc = crc64(page, self._crc)
        if h.has_checksums and h.is_snapshot:
            self._rolling ^= page_checksum(pgno, page)
        frames.add(pgno, offset, self._stream.offset - offset)
        self.page_count += 1
        self._prev = pgno
        return pgno, page

    def _check_pgno(self, pgno: int, flags: int, prev: int, lock: int) -> None:
        h = self.header
        if flags & ~PAGE_FLAG_SIZE:
            raise self._fail(f"page {pgno} header has undefined flags 0x{flags:04x}")
        if pgno <= prev:
            raise self._fail(f"page {pgno} follows page {prev}: page numbers must ascend")
        if pgno > h.commit:
            raise self._fail(f"page {pgno} is beyond the commit size of {h.commit} pages")
        if pgno == lock:
            raise self._fail(f"page {pgno} is the SQLite lock page, which is never stored")
        if h.is_snapshot:
            expected = prev + 1 if prev + 1 != lock else prev + 2
            if pgno != expected:
                raise self._fail(f"snapshot lacks page {expected} (next page is {pgno})")

    def _check_snapshot_complete(self, last: int, lock: int) -> None:
        h = self.header
        if not h.is_snapshot:
            return
        missing = last + 1 if last + 1 != lock else last + 2
        if missing <= h.commit:
            raise self._fail(f"snapshot lacks page {missing} (commit is {h.commit} pages)")

    def _read_page(self, pgno: int, flags: int) -> bytes:
        if flags & PAGE_FLAG_SIZE:
            return self._read_block_page(pgno)
        return self._read_frame_page(pgno)

    def _read_block_page(self, pgno: int) -> bytes:
        """``size`` u32 + raw LZ4 block (ltx v0.5.2); the size field is hashed too."""
        page_size = self.header.page_size
        raw_size = self._stream.read_exact(SIZE_FIELD_SIZE, f"size of page {pgno}")
        (size,) = _U32.unpack(raw_size)
        if size == 0 or size > lz4_block_bound(page_size):
            raise self._fail(f"page {pgno} claims {size} compressed bytes, "
                             f"outside 1..{lz4_block_bound(page_size)} for {page_size}-byte pages")
        self._crc = crc64(raw_size, self._crc)
        block = self._stream.read_exact(size, f"page {pgno} data")
        try:
            page = lz4.block.decompress(block, uncompressed_size=page_size)
        except lz4.block.LZ4BlockError:
            raise self._fail(f"page {pgno} is not a valid LZ4 block of at most {page_size} bytes") from None
        if len(page) != page_size:
            raise self._fail(f"page {pgno} decompresses to {len(page)} bytes, expected {page_size}")
        return page

    def _read_frame_page(self, pgno: int) -> bytes:
        """A complete LZ4 frame (ltx v0.5.0/v0.5.1); its end is found by decoding it."""
        page_size = self.header.page_size
        limit = lz4_frame_bound(page_size)
        decoder = lz4.frame.LZ4FrameDecompressor()
        out = bytearray()
        consumed = 0
        try:
            while not decoder.eof:
                chunk = self._stream.peek(limit - consumed)
                if not chunk:
                    if consumed >= limit:
                        raise self._fail(f"page {pgno} LZ4 frame is longer than {limit} bytes")
                    raise self._fail(f"truncated after {self._stream.offset} bytes (in page {pgno} LZ4 frame)")
                out += decoder.decompress(chunk, max_length=page_size + 1 - len(out))
                if len(out) > page_size:
                    raise self._fail(f"page {pgno} decompresses to more than {page_size} bytes")
                used = len(chunk) - len(decoder.unused_data or b"")
                self._stream.skip(used)
                consumed += used
                if not decoder.eof and not decoder.needs_input:
                    raise self._fail(f"page {pgno} decompresses to more than {page_size} bytes")
        except RuntimeError as exc:  # lz4.frame reports corrupt frames as RuntimeError
            raise self._fail(f"page {pgno} is not a valid LZ4 frame ({exc})") from None
        if len(out) != page_size:
            raise self._fail(f"page {pgno} decompresses to {len(out)} bytes, expected {page_size}")
        return bytes(out)

    def _read_index(self, frames: FrameLog) -> None:
        """Parse the page index and require it to describe exactly the frames read."""
        index = PageIndexReader(self._stream, self.key, self._crc)
        length = index.read(frames)
        self._crc = index.crc
        raw = self._stream.read_exact(INDEX_SIZE_FIELD, "page index size")
        (stored,) = _U64.unpack(raw)
        if stored != length:
            raise self._fail(f"page index size field says {stored} bytes, the index has {length}")
        self._crc = crc64(raw, self._crc)

    def _read_trailer(self) -> None:
        raw = self._stream.read_exact(TRAILER_SIZE, "trailer")
        post_apply, file_checksum = _TRAILER.unpack(raw)
        self.trailer = Trailer(post_apply, file_checksum)
        if not self.header.has_checksums and post_apply:
            raise self._fail(f"post-apply checksum 0x{post_apply:016x} set on a NoChecksum file")
        if self.header.has_checksums and not post_apply & CHECKSUM_FLAG:
            raise self._fail(f"post-apply checksum 0x{post_apply:016x} lacks the checksum flag")
        if not file_checksum & CHECKSUM_FLAG:
            raise self._fail(f"file checksum 0x{file_checksum:016x} lacks the checksum flag")
        if self.header.has_checksums and self.header.is_snapshot:
            rolling = self._rolling | CHECKSUM_FLAG
            if rolling != post_apply:
                raise self._fail(f"post-apply checksum 0x{post_apply:016x} does not match "
                                 f"the snapshot's pages (0x{rolling:016x})")
        computed = crc64(raw[:8], self._crc) | CHECKSUM_FLAG
        if computed != file_checksum:
            raise self._fail(f"file checksum mismatch: trailer has 0x{file_checksum:016x}, "
                             f"content gives 0x{computed:016x}")
        if not self._stream.at_end():
            raise self._fail(f"unexpected data after the trailer at offset {self._stream.offset}")


def verify_file(reader: BinaryIO, key: str, expected_txids: tuple[int, int] | None = None) -> LtxDecoder:
    """Decode and check a whole LTX file, discarding pages; return the finished decoder."""
    decoder = LtxDecoder(reader, key, expected_txids)
    for _ in decoder.pages():
        pass
    return decoder
