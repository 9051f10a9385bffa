"""The block decoder (``lib.litestream.lz4_blocks``) against python-lz4's LZ4F decoder.

Every frame, sound or damaged, must give the same bytes or the same finding through
``decompress_pieces`` as through ``decompress_chunks``, whichever way the stored bytes are
cut into chunks, however many buffers are reused.
"""
from __future__ import annotations

import os
import struct

import lz4.frame
import pytest

from lib.errors import CorruptObject
from lib.litestream import lz4 as lz4stream
from lib.litestream import lz4_blocks

CONTENT = os.urandom(3 << 20) + bytes(9 << 20) + b"restorable" * 5000


def _cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _outcome(pieces) -> bytes | str:
    """The decoded bytes (each piece copied before the next is asked for), or the finding."""
    try:
        return b"".join(bytes(piece) for piece in pieces)
    except CorruptObject as exc:
        return exc.problem


def _both(data: bytes, chunk: int = 1 << 20, limit: int = 1 << 40, ring: int = 1):
    fast = _outcome(lz4stream.decompress_pieces("k", iter(_cut(data, chunk)), limit, ring))
    reference = _outcome(lz4stream.decompress_chunks("k", iter(_cut(data, chunk)), limit))
    return fast, reference


def _litestream_like(content_checksum: bool = True, block_size=lz4.frame.BLOCKSIZE_MAX4MB) -> bytes:
    """A frame shaped like pierrec/lz4's: independent blocks, no block checksums, no content size."""
    return lz4.frame.compress(CONTENT, block_size=block_size, block_linked=False, content_checksum=content_checksum,
                              store_size=False)


def _damaged(frame: bytes) -> dict[str, bytes]:
    first_block = struct.unpack_from("<I", frame, 7)[0] & 0x7FFFFFFF
    return {
        "truncated in the checksum": frame[:-3],
        "truncated mid-block": frame[: len(frame) // 2],
        "truncated after the header": frame[:7],
        "a byte after the frame": frame + b"x",
        "a flipped byte in a block": frame[:100] + bytes([frame[100] ^ 1]) + frame[101:],
        "a flipped byte in the content checksum": frame[:-2] + bytes([frame[-2] ^ 1]) + frame[-1:],
        "a block size over the maximum": frame[:7] + struct.pack("<I", (4 << 20) + 1) + frame[11:],
        "a block size past the end": frame[:7] + struct.pack("<I", first_block + len(frame)) + frame[11:],
        "an uncompressed block of garbage": frame[:7] + struct.pack("<I", 0x80000000 | 10) + b"0123456789" + frame[11:],
    }


def test_litestream_frames_take_the_block_path():
    assert lz4_blocks.fast_layout(_litestream_like()[:7]) == lz4_blocks.FrameLayout(4 << 20, True)
    assert lz4_blocks.fast_layout(_litestream_like(False)[:7]) == lz4_blocks.FrameLayout(4 << 20, False)


@pytest.mark.parametrize("frame", [
    lz4.frame.compress(CONTENT, block_linked=True),  # dependent blocks
    lz4.frame.compress(CONTENT, block_linked=False, store_size=True),  # a content size
    lz4.frame.compress(b"", block_linked=False),
])
def test_other_frames_go_to_lz4f(frame):
    assert lz4_blocks.fast_layout(frame[:7]) is None or len(frame) < 16
    fast, reference = _both(frame)
    assert fast == reference


def test_a_bad_header_checksum_goes_to_lz4f_and_is_a_finding():
    frame = bytearray(_litestream_like())
    frame[6] ^= 0xFF
    assert lz4_blocks.fast_layout(bytes(frame[:7])) is None
    fast, reference = _both(bytes(frame))
    assert fast == reference and "LZ4" in fast


@pytest.mark.parametrize("ring", [1, 2, 3])
@pytest.mark.parametrize("chunk", [5, 4099, 1 << 20])
@pytest.mark.parametrize("checksum", [True, False])
def test_sound_frames_decode_to_the_same_bytes(ring, chunk, checksum):
    frame = _litestream_like(checksum)
    fast, reference = _both(frame, chunk=chunk, ring=ring)
    assert fast == reference == CONTENT


@pytest.mark.parametrize("block_size", [lz4.frame.BLOCKSIZE_MAX4MB, lz4.frame.BLOCKSIZE_MAX64KB])
@pytest.mark.parametrize("checksum", [True, False])
def test_damaged_frames_give_the_same_finding(block_size, checksum):
    for name, data in _damaged(_litestream_like(checksum, block_size)).items():
        fast, reference = _both(data, ring=2)
        assert fast == reference, name
        assert isinstance(fast, str) or not checksum, name  # without a checksum a flipped byte may decode


def test_a_frame_inflating_past_the_limit_is_a_finding():
    fast, reference = _both(_litestream_like(), limit=5 << 20)
    assert fast == reference == f"decompresses to more than {5 << 20} bytes, beyond what its headers allow"


def test_an_abandoned_frame_leaves_the_decoder_usable():
    pieces = lz4stream.decompress_pieces("k", iter(_cut(_litestream_like(), 1 << 20)), 1 << 40, 2)
    next(pieces)
    pieces.close()  # the consumer stops early (an error elsewhere)
    assert _both(_litestream_like(), ring=2)[0] == CONTENT
