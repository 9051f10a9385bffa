"""Read a vault entry back: decompress its object into a file and prove it is the verified copy."""
from __future__ import annotations

import hashlib
from pathlib import Path

from lib.errors import CorruptObject
from lib.litestream.lz4 import decompress_chunks, iter_reader
from lib.litestream.pages import publish
from lib.vault.manifest import data_key
from lib.vault.store import Entry, VaultLocation


def fetch(location: VaultLocation, entry: Entry, out: Path) -> None:
    """Write ``entry``'s database to ``out``; raise ``CorruptObject`` unless its sha256 and
    size are the manifest's (``out`` is then left for the caller to delete)."""
    key = data_key(location.prefix, entry.day)
    digest = hashlib.sha256()
    size = 0
    with location.store.open(key) as reader, open(out, "wb") as dst:
        for piece in decompress_chunks(key, iter_reader(reader), entry.manifest.bytes):
            digest.update(piece)
            size += len(piece)
            dst.write(piece)
        dst.flush()
    if size != entry.manifest.bytes or digest.hexdigest() != entry.manifest.sha256:
        raise CorruptObject(key, f"decompresses to {size:,} bytes with sha256 {digest.hexdigest()[:16]}..., "
                                 f"the manifest says {entry.manifest.bytes:,} bytes, {entry.manifest.sha256[:16]}...")


def restore_to(db, which: str, out: Path, environ) -> Entry:
    """``jobs.restore --from-vault``: write the vault entry ``which`` (``latest`` or a day) of
    ``db`` to ``out``. ``out`` appears only once the copy matched its manifest, synced to
    disk before it is named; otherwise ``CorruptObject`` (exit 1) and nothing at ``out``.

    :raises ConfigError: the vault settings are unusable or there is no such entry.
    """
    from lib.vault.store import VaultSettings, find, locate

    location = locate(db, VaultSettings.from_environ(environ), environ)
    entry = find(location, which)
    tmp = out.with_name(f".{out.name}.restorable-tmp")
    try:
        fetch(location, entry, tmp)
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return entry
