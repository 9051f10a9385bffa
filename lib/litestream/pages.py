"""Writing database pages into the scratch file in page order.

Random 4 KiB ``pwrite`` calls into the page cache cost 45-75 us each on a small VM;
the same pages written in ascending order, consecutive ones gathered into one
``pwritev``, cost about 10 us (measured by ``bench/``). Both restorers stage the pages
they replay and write them with :func:`write_sorted`.
"""
from __future__ import annotations

import os
from typing import Mapping

WRITE_RUN_PAGES = 256  # consecutive pages per pwritev (IOV_MAX is 1024 on Linux)

STAGE_LIMIT_BYTES = 16 << 20  # staged pages are written out once they hold this much (RSS: +16 MiB at most)


def write_sorted(fd: int, pages: Mapping[int, bytes], page_size: int) -> None:
    """Write ``pages`` (page number -> page bytes) at their offsets, in ascending page order."""
    run: list[bytes] = []
    start = prev = 0
    for pgno in sorted(pages):
        if run and (pgno != prev + 1 or len(run) >= WRITE_RUN_PAGES):
            os.pwritev(fd, run, (start - 1) * page_size)
            run = []
        if not run:
            start = pgno
        run.append(pages[pgno])
        prev = pgno
    if run:
        os.pwritev(fd, run, (start - 1) * page_size)
