"""The v0.3 replay's output file: staged pages written partly (the least recently staged
first) and resizes in between must leave exactly the file a write-through would."""
from __future__ import annotations

import random

from lib.litestream.pages import STAGE_LIMIT_BYTES
from lib.litestream.v3.output import Output
from lib.litestream.v3.snapshot import SnapshotHeader

PAGE = 512


def test_partial_flushes_and_resizes_leave_the_last_version_of_every_page(tmp_path):
    rng = random.Random(21)
    path = tmp_path / "db"
    pages = 100000
    path.write_bytes(b"".join(bytes([n % 251]) * PAGE for n in range(pages)))  # the "snapshot"
    expected = {n + 1: bytes([n % 251]) * PAGE for n in range(pages)}
    output = Output(path, SnapshotHeader(PAGE, 1, pages), limit=1 << 40)
    hot = list(range(1, 60))  # pages rewritten again and again, like a b-tree's inner pages
    writes = 10 * STAGE_LIMIT_BYTES // PAGE  # enough to fill the stage several times
    for n in range(writes):
        pgno = rng.choice(hot) if n % 3 == 0 else rng.randint(1, pages + 50)
        page = rng.randbytes(PAGE)
        output.write_pages([(pgno, page)])
        expected[pgno] = page
        pages = max(pages, pgno)
        if n % 100000 == 99999:  # the end of a WAL index: a shrink, then later growth again
            pages = rng.randint(pages * 9 // 10, pages)
            output.set_pages(pages)
            expected = {p: v for p, v in expected.items() if p <= pages}
    output.set_pages(pages)
    output.close()
    data = path.read_bytes()
    assert len(data) == pages * PAGE
    for pgno in range(1, pages + 1):
        assert data[(pgno - 1) * PAGE : pgno * PAGE] == expected.get(pgno, bytes(PAGE)), pgno
