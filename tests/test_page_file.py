"""``lib.litestream.pages.PageFile``: a restore's output written around the page cache.

What a restore relies on: whatever mix of writes it makes (long aligned runs that go to the
disk directly, scattered or unaligned pages that go through the page cache, writes over
earlier ones of the other kind), the file holds exactly the bytes last written at each
offset, and a file swapped in at the path after creation is never written through.
"""
from __future__ import annotations

import os
import random

import pytest

from lib.litestream import pages
from lib.litestream.pages import DIRECT_ALIGN, DIRECT_CHUNK_BYTES, DIRECT_MIN_BYTES, PageFile

PAGE = 4096


def _writes(seed: int, pages: int = 2048) -> list[tuple[int, list[bytes]]]:
    """A seeded mix: long runs (direct), single pages (cached), unaligned slivers (cached),
    runs longer than the direct buffer, and overwrites of every kind."""
    rng = random.Random(seed)
    out = []
    for _ in range(60):
        kind = rng.choice(("run", "long", "page", "sliver"))
        if kind == "run":
            count = rng.randrange(DIRECT_MIN_BYTES // PAGE, 4 * DIRECT_MIN_BYTES // PAGE)
            start = rng.randrange(0, pages - count)
            out.append((start * PAGE, [rng.randbytes(PAGE) for _ in range(count)]))
        elif kind == "long":
            count = DIRECT_CHUNK_BYTES // PAGE + rng.randrange(1, 64)
            start = rng.randrange(0, pages - count)
            out.append((start * PAGE, [rng.randbytes(PAGE) for _ in range(count)]))
        elif kind == "page":
            out.append((rng.randrange(0, pages) * PAGE, [rng.randbytes(PAGE)]))
        else:
            offset = rng.randrange(0, pages * PAGE - 3000)
            out.append((offset, [rng.randbytes(rng.randrange(1, 3000))]))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("direct", [True, False])
def test_any_mix_of_writes_leaves_the_bytes_last_written(tmp_path, seed, direct):
    path = tmp_path / "out.db"
    model = bytearray()
    with PageFile.create(path, direct=direct) as f:
        for offset, buffers in _writes(seed):
            f.pwritev(buffers, offset)
            data = b"".join(buffers)
            if len(model) < offset + len(data):
                model.extend(bytes(offset + len(data) - len(model)))
            model[offset:offset + len(data)] = data
            assert os.pread(f.fd, len(data), offset) == data  # reads see it at once
        still_direct = f.direct
    assert path.read_bytes() == bytes(model)
    assert still_direct == direct  # this file system (the tests' scratch) took every direct write
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_memoryviews_into_reused_buffers_are_written_as_they_were(tmp_path):
    """The snapshot writer hands views into a decoder's buffer: the bytes at call time count."""
    buffer = bytearray(os.urandom(2 * DIRECT_MIN_BYTES))
    path = tmp_path / "out.db"
    with PageFile.create(path, direct=True) as f:
        f.pwritev([memoryview(buffer)[:DIRECT_MIN_BYTES]], 0)
        first = bytes(buffer[:DIRECT_MIN_BYTES])
        buffer[:] = os.urandom(len(buffer))
        f.pwritev([memoryview(buffer)], DIRECT_MIN_BYTES)
    assert path.read_bytes() == first + bytes(buffer)


def test_a_file_swapped_in_at_the_path_is_never_written_through(tmp_path):
    """The direct descriptor is opened by name after creation: if the name now leads to
    another file, only the created file's own descriptor is used."""
    path = tmp_path / "out.db"
    created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    path.rename(tmp_path / "moved.db")
    path.write_bytes(b"not yours")
    f = PageFile(created, path, direct=True)
    try:
        assert not f.direct
        f.pwritev([bytes(range(256)) * (DIRECT_MIN_BYTES // 256)], 0)
    finally:
        f.close()
    assert path.read_bytes() == b"not yours"
    assert (tmp_path / "moved.db").read_bytes() == bytes(range(256)) * (DIRECT_MIN_BYTES // 256)


def test_the_process_choice_applies_unless_a_file_says_otherwise(tmp_path):
    def direct(name: str, **kwargs) -> bool:
        with PageFile.create(tmp_path / name, **kwargs) as f:
            return f.direct

    assert not direct("a.db")  # off by default: jobs.verify reads the file back
    with pages.page_cache_bypassed(True):
        assert direct("b.db")
        assert not direct("c.db", direct=False)
    assert not direct("d.db")  # the choice ends with the block


def test_close_is_idempotent_and_releases_both_descriptors(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    f = PageFile.create(tmp_path / "out.db", direct=True)
    f.pwritev([bytes(DIRECT_ALIGN * 64)], 0)
    f.close()
    f.close()
    assert len(os.listdir("/proc/self/fd")) == before


def _resident_pages(path) -> int:
    """How many of the file's pages the page cache holds (``mincore`` of a private map)."""
    import ctypes
    import mmap

    size = os.path.getsize(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        libc = ctypes.CDLL(None, use_errno=True)
        address = ctypes.addressof(ctypes.c_char.from_buffer(m))
        try:
            if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del address  # the export of ``m`` ends with the ctypes object
        return sum(v & 1 for v in vec)


@pytest.fixture(scope="module", params=["0.3.13", "0.5.17"])
def megabytes_replica(request, tmp_path_factory, s3_server):
    """A replica of a ~3 MB database (the session's are ~100 KB: too small for a direct write)."""
    from tests.support.replicas import build_replica

    return build_replica(request.param, "s3", tmp_path_factory.mktemp("pagefile"), s3=s3_server,
                         rows=960, blob_bytes=3000)


@pytest.mark.slow
def test_jobs_restore_writes_around_the_page_cache_unless_it_reads_the_file_back(megabytes_replica, tmp_path):
    """``jobs.restore`` leaves (most of) the database out of the page cache; with ``--sha256``
    it reads the file back, so it writes through the cache. Same bytes either way."""
    from tests.support import run_job
    from tests.support.replicas import sha256_file

    replica = megabytes_replica
    resident = {}
    for name, extra in (("direct", ()), ("cached", ("--sha256",))):
        out = tmp_path / f"{name}.db"
        proc = run_job("jobs.restore", "--config", replica.config_path, "-o", out, *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        resident[name] = _resident_pages(out)  # before reading it here
        assert sha256_file(out) == replica.reference_sha256
    total = (os.path.getsize(tmp_path / "direct.db") + 4095) // 4096
    assert resident["cached"] == total
    assert resident["direct"] < total // 2, resident
