"""Streaming, bounded LZ4 frame decompression that names the object when it is bad."""
from __future__ import annotations

from typing import BinaryIO, Iterator

import lz4.frame

from lib.errors import CorruptObject
from lib.litestream import lz4_blocks

LZ4_MAGIC = b"\x04\x22\x4d\x18"

AGE_MAGIC = b"age-encryption.org/v1"

READ_CHUNK = 1 << 20

MAX_OUTPUT_PER_CALL = 1 << 20  # larger outputs are fresh mmap()s each call: page faults cost ~2x the decompression


def check_magic(key: str, head: bytes) -> None:
    """Raise CorruptObject unless ``head`` starts an LZ4 frame."""
    head = bytes(head)
    if len(head) >= 4 and AGE_MAGIC.startswith(head[: len(AGE_MAGIC)]):
        raise CorruptObject(key, "object is age-encrypted; restorable cannot decrypt replicas (unsupported)")
    if len(head) == 0:
        raise CorruptObject(key, "object is empty (0 bytes), expected an LZ4 frame")
    if len(head) < 4 or not head.startswith(LZ4_MAGIC):
        raise CorruptObject(key, f"not an LZ4 frame (starts with {head[:4].hex()})")


def decompress_pieces(key: str, chunks: Iterator[bytes], limit: int, ring: int = 1) -> Iterator[bytes | memoryview]:
    """``decompress_chunks``, with the same checks and errors, but each piece may be a view
    into a buffer reused when the caller asks for the ``ring``-th piece after it (the caller
    copies what it keeps longer): Litestream's frames decode without fresh memory this way
    (``lib.litestream.lz4_blocks``); other frames go through ``decompress_chunks``."""
    chunks = iter(chunks)
    first = next(chunks, b"")
    rest = _chain(first, chunks)
    layout = lz4_blocks.fast_layout(first[: lz4_blocks.HEADER_SIZE])
    if layout is None:
        return decompress_chunks(key, rest, limit)
    return lz4_blocks.decompress_views(key, rest, layout, limit, ring)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def decompress_chunks(key: str, chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """Decompress one LZ4 frame fed as ``chunks``; yield output pieces.

    Raises CorruptObject when the frame is invalid, its content checksum fails, it ends
    early, bytes follow it, or it inflates past ``limit`` bytes (a decompression bomb or
    a snapshot bigger than its header allows).
    """
    decompressor = lz4.frame.LZ4FrameDecompressor()
    produced = 0
    first = True
    for chunk in chunks:
        if first:
            check_magic(key, chunk[:21])
            first = False
        data = chunk
        while True:
            try:
                out = decompressor.decompress(data, max_length=MAX_OUTPUT_PER_CALL)
            except RuntimeError as exc:
                raise CorruptObject(key, f"invalid LZ4 data ({_lz4_reason(exc)})") from None
            data = b""
            if out:
                produced += len(out)
                if produced > limit:
                    raise CorruptObject(key, f"decompresses to more than {limit} bytes, beyond what its headers allow")
                yield out
            if decompressor.eof:
                if decompressor.unused_data or _has_more(chunks):
                    raise CorruptObject(key, "extra bytes after the end of the LZ4 frame")
                return
            if decompressor.needs_input:
                break
    if first:
        check_magic(key, b"")
    raise CorruptObject(key, "LZ4 frame is truncated (object ends before the frame does)")


def _has_more(chunks: Iterator[bytes]) -> bool:
    return any(len(c) for c in chunks)


def _lz4_reason(exc: RuntimeError) -> str:
    text = str(exc)
    if "ERROR_contentChecksum_invalid" in text:
        return "content checksum mismatch"
    return text.split("code: ")[-1] if "code: " in text else text


def iter_reader(reader: BinaryIO, size: int = READ_CHUNK) -> Iterator[bytes]:
    while True:
        chunk = reader.read(size)
        if not chunk:
            return
        yield chunk


def iter_bytes(data: bytes, size: int = 4 << 20) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield view[start : start + size]
