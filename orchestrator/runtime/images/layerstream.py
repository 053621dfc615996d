"""A layer's tar, decompressed and hashed in threads of their own.

Unpacking a layer is three kinds of work: inflating the blob (zlib, zstd),
hashing the tar for its diff id (sha256), and creating files. All mostly run
outside the GIL (the inflaters and hashlib release it on large buffers, and so
do the file syscalls), so a thread that decompresses ahead and one that hashes
behind it let them overlap instead of taking turns. The inflating thread also
reads the blob itself, so whatever the blob stream does per read (hashing the
blob's own digest) moves off the unpacking thread too.

The pipes between the threads are bounded queues of chunks, so memory stays at
a few megabytes however large the layer, and each decompression call is capped
in output: a small blob that inflates to gigabytes ("zip bomb") is produced a
chunk at a time, as the tar reader asks for it.

gzip is inflated by ISA-L (the `isal` package) when it is installed, about
twice as fast as zlib, else by zlib; either directly (wbits=31: gzip header and
trailer, whose CRC-32 and length the inflater checks itself) rather than through
`gzip.GzipFile`, which adds a Python-level CRC pass and per-read overhead.
Concatenated gzip members are one stream, as gzip(1) and Go's reader treat them.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import lzma
import queue
import re
import threading
import zlib
from collections.abc import Callable, Generator
from types import TracebackType
from typing import BinaryIO, cast

import zstandard

from orchestrator.spec.errors import StackError

try:
    from isal import isal_zlib as inflate_module  # same API as zlib's; releases the GIL too

    _INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, inflate_module.error)
except ImportError:  # an optional speed-up: zlib gives the same bytes
    inflate_module = zlib  # type: ignore[no-redef]
    _INFLATE_ERRORS = (zlib.error,)

CHUNK = 1 << 20
"""Bytes read from the blob, and the most one decompression call may produce."""

_QUEUE_CHUNKS = 8  # decompressed chunks waiting for the tar reader: at most ~8 MB

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")  # "BZh" alone could start a tar member's name
_XZ_MAGIC = b"\xfd7zXZ\x00"
_HEAD = 10

Chunks = Generator[bytes, None, None]


class DecompressedLayer:
    """The uncompressed tar of a layer blob, read while a thread inflates ahead.

    Use it as a context manager: leaving stops and joins its threads, even when
    the reader gave up half-way. `digest` (the diff id) is known once `read`
    has returned b"" — `drain` gets there.
    """

    def __init__(self, blob: BinaryIO, plain_digest: Callable[[], str] | None = None) -> None:
        """`plain_digest`, when given, is the digest of `blob`'s bytes once they are all
        read (the store verifies every blob as it reads it): for an uncompressed layer
        that is the diff id already, and hashing the same bytes twice is a fifth of an
        unpack's CPU."""
        self._chunks, compressed = _chunks_for(blob)
        self._plain_digest = None if compressed else plain_digest
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._hash: _Hasher | None = None if self._plain_digest else _Hasher()
        self._chunk = b""
        self._offset = 0
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name="layer-inflate", daemon=True)

    def __enter__(self) -> DecompressedLayer:
        if self._hash is not None:
            self._hash.start()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting for room
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()
        if self._hash is not None:
            self._hash.close()

    def _produce(self) -> None:
        try:
            for chunk in self._chunks:
                if self._hash is not None:
                    self._hash.put(chunk)
                while not self._stop.is_set():
                    try:
                        self._queue.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            if self._hash is not None:
                self._hash.close()  # the digest is known before the reader sees the end
            self._queue.put(None)
        except (EOFError, OSError, *_INFLATE_ERRORS, lzma.LZMAError, zstandard.ZstdError) as error:
            if isinstance(error, OSError) and error.errno is not None:
                self._queue.put(error)  # a real I/O error (disk, ...), reported by the caller
            else:
                self._queue.put(StackError(f"layer data is truncated or corrupt: {error}"))
        except BaseException as error:  # handed to the reader's thread, which raises it
            self._queue.put(error)
        finally:
            self._chunks.close()  # closes the zstd/bz2/xz reader of a layer given up on

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        while self._offset >= len(self._chunk):
            if self._ended:
                return b""
            item = self._queue.get()
            if item is None or isinstance(item, BaseException):
                self._ended = True
                if item is None:
                    return b""
                raise item
            self._chunk, self._offset = item, 0
        start = self._offset
        self._offset = min(start + size, len(self._chunk))
        if start == 0 and self._offset == len(self._chunk):
            return self._chunk
        return self._chunk[start : self._offset]

    def drain(self) -> None:
        """Read whatever is left, e.g. the zero blocks after the tar's end marker."""
        self._offset = len(self._chunk)
        while self.read(CHUNK):
            self._offset = len(self._chunk)

    @property
    def digest(self) -> str:
        if self._hash is None:
            assert self._plain_digest is not None
            return self._plain_digest()
        return f"sha256:{self._hash.hexdigest()}"


