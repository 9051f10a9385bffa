"""LZ4 frames of independent blocks, decompressed into reused buffers, every check kept.

Litestream's writer (pierrec/lz4) makes frames of independent blocks of at most 4 MiB with
a content checksum (XXH32) and no block checksums. python-lz4's frame decompressor returns
a fresh ``bytes`` per call, and on this kind of VM the page faults of fresh memory cost as
much as the decompression itself. Here each block is decompressed with ``LZ4_decompress_safe``
into one of a few buffers reused by the calling thread (exported by python-lz4's own
extension module, the pinned ``lz4`` package; ctypes releases the GIL around big calls),
and the content is hashed with the ``xxhash`` package, about five times faster than the
XXH32 python-lz4 carries.

Only frames this module fully understands take this path (see :func:`fast_layout`): any
other frame (dependent blocks, block checksums, a content size, a dictionary id, reserved
bits set, a bad header checksum) goes to ``lib.litestream.lz4.decompress_chunks``, whose
LZ4F decoder judges it.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from dataclasses import dataclass
from typing import Iterator

import lz4.block._block as _block_ext
import xxhash

from lib.errors import CorruptObject

# Two bindings of LZ4_decompress_safe: ctypes.CDLL releases the GIL around a call, PyDLL
# keeps it. Releasing it lets other threads run meanwhile, but getting it back can take a
# whole switch interval (5 ms) while download threads are busy: worth it for a block of
# megabytes, ruinous for the ~4 KiB segments of a replica synced every second (a third
# of a millisecond per call, measured). Calls on less than ``GIL_FREE_BYTES`` keep it.
GIL_FREE_BYTES = 256 << 10


def _bind(library, name: str, restype, argtypes):
    function = getattr(library, name)
    function.restype, function.argtypes = restype, argtypes
    return function


_VOID, _INT = ctypes.c_void_p, ctypes.c_int
# python-lz4 exports it today; should a release stop doing so, every frame goes to LZ4F.
try:
    _decompress_free, _decompress_held = (
        _bind(lib(_block_ext.__file__), "LZ4_decompress_safe", _INT, [_VOID, _VOID, _INT, _INT])
        for lib in (ctypes.CDLL, ctypes.PyDLL))
except (OSError, AttributeError):
    AVAILABLE = False
else:
    AVAILABLE = True


def _decompress_safe(source: int, dest: int, size: int, capacity: int) -> int:
    return (_decompress_free if size >= GIL_FREE_BYTES // 4 else _decompress_held)(source, dest, size, capacity)


MAGIC = b"\x04\x22\x4d\x18"

_FLG_VERSION_MASK, _FLG_VERSION_01 = 0xC0, 0x40
_FLG_BLOCK_INDEPENDENT = 0x20
_FLG_CONTENT_CHECKSUM = 0x04
# what this module handles: version 01, independent blocks, optionally a content checksum;
# block checksums, a content size, a dictionary id and the reserved bit are not
_FLG_HANDLED = _FLG_VERSION_MASK | _FLG_BLOCK_INDEPENDENT | _FLG_CONTENT_CHECKSUM
_BLOCK_MAX = {4: 64 << 10, 5: 256 << 10, 6: 1 << 20, 7: 4 << 20}
_UNCOMPRESSED = 0x80000000
HEADER_SIZE = 7  # magic, FLG, BD, HC

_buffers = threading.local()  # per thread: the reused output buffers


@dataclass(frozen=True)
class FrameLayout:
    block_max: int
    content_checksum: bool


def fast_layout(head: bytes | memoryview) -> FrameLayout | None:
    """The frame's layout when its first 7 bytes are a header this module decodes, else None.

    The header checksum is checked here too: a frame with a bad one goes to LZ4F, which
    names the problem.
    """
    if not AVAILABLE or len(head) < HEADER_SIZE or bytes(head[:4]) != MAGIC:
        return None
    flg, bd, hc = head[4], head[5], head[6]
    if flg & ~_FLG_CONTENT_CHECKSUM & 0xFF != _FLG_VERSION_01 | _FLG_BLOCK_INDEPENDENT:
        return None
    if bd & 0x8F or (bd >> 4) not in _BLOCK_MAX:
        return None
    if (xxhash.xxh32_intdigest(bytes(head[4:6])) >> 8) & 0xFF != hc:
        return None
    return FrameLayout(_BLOCK_MAX[bd >> 4], bool(flg & _FLG_CONTENT_CHECKSUM))


class _Ring:
    """``count`` output buffers of ``size`` bytes, handed out in turn, with their addresses."""

    def __init__(self, size: int, count: int):
        self.buffers = [bytearray(size) for _ in range(count)]
        self.addresses = [ctypes.addressof(ctypes.c_char.from_buffer(b)) for b in self.buffers]
        self.next = 0

    def take(self) -> tuple[bytearray, int]:
        i = self.next
        self.next = (i + 1) % len(self.buffers)
        return self.buffers[i], self.addresses[i]


def _ring(size: int, count: int) -> _Ring:
    """This thread's ring for blocks of ``size`` bytes (kept: a fresh buffer per object costs page faults)."""
    rings = getattr(_buffers, "rings", None)
    if rings is None:
        rings = _buffers.rings = {}
    ring = rings.get((size, count))
    if ring is None:
        ring = rings[(size, count)] = _Ring(size, count)
    return ring


