"""Cutting one WAL index's bytes into whole frames and judging them: header, salts, byte order, checksum chain."""
from __future__ import annotations

import struct
from typing import Iterator

from lib.litestream.v3 import wal


class FrameReader:
    """The frames of one WAL index, fed piece by piece as its segments decompress.

    Bytes of an incomplete frame are carried to the next piece. Each run of whole frames
    comes out with its :class:`wal.FrameScan` (per-frame verdicts), judged against the
    header's salts and byte order and the checksum the previous frame stores. The reader
    never reports anything itself: problems with the header or the first frames are left
    in ``problems`` (damage to the segment fed), ``header_findings`` (damage to the index's
    first segment) and ``must_stop`` (applying must stop); the caller takes them.
    """

    def __init__(self, db_page_size: int | None):
        self.db_page_size = db_page_size  # the database's, when known: authoritative over the header's
        self.header: wal.WalHeader | None = None
        self.page_size = 0  # of the frames: the database's
        self.salts = (0, 0)  # every frame must carry these (the header's, unless it was altered)
        self.big_endian = False  # checksum byte order
        self.first_frame: bytes | None = None  # header of the index's first frame, once seen
        self.frame_size = 0
        self.has_frames = True  # False when the index has no usable header: frames can't be judged
        self.aligned = True  # the current segment starts on a frame boundary
        self.seed: tuple[int, int] | None = None  # checksum before the next frame; None: unknown
        self.pending = bytearray()  # bytes of an incomplete frame carried between pieces
        self.frame_offset = 0  # index offset of the next whole frame
        self.problems: list[str] = []
        self.header_findings: list[str] = []
        self.must_stop = False

    @property
    def is_judging(self) -> bool:
        """Whether fed bytes are cut into frames (a usable header, on a frame boundary)."""
        return self.has_frames and self.aligned

    def resync(self, offset: int) -> None:
        """Go on at ``offset`` after a discontinuity: nothing before it can seed the checksum."""
        self.seed = None
        self.pending = bytearray()
        self.frame_offset = offset
        self.aligned = not self.frame_size or (offset - wal.WAL_HEADER_SIZE) % self.frame_size == 0

    def feed(self, piece: bytes | memoryview) -> Iterator[tuple[memoryview, wal.FrameScan]]:
        """Yield each run of whole frames completed by ``piece`` with its scan.

        The caller advances ``frame_offset`` by the frames it took, after each run. The
        runs may be views into ``piece``: they are valid as long as it is. Only a frame
        split between pieces is copied (``piece`` may be a large reused buffer).
        """
        if not self.is_judging:
            return
        view = memoryview(piece)
        if self.header is None:
            view = self._take_header(view)
            if view is None or not self.has_frames:
                return
        if self.pending:
            take = min(self.frame_size - len(self.pending), len(view))
            self.pending += view[:take]
            view = view[take:]
            if len(self.pending) < self.frame_size:
                return
            frame = memoryview(bytes(self.pending))
            self.pending = bytearray()
            yield frame, self._scan(frame)
        whole = len(view) // self.frame_size * self.frame_size
        self.pending = bytearray(view[whole:])
        if whole:
            frames = view[:whole]
            yield frames, self._scan(frames)

    def _take_header(self, view: memoryview) -> memoryview | None:
        """Read the WAL header once its 32 bytes are in; return the rest of ``view`` (None: not yet)."""
        if len(self.pending) + len(view) < wal.WAL_HEADER_SIZE:
            self.pending += view
            return None
        take = wal.WAL_HEADER_SIZE - len(self.pending)
        head = bytes(self.pending) + bytes(view[:take])
        self.pending = bytearray()
        self._read_header(head)
        if self.has_frames:
            self.frame_offset = wal.WAL_HEADER_SIZE
        return view[take:]

    def _read_header(self, head: bytes) -> None:
        try:
            header = wal.parse_wal_header(head)
        except wal.WalFormatError as exc:
            self.has_frames = False
            self.problems.append(f"{exc}: SQLite ignores the whole index")
            self.must_stop = True
            return
        self.header = header
        self.salts, self.big_endian = header.salts, header.big_endian_checksums
        self.seed = (header.checksum1, header.checksum2)
        self.page_size = self.db_page_size or header.page_size
        if header.page_size != self.page_size:
            # The database's page size is authoritative: frames are judged with it.
            self.problems.append(f"WAL header says page size {header.page_size}, the database's is "
                                 f"{self.page_size}: the header was altered")
            self.must_stop = True
            self.seed = None
        self.frame_size = wal.FRAME_HEADER_SIZE + self.page_size

    def _scan(self, frames: memoryview) -> wal.FrameScan:
        if self.frame_offset <= wal.WAL_HEADER_SIZE + self.frame_size:
            self._judge_header(frames)
        scan = wal.scan_frames(frames, self.page_size, self.salts, self.big_endian, self.seed)
        self.seed = scan.last_stored
        return scan

    def _judge_header(self, frames: memoryview) -> None:
        """Judge the header's salts and byte order by the index's first two frames.

        SQLite rejects an index whose first frame disagrees with its header, so applying
        stops there whichever of the two was altered. For validating the rest of the index
        the frames' own salts and byte order are used when the first two frames agree with
        each other and not with the header: an altered header is then blamed once instead
        of every later frame.
        """
        start = self.frame_offset
        if start == wal.WAL_HEADER_SIZE:
            self.first_frame = bytes(frames[: wal.FRAME_HEADER_SIZE])
            first = wal.frame_salts(self.first_frame)
            if first != self.salts:
                self.problems.append(f"the first frame's salts {first[0]:08x}/{first[1]:08x} differ from the WAL "
                                     f"header's {self.salts[0]:08x}/{self.salts[1]:08x}: the header or the first "
                                     "frame was altered, SQLite ignores the whole index")
                self.must_stop = True
                self.salts, self.seed = first, None  # the header's checksum can't seed this frame either
        at = wal.WAL_HEADER_SIZE + self.frame_size - start
        if self.first_frame is None or not 0 <= at < len(frames):
            return
        second = frames[at : at + self.frame_size]
        if self.salts != self.header.salts and wal.frame_salts(second) == self.header.salts:
            self.salts = self.header.salts  # the first frame was the odd one out
        seed = struct.unpack(">II", self.first_frame[16:24])
        as_is = wal.scan_frames(second, self.page_size, self.salts, self.big_endian, seed).first_problem()
        flipped = wal.scan_frames(second, self.page_size, self.salts, not self.big_endian, seed).first_problem()
        if as_is is not None and flipped is None:
            order = "big" if self.big_endian else "little"
            self.header_findings.append(f"the header's magic selects {order}-endian checksums but the frames use "
                                        "the other byte order: the header was altered")
            self.big_endian = not self.big_endian
            self.must_stop = True
