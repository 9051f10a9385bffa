"""age decryption of Litestream 0.3 objects (``age: {identities, recipients}`` on a replica).

Litestream 0.3.13 encrypts every snapshot and WAL segment of such a replica as
``age(lz4(data))`` (``replica.go``: ``age.Encrypt`` wraps the writer the LZ4 writer writes
into) and decrypts with every configured identity before the LZ4 reader. Each
``identities`` entry is parsed like ``age.ParseIdentities``: identity-file text, one
``AGE-SECRET-KEY-1...`` per line, ``#`` comments and blank lines ignored. 0.5 refuses
age at start-up, so only v0.3 objects are ever encrypted.

Decryption uses ``pyrage`` (Rust ``age``). Errors are split by cause, because a wrong
key is not a damaged backup:

* no identity configured, or none of them opens the object: ``ConfigError`` naming the
  key to set (``age.identities`` of that replica, or ``$RESTORABLE_AGE_IDENTITIES``);
* anything else (bad header, failed MAC, truncated payload): ``CorruptObject``.

Identities are secrets: ``AgeKeys`` never shows them, and ``AgeKeys.texts`` is what the
config hands to log and report scrubbing.
"""
from __future__ import annotations

import io
import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import pyrage
from pyrage import x25519

from lib.errors import ConfigError, CorruptObject

AGE_MAGIC = b"age-encryption.org/v1"

IDENTITY_VAR = "RESTORABLE_AGE_IDENTITIES"

_NO_MATCH = "No matching keys found"

_QUEUE_PIECES = 16  # decrypted pieces (8 KiB each from pyrage) buffered ahead of the reader


@dataclass(frozen=True)
class AgeKeys:
    """The identities to try on an encrypted object, and where they came from (for messages)."""

    identities: tuple = field(repr=False)
    texts: tuple[str, ...] = field(repr=False)  # the secret key lines, for scrubbing
    origin: str = ""


