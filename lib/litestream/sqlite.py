"""SQLite file-format facts both layouts rely on (``https://sqlite.org/fileformat.html``, "The Database Header")."""
from __future__ import annotations

MAGIC = b"SQLite format 3\x00"

HEADER_SIZE = 100

MIN_PAGE_SIZE = 512

MAX_PAGE_SIZE = 65536

PENDING_BYTE = 0x40000000  # SQLite's lock byte (1 GiB): the page holding it never holds data


def is_valid_page_size(size: int) -> bool:
    """A power of two in 512..65536."""
    return MIN_PAGE_SIZE <= size <= MAX_PAGE_SIZE and size & (size - 1) == 0


def lock_pgno(page_size: int) -> int:
    """The lock page (the page holding byte offset 1 GiB), never stored by Litestream."""
    return PENDING_BYTE // page_size + 1


def page_size_of(header: bytes) -> int:
    """The page size in a database header (bytes 16-17, big-endian; 1 means 65536)."""
    raw = int.from_bytes(header[16:18], "big")
    return MAX_PAGE_SIZE if raw == 1 else raw


def change_counter_of(header: bytes) -> int:
    """The file change counter (bytes 24-27), stamped anew by every write transaction."""
    return int.from_bytes(header[24:28], "big")


def declared_pages(header: bytes) -> int | None:
    """The in-header database size (bytes 28-31), when SQLite would trust it: non-zero and
    written by the same transaction as the change counter ("version-valid-for", bytes 92-95)."""
    pages = int.from_bytes(header[28:32], "big")
    valid_for = int.from_bytes(header[92:96], "big")
    return pages if pages and change_counter_of(header) == valid_for else None
