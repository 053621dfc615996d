"""A layer's tar, decompressed and hashed in threads of their own.

Unpacking a layer is three kinds of work: inflating the blob (zlib, zstd),
hashing (the blob's digest, which the store checks, and the tar's diff id), and
creating files. All mostly run outside the GIL (the inflaters and hashlib
release it on large buffers, and so do the file syscalls), so a thread that
decompresses ahead and one that hashes behind let them overlap instead of
taking turns. The inflating thread reads the blob itself and hashes the
compressed bytes as it goes.

An uncompressed layer has no inflating thread: its tar is read straight from
the blob by the unpacking thread, a megabyte at a time, and hashed once by the
hashing thread, since its blob digest and diff id are one digest. Measured with
bench/images_bench.py, a thread that only read the file ahead cost more in GIL
hand-offs than the reads themselves.

The tar reader takes file contents as memoryviews of these chunks (`read_view`),
so a file's bytes are copied once, into the kernel, however they were sliced.

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
from typing import Any, BinaryIO, cast

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
    """The uncompressed tar of a layer blob, and the digests of both.

    Use it as a context manager: leaving stops and joins its threads, even when
    the reader gave up half-way. `digest` (the diff id) and `blob_digest` are
    known once `read` has returned b"" — `drain` gets there.
    """

    whole_bodies = False
    """`read_view` returns at most what one chunk holds: large file bodies are streamed."""
    direct_io = False
    """Its views are of chunks in memory, not block-aligned: written through the page cache."""

    def __init__(self, blob: BinaryIO) -> None:
        head = _read_head(blob)
        self._blob = blob
        self._hash = _Hasher()  # of the tar: the diff id
        self._chunk: bytes = b""
        self._offset = 0
        self._ended = False
        self._thread: threading.Thread | None = None
        self._compressed = _decompressor(head) is not None
        if self._compressed:
            self._blob_hash = hashlib.sha256()  # of the compressed bytes, in the producer
            self._raw = _raw_chunks(head, blob, self._blob_hash)
            self._chunks = _decompressed_chunks(head, self._raw)
            self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUE_CHUNKS)
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._produce, name="layer-inflate", daemon=True
            )
        else:
            self._pending_head: bytes | None = head

    def __enter__(self) -> DecompressedLayer:
        self._hash.start()
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():  # unblock a producer waiting for room
                with contextlib.suppress(queue.Empty):
                    self._queue.get(timeout=0.05)
            self._thread.join()
        self._hash.close()

    def _produce(self) -> None:
        try:
            for chunk in self._chunks:
                self._hash.put(chunk)
                while not self._stop.is_set():
                    try:
                        self._queue.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            for _ in self._raw:  # bytes after the compressed stream are the blob's too
                pass
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

    def _next_chunk(self) -> bool:
        """Move on to the next chunk; False at the end of the tar."""
        if self._ended:
            return False
        if self._thread is None:
            chunk = self._pending_head or self._blob.read(CHUNK)
            self._pending_head = None
            if not chunk:
                self._hash.close()
                self._ended = True
                return False
            self._hash.put(chunk)
            self._chunk, self._offset = chunk, 0
            return True
        item = self._queue.get()
        if item is None or isinstance(item, BaseException):
            self._ended = True
            if item is None:
                return False
            raise item
        self._chunk, self._offset = item, 0
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left if negative), b"" at the end."""
        if size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        while self._offset >= len(self._chunk):
            if not self._next_chunk():
                return b""
        start = self._offset
        self._offset = min(start + size, len(self._chunk))
        if start == 0 and self._offset == len(self._chunk):
            return self._chunk
        return self._chunk[start : self._offset]

    def read_view(self, size: int) -> memoryview:
        """As `read`, without copying: a view of the chunk the bytes are in."""
        while self._offset >= len(self._chunk):
            if not self._next_chunk():
                return memoryview(b"")
        start = self._offset
        self._offset = min(start + size, len(self._chunk))
        return memoryview(self._chunk)[start : self._offset]

    def drain(self) -> None:
        """Read whatever is left, e.g. the zero blocks after the tar's end marker."""
        self._offset = len(self._chunk)
        while self._next_chunk():
            self._offset = len(self._chunk)

    @property
    def digest(self) -> str:
        """The diff id: the sha256 of the tar (call once all is read)."""
        return f"sha256:{self._hash.hexdigest()}"

    @property
    def blob_digest(self) -> str:
        """The sha256 of the blob as stored (call once all is read)."""
        if not self._compressed:
            return self.digest
        return f"sha256:{self._blob_hash.hexdigest()}"


class _Hasher:
    """sha256 of the chunks `put` here, computed by a thread of its own.

    Hashing the tar costs as much CPU as inflating a third of it with ISA-L; in
    the inflating thread it would make that thread the slowest of the pipeline.
    hashlib releases the GIL on large buffers, so this runs beside the others.
    Memory stays bounded by tokens: `put` takes one, hashing a chunk gives it
    back. They are a SimpleQueue, not a Semaphore, because the queue is C: this
    thread then holds the GIL for microseconds per chunk, which the unpacking
    thread would otherwise wait for.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._room: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(_QUEUE_CHUNKS):
            self._room.put(None)
        self._hash = hashlib.sha256()
        self._thread = threading.Thread(target=self._work, name="layer-hash", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, chunk: bytes) -> None:
        self._room.get()
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
            self._room.put(None)


def _read_head(blob: BinaryIO) -> bytes:
    head = b""
    while len(head) < _HEAD:
        piece = blob.read(_HEAD - len(head))
        if not piece:
            break
        head += piece
    return head


def is_compressed(head: bytes) -> bool:
    """Whether a blob starting with `head` (its first 10 bytes or more) is compressed."""
    return _decompressor(head) is not None


def _decompressor(head: bytes) -> str | None:
    """The compression that a blob starting with `head` uses, None for a plain tar.

    Archives written by some tools label gzipped layers as plain tars and the
    reverse, so the media type is not trusted for this.
    """
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if _BZIP2_MAGIC.match(head):
        return "bzip2"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    return None


def _decompressed_chunks(head: bytes, compressed: Chunks) -> Chunks:
    kind = _decompressor(head)
    if kind == "gzip":
        return _gunzip(compressed)
    if kind == "zstd":
        return _from_file(lambda: zstandard.ZstdDecompressor().stream_reader(
            _ChunkFile(compressed), read_across_frames=True, closefd=False
        ))
    source = cast(BinaryIO, _ChunkFile(compressed))
    if kind == "bzip2":
        return _from_file(lambda: bz2.BZ2File(source))
    return _from_file(lambda: lzma.LZMAFile(source))


def _raw_chunks(head: bytes, blob: BinaryIO, digest: Any) -> Chunks:
    if head:
        digest.update(head)
        yield head
    while chunk := blob.read(CHUNK):
        digest.update(chunk)
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