def parse_identities(entries: Sequence[str], origin: str) -> AgeKeys:
    """Parse ``age.identities`` entries (or the environment variable's text) like ``age.ParseIdentities``.

    :raises ConfigError: an entry holds no identity or an invalid one; names ``origin``
        and the line number, never the value.
    """
    identities, texts = [], []
    for number, entry in enumerate(entries, start=1):
        found = 0
        for line_no, line in enumerate(str(entry).splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                identities.append(x25519.Identity.from_str(line))
            except (pyrage.IdentityError, ValueError):
                where = f"entry {number} line {line_no}" if len(entries) > 1 else f"line {line_no}"
                raise ConfigError(f"{origin}: {where} is not an age identity; expected an AGE-SECRET-KEY-1... "
                                  "line (age-keygen output)") from None
            texts.append(line)
            found += 1
        if not found:
            raise ConfigError(f"{origin}: entry {number} holds no age identity; expected an AGE-SECRET-KEY-1... line")
    return AgeKeys(identities=tuple(identities), texts=tuple(texts), origin=origin)


def is_encrypted(head: bytes | memoryview) -> bool:
    """Whether an object starting with ``head`` is age-encrypted (its first line is the age version)."""
    return bytes(head[: len(AGE_MAGIC)]) == AGE_MAGIC


def decrypt_whole(key: str, data: bytes, keys: AgeKeys | None) -> bytes:
    """Decrypt one whole object (a WAL segment). See the module docstring for the errors."""
    _require(key, keys)
    try:
        return pyrage.decrypt(bytes(data), list(keys.identities))
    except pyrage.DecryptError as exc:
        raise _decrypt_error(key, keys, exc) from None


def decrypt_chunks(key: str, chunks: Iterator[bytes], keys: AgeKeys | None) -> Iterator[bytes]:
    """Decrypt an object fed as ``chunks``, yielding plaintext as it is produced (a snapshot).

    pyrage decrypts a stream only through ``decrypt_io``, which pulls its input and pushes
    its output; it runs on a daemon thread that pulls from ``chunks`` here and hands pieces
    over a small queue. Closing this generator early stops that thread at its next piece.
    """
    _require(key, keys)
    pieces: queue.Queue = queue.Queue(maxsize=_QUEUE_PIECES)
    stop = threading.Event()
    worker = threading.Thread(target=_decrypt_into, args=(chunks, keys, pieces, stop), daemon=True,
                              name="age-decrypt")
    worker.start()
    try:
        while True:
            kind, value = pieces.get()
            if kind == "data":
                yield value
            elif kind == "end":
                return
            elif isinstance(value, pyrage.DecryptError):
                raise _decrypt_error(key, keys, value) from None
            else:
                raise value
    finally:
        stop.set()
        _drain(pieces)


def _decrypt_into(chunks: Iterator[bytes], keys: AgeKeys, pieces: queue.Queue, stop: threading.Event) -> None:
    reader, writer = _ChunkReader(chunks, stop), _QueueWriter(pieces, stop)
    try:
        pyrage.decrypt_io(reader, writer, list(keys.identities))
        _put(pieces, ("end", None), stop)
    except BaseException as exc:  # handed to the reading thread, which raises it
        # pyrage turns an exception raised by our reader or writer into a plain OSError:
        # hand over the original (a storage error must not pass for damage).
        cause = reader.error or writer.error or exc
        if isinstance(cause, _Stopped):
            return
        if isinstance(exc, OSError) and cause is exc:
            cause = pyrage.DecryptError(str(exc))  # the payload failed to authenticate
        try:
            _put(pieces, ("error", cause), stop)
        except _Stopped:
            return


class _Stopped(Exception):
    pass


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes], stop: threading.Event):
        self.chunks, self.stop, self.rest = chunks, stop, memoryview(b"")
        self.error: BaseException | None = None  # what the chunks raised, kept for the reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            return self._readinto(buffer)
        except BaseException as exc:
            self.error = exc
            raise

    def _readinto(self, buffer) -> int:
        if self.stop.is_set():
            raise _Stopped()
        while not self.rest:
            chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.rest = memoryview(chunk)
        n = min(len(buffer), len(self.rest))
        buffer[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n


class _QueueWriter(io.RawIOBase):
    def __init__(self, pieces: queue.Queue, stop: threading.Event):
        self.pieces, self.stop = pieces, stop
        self.error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            _put(self.pieces, ("data", bytes(data)), self.stop)
        except BaseException as exc:
            self.error = exc
            raise
        return len(data)


def _put(pieces: queue.Queue, item: tuple, stop: threading.Event) -> None:
    """Queue ``item``, giving up (``_Stopped``) once the reader has gone."""
    while not stop.is_set():
        try:
            pieces.put(item, timeout=0.2)
            return
        except queue.Full:
            continue
    raise _Stopped()


def _drain(pieces: queue.Queue) -> None:
    try:
        while True:
            pieces.get_nowait()
    except queue.Empty:
        return


def _require(key: str, keys: AgeKeys | None) -> None:
    if keys is None or not keys.identities:
        raise ConfigError(
            f"{key} is age-encrypted but no age identity is configured: set age.identities on this replica "
            f"in litestream.yml (the AGE-SECRET-KEY-1... line matching its age.recipients) or set {IDENTITY_VAR}")


def _decrypt_error(key: str, keys: AgeKeys, exc: Exception) -> Exception:
    if _NO_MATCH in str(exc):
        return ConfigError(
            f"{key} is age-encrypted for another key: no identity from {keys.origin} opens it; set the "
            f"identity matching the replica's age.recipients (age.identities or {IDENTITY_VAR})")
    return CorruptObject(key, f"age decryption failed ({exc}): the encrypted object is damaged or truncated")


def plain_chunks(key: str, chunks: Iterator[bytes], keys: AgeKeys | None) -> Iterator[bytes]:
    """``chunks`` of one stored object, decrypted when it is age-encrypted, else as they are."""
    chunks = iter(chunks)
    first = next(chunks, None)
    if first is None:
        return
    rest = _chain(first, chunks)
    yield from decrypt_chunks(key, rest, keys) if is_encrypted(first) else rest


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def keys_of(store) -> AgeKeys | None:
    """The identities a store's objects are decrypted with (``ReplicaConfig.open_store`` sets them)."""
    return getattr(store, "age_keys", None)
