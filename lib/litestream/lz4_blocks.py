"""LZ4 frames of independent blocks, decompressed into reused buffers, every check kept.

Litestream's writer (pierrec/lz4) makes frames of independent blocks of at most 4 MiB with
a content checksum (XXH32) and no block checksums. python-lz4's frame decompressor returns
a fresh ``bytes`` per call, and on this kind of VM the page faults of fresh memory cost as
much as the decompression itself. Here each block is decompressed with ``LZ4_decompress_safe``
into one of a few buffers reused by the calling thread, and the content is hashed with
``XXH32_update``: both are exported by python-lz4's own extension modules (the pinned
``lz4`` package, no other library), and ctypes releases the GIL around each call.

Only frames this module fully understands take this path (see :func:`fast_layout`): any
other frame (dependent blocks, block checksums, a content size, a dictionary id, reserved
bits set, a bad header checksum) goes to ``lib.litestream.lz4.decompress_chunks``, whose
LZ4F decoder judges it.
"""
from __future__ import annotations

import ctypes
import queue
import struct
import threading
from dataclasses import dataclass
from typing import Iterator

import lz4.block._block as _block_ext
import lz4.frame._frame as _frame_ext

from lib.errors import CorruptObject

# Two bindings of each function: ctypes.CDLL releases the GIL around a call, PyDLL keeps it.
# Releasing it lets other threads run meanwhile, but getting it back can take a whole
# switch interval (5 ms) while download threads are busy: worth it for a block of
# megabytes, ruinous for the ~4 KiB segments of a replica synced every second (a third
# of a millisecond per call, measured). Calls on less than ``GIL_FREE_BYTES`` keep it.
GIL_FREE_BYTES = 256 << 10


def _bind(library, name: str, restype, argtypes):
    function = getattr(library, name)
    function.restype, function.argtypes = restype, argtypes
    return function


_VOID, _SIZE, _UINT, _INT = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int
# python-lz4 exports these today; should a release stop doing so, every frame goes to LZ4F.
try:
    _decompress_free, _decompress_held = (
        _bind(lib(_block_ext.__file__), "LZ4_decompress_safe", _INT, [_VOID, _VOID, _INT, _INT])
        for lib in (ctypes.CDLL, ctypes.PyDLL))
    _xxh32_update_free, _xxh32_update_held = (
        _bind(lib(_frame_ext.__file__), "XXH32_update", _INT, [_VOID, _VOID, _SIZE]) for lib in (ctypes.CDLL, ctypes.PyDLL))
    _XXH_HELD = ctypes.PyDLL(_frame_ext.__file__)
    _xxh32 = _bind(_XXH_HELD, "XXH32", _UINT, [_VOID, _SIZE, _UINT])
    _xxh32_create = _bind(_XXH_HELD, "XXH32_createState", _VOID, [])
    _xxh32_free = _bind(_XXH_HELD, "XXH32_freeState", _INT, [_VOID])
    _xxh32_reset = _bind(_XXH_HELD, "XXH32_reset", _INT, [_VOID, _UINT])
    _xxh32_digest = _bind(_XXH_HELD, "XXH32_digest", _UINT, [_VOID])
except (OSError, AttributeError):
    AVAILABLE = False
else:
    AVAILABLE = True

def _xxh32_update(state: int, address: int, n: int) -> None:
    (_xxh32_update_free if n >= GIL_FREE_BYTES else _xxh32_update_held)(state, address, n)


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
    if (_xxh32(bytes(head[4:6]), 2, 0) >> 8) & 0xFF != hc:
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
                     ring: int = 1, hash_aside: bool = False) -> Iterator[memoryview]:
    """Decompress one frame (``chunks`` start with its header) whose ``layout`` is known; yield each block.

    A yielded view is valid until the caller asks for the ``ring``-th piece after it: its
    buffer is then reused (the caller copies what it keeps longer). With ``hash_aside``
    the content checksum of big blocks is computed on a thread of its own while the
    caller works on the block. Raises CorruptObject, with the messages of
    ``lib.litestream.lz4.decompress_chunks``, when a block does not decode or exceeds the
    frame's block size, the content checksum fails, the frame ends early, bytes follow it,
    or it inflates past ``limit`` bytes.
    """
    out = _ring(layout.block_max, ring)
    source = _Source(chunks)
    if not source.fill(HEADER_SIZE):
        raise _truncated(key)
    source.skip(HEADER_SIZE)
    content = _ContentHash(hash_aside) if layout.content_checksum else None
    try:
        produced = 0
        while True:
            size = source.u32()
            if size is None:
                raise _truncated(key)
            if size == 0:
                break
            buf, address = out.take()
            if content is not None:
                content.before_reuse(address)
            n = _block(key, source, size, layout.block_max, buf, address)
            produced += n
            if produced > limit:
                raise CorruptObject(key, f"decompresses to more than {limit} bytes, beyond what its headers allow")
            if content is not None:
                content.add(address, n)
            yield memoryview(buf)[:n]
        if content is not None:
            stored = source.u32()
            if stored is None:
                raise _truncated(key)
            if stored != content.digest():
                raise CorruptObject(key, "invalid LZ4 data (content checksum mismatch)")
    finally:
        if content is not None:
            content.free()
    if source.has_more():
        raise CorruptObject(key, "extra bytes after the end of the LZ4 frame")


class _ContentHash:
    """The XXH32 of a frame's content, block by block in order: inline, or for blocks of at
    least ``ASIDE_MIN_BYTES`` (when ``aside``) on the hash thread, which keeps the order."""

    ASIDE_MIN_BYTES = 256 << 10  # below this a thread handoff costs about what hashing does

    def __init__(self, aside: bool):
        self.state = _xxh32_create()
        _xxh32_reset(self.state, 0)
        self.aside = aside
        self.pending: dict[int, threading.Event] = {}  # buffer address -> its hash is done

    def add(self, address: int, n: int) -> None:
        if self.aside and n >= self.ASIDE_MIN_BYTES:
            self.pending[address] = _hash_thread().submit(self.state, address, n)
        else:
            self.settle()
            _xxh32_update(self.state, address, n)

    def before_reuse(self, address: int) -> None:
        """Wait until the buffer at ``address`` is hashed (it is about to be overwritten)."""
        done = self.pending.pop(address, None)
        if done is not None:
            done.wait()

    def settle(self) -> None:
        for done in self.pending.values():
            done.wait()
        self.pending.clear()

    def digest(self) -> int:
        self.settle()
        return _xxh32_digest(self.state)

    def free(self) -> None:
        self.settle()  # the hash thread may still use the state and the buffers
        _xxh32_free(self.state)


class _HashThread:
    """One daemon thread running XXH32 updates in the order they are submitted."""

    def __init__(self):
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="lz4-hash", daemon=True).start()

    def submit(self, state: int, address: int, n: int) -> threading.Event:
        done = threading.Event()
        self._tasks.put((state, address, n, done))
        return done

    def _run(self) -> None:
        while True:
            state, address, n, done = self._tasks.get()
            _xxh32_update(state, address, n)
            done.set()


_hash_lock = threading.Lock()
_hasher: _HashThread | None = None


def _hash_thread() -> _HashThread:
    global _hasher
    with _hash_lock:
        if _hasher is None:
            _hasher = _HashThread()
        return _hasher


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