def decompress_views(key: str, chunks: Iterator[bytes], layout: FrameLayout, limit: int,
                     ring: int = 1) -> Iterator[memoryview]:
    """Decompress one frame (``chunks`` start with its header) whose ``layout`` is known; yield each block.

    A yielded view is valid until the caller asks for the ``ring``-th piece after it: its
    buffer is then reused (the caller copies what it keeps longer). Raises CorruptObject,
    with the messages of ``lib.litestream.lz4.decompress_chunks``, when a block does not
    decode or exceeds the frame's block size, the content checksum fails, the frame ends
    early, bytes follow it, or it inflates past ``limit`` bytes.
    """
    out = _ring(layout.block_max, ring)
    source = _Source(chunks)
    if not source.fill(HEADER_SIZE):
        raise _truncated(key)
    source.skip(HEADER_SIZE)
    content = xxhash.xxh32() if layout.content_checksum else None
    produced = 0
    while True:
        size = source.u32()
        if size is None:
            raise _truncated(key)
        if size == 0:
            break
        buf, address = out.take()
        n = _block(key, source, size, layout.block_max, buf, address)
        produced += n
        if produced > limit:
            raise CorruptObject(key, f"decompresses to more than {limit} bytes, beyond what its headers allow")
        block = memoryview(buf)[:n]
        if content is not None:
            content.update(block)
        yield block
    if content is not None:
        stored = source.u32()
        if stored is None:
            raise _truncated(key)
        if stored != content.intdigest():
            raise CorruptObject(key, "invalid LZ4 data (content checksum mismatch)")
    if source.has_more():
        raise CorruptObject(key, "extra bytes after the end of the LZ4 frame")


def _block(key: str, source: _Source, size: int, block_max: int, buf: bytearray, address: int) -> int:
    """Decode the block of ``size`` (its header word) into ``buf``; return its decoded length."""
    stored = bool(size & _UNCOMPRESSED)
    size &= ~_UNCOMPRESSED
    if size > block_max:
        raise CorruptObject(key, "invalid LZ4 data (ERROR_maxBlockSize_invalid)")
    if not source.fill(size):
        raise _truncated(key)
    if stored:
        buf[:size] = source.view(size)
        n = size
    else:
        n = _decompress_safe(source.address(), address, size, block_max)
        if n < 0:
            raise CorruptObject(key, "invalid LZ4 data (ERROR_decompressionFailed)")
    source.skip(size)
    return n


class _Source:
    """The stored bytes of a frame, fed as chunks, read front to back."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self.data = bytearray()
        self.pos = 0

    def fill(self, n: int) -> bool:
        """Make ``n`` bytes available at the read position; False when the chunks end first."""
        while len(self.data) - self.pos < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                return False
            if self.pos:
                del self.data[: self.pos]
                self.pos = 0
            self.data += chunk
        return True

    def u32(self) -> int | None:
        if not self.fill(4):
            return None
        (value,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        return value

    def skip(self, n: int) -> None:
        self.pos += n

    def view(self, n: int) -> memoryview:
        return memoryview(self.data)[self.pos : self.pos + n]

    def address(self) -> int:
        """The address of the read position (valid until the next ``fill``)."""
        anchor = ctypes.c_char.from_buffer(self.data)
        try:
            return ctypes.addressof(anchor) + self.pos
        finally:
            del anchor

    def has_more(self) -> bool:
        if len(self.data) > self.pos:
            return True
        return any(len(c) for c in self.chunks)


def _truncated(key: str) -> CorruptObject:
    return CorruptObject(key, "LZ4 frame is truncated (object ends before the frame does)")