class _Hasher:
    """sha256 of the chunks `put` here, computed by a thread of its own.

    Hashing the tar costs as much CPU as inflating a third of it with ISA-L; in
    the inflating thread it would make that thread the slowest of the pipeline.
    hashlib releases the GIL on large buffers, so this runs beside the others.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._room = threading.BoundedSemaphore(_QUEUE_CHUNKS)  # memory stays bounded
        self._hash = hashlib.sha256()
        self._thread = threading.Thread(target=self._work, name="layer-hash", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, chunk: bytes) -> None:
        self._room.acquire()
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait until everything put is hashed (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def _work(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)
            self._room.release()


def _chunks_for(blob: BinaryIO) -> tuple[Chunks, bool]:
    """The decompressed chunks of `blob`, and whether it was compressed at all; the
    compression comes from its first bytes.

    Archives written by some tools label gzipped layers as plain tars and the
    reverse, so the media type is not trusted for this.
    """
    head = b""
    while len(head) < _HEAD:
        piece = blob.read(_HEAD - len(head))
        if not piece:
            break
        head += piece
    compressed = _raw_chunks(head, blob)
    if head.startswith(_GZIP_MAGIC):
        return _gunzip(compressed), True
    if head.startswith(_ZSTD_MAGIC):
        return _from_file(lambda: zstandard.ZstdDecompressor().stream_reader(
            _ChunkFile(compressed), read_across_frames=True, closefd=False
        )), True
    source = cast(BinaryIO, _ChunkFile(compressed))
    if _BZIP2_MAGIC.match(head):
        return _from_file(lambda: bz2.BZ2File(source)), True
    if head.startswith(_XZ_MAGIC):
        return _from_file(lambda: lzma.LZMAFile(source)), True
    return compressed, False


def _raw_chunks(head: bytes, blob: BinaryIO) -> Chunks:
    if head:
        yield head
    while chunk := blob.read(CHUNK):
        yield chunk


def _gunzip(compressed: Chunks) -> Chunks:
    inflater = inflate_module.decompressobj(31)
    pending = b""
    in_member = True
    while True:
        if not pending:
            pending = next(compressed, b"")
            if not pending:
                break
        if not in_member:
            # Between members: zero padding is allowed, anything else starts a member.
            pending = pending.lstrip(b"\0")
            if not pending:
                continue
            inflater, in_member = inflate_module.decompressobj(31), True
        out = inflater.decompress(pending, CHUNK)
        pending = inflater.unconsumed_tail
        if inflater.eof:
            pending, in_member = inflater.unused_data, False
        if out:
            yield out
    if in_member:
        raise EOFError("compressed data ended before the end-of-stream marker")


def _from_file(opener: Callable[[], BinaryIO]) -> Chunks:
    with opener() as plain:
        while chunk := plain.read(CHUNK):
            yield chunk


class _ChunkFile:
    """A chunk iterator as the file object the zstd, bz2 and xz readers want."""

    def __init__(self, chunks: Chunks) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        if self._offset >= len(self._chunk):
            self._chunk, self._offset = next(self._chunks, b""), 0
        start = self._offset
        self._offset = len(self._chunk) if size < 0 else min(start + size, len(self._chunk))
        return self._chunk[start : self._offset]

    def readinto(self, buffer: memoryview | bytearray) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)

    def readable(self) -> bool:
        return True
