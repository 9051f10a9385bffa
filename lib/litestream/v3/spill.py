"""Pages of a WAL transaction not committed yet, set aside in an unnamed scratch file.

A transaction may be bigger than memory allows (a bulk load, a ``VACUUM`` rewrites every
page), and none of it may reach the output before its commit frame is seen: a transaction
cut short by damage must not be half applied. So the pages that do not fit wait on disk.
"""
from __future__ import annotations

import errno
import os
import tempfile
from array import array
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping

from lib.litestream.pages import WRITE_RUN_PAGES, pwritev_all

READ_PAGES = 256  # pages read back per pread


class Spill:
    """Pages appended in the order given and read back in that order; only their page numbers
    stay in memory (4 bytes a page).

    The file is created at the first :meth:`add`, in ``directory`` (the restore's scratch
    folder, whose free space a huge transaction then needs twice), with no name
    (``tempfile.TemporaryFile``): it is gone once closed, or when the process dies.
    """

    def __init__(self, directory: Path, page_size: int):
        self.directory = directory
        self.page_size = page_size
        self.pgnos = array("I")
        self._file: BinaryIO | None = None

    def __len__(self) -> int:
        return len(self.pgnos)

    def add(self, pages: Mapping[int, bytes]) -> None:
        """Append ``pages`` (page number -> page bytes, each ``page_size`` long)."""
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self.directory, buffering=0)
        fd = self._file.fileno()
        offset = len(self.pgnos) * self.page_size
        run: list[bytes] = []
        for pgno, page in pages.items():
            self.pgnos.append(pgno)
            run.append(page)
            if len(run) == WRITE_RUN_PAGES:
                pwritev_all(fd, run, offset)
                offset += len(run) * self.page_size
                run = []
        if run:
            pwritev_all(fd, run, offset)

    def pages(self) -> Iterator[tuple[int, bytes]]:
        """Every page added, in the order added (a page added twice comes twice, the later last)."""
        size = self.page_size
        for start in range(0, len(self.pgnos), READ_PAGES):
            count = min(READ_PAGES, len(self.pgnos) - start)
            data = os.pread(self._file.fileno(), count * size, start * size)
            if len(data) != count * size:
                raise OSError(errno.EIO, f"short read of the transaction's scratch file: {len(data)} of "
                              f"{count * size} bytes at offset {start * size}")
            for i in range(count):
                yield self.pgnos[start + i], data[i * size : (i + 1) * size]

    def clear(self) -> None:
        """Forget every page and remove the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.pgnos = array("I")
