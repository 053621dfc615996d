"""An uncompressed layer blob read through a memory mapping of its file.

Blobs in the store are files that are never changed once written, and most
layers a `docker save` archive holds are plain tars. Such a layer is mapped
rather than read: the tar reader, the hashing thread and the thread writing
large file bodies all take their bytes from the page cache itself, where
reading first copied every byte into a buffer of ours (on the bench's 200 MB of
layers, the unpacking process's system time went from 0.20 to 0.18 s). And a
file body is a view of the mapping however large it is, so large files need no
streaming: they are handed whole to a writer thread, which writes them, past
the page cache where it can (layerwriters.py), while this thread goes on
creating the small ones.

The hash is computed by a thread of its own over the whole mapping, ahead of or
behind the reader as it happens; the two share nothing but the pages. Pages
both have passed are dropped from the mapping as the reader goes (they stay in
the page cache), so the process's resident size grows by some 32 MB and the
largest file being written, not by the whole layer.

A file that shrinks while mapped would fault (SIGBUS) when its lost pages are
read, so only blobs that nothing rewrites may be given here: the store writes a
blob under a temporary name and renames it, and only ever unlinks it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import stat
import threading
from types import TracebackType
from typing import BinaryIO

from orchestrator.runtime.images.layerstream import CHUNK, is_compressed

_DROP_EVERY = 32 << 20  # bytes read between drops of the pages behind both threads
_PAGE = mmap.PAGESIZE
# One mapped layer is unpacked at a time in a process: one already keeps two
# cores busy (reading the tar, hashing, writing large files), and two at once
# only fight over the GIL (bench/images_bench.py, eight 25 MB layers: 0.29 s
# two at a time, 0.19 s one after the other). Compressed layers still go two at
# a time beside it: their inflating threads run without the GIL.
_ONE_AT_A_TIME = threading.Lock()


def mapped_layer(blob: BinaryIO) -> MappedLayer | None:
    """The uncompressed tar `blob` as a MappedLayer, from its current position; None
    when it is compressed, empty, not a regular file, or cannot be mapped."""
    try:
        fd = blob.fileno()
        start = blob.tell()
        info = os.fstat(fd)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size <= start:
        return None
    if is_compressed(os.pread(fd, 16, start)):
        return None
    try:
        mapping = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    blob.seek(0, io.SEEK_END)  # the blob is read to its end, as by DecompressedLayer
    return MappedLayer(mapping, start)


class MappedLayer:
    """The same reading interface as DecompressedLayer, over a mapped file.

    Use it as a context manager: leaving waits for the hash (or, on an error,
    stops the hashing thread) and unmaps the file once no view of it is held
    any more.
    """

    whole_bodies = True
    """`read_view` returns all that is asked for: no file body needs streaming."""

    def __init__(self, mapping: mmap.mmap, start: int) -> None:
        # Tar bodies start on 512-byte blocks of the tar; when the tar starts on a
        # page of the mapping, they are aligned in memory as direct I/O wants.
        self.direct_io = start % _PAGE == 0
        self._mapping = mapping
        self._view = memoryview(mapping)
        self._start = start
        self._position = start
        self._dropped = 0  # pages below this offset were dropped from the mapping
        self._hashed = start  # how far the hashing thread got (read racily: a hint)
        self._hash = hashlib.sha256()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hash_all, name="layer-hash", daemon=True)

    def __enter__(self) -> MappedLayer:
        _ONE_AT_A_TIME.acquire()
        try:
            with contextlib.suppress(OSError):  # a hint: the kernel reads ahead further
                self._mapping.madvise(mmap.MADV_SEQUENTIAL)
            self._thread.start()
        except BaseException:
            _ONE_AT_A_TIME.release()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            self._stop.set()  # given up on: the digest is not wanted
        self._thread.join()
        self._view.release()  # the slices handed out stay valid: they hold the mapping
        # Views handed out may still be alive (in a traceback, say): then the
        # mapping goes when the last of them does.
        with contextlib.suppress(BufferError):
            self._mapping.close()
        _ONE_AT_A_TIME.release()

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left if negative), b"" at the end."""
        return bytes(self.read_view(len(self._view) if size < 0 else size))

    def read_view(self, size: int) -> memoryview:
        """The next `size` bytes (fewer only at the end), as a view of the mapping."""
        start = self._position
        self._position = min(start + size, len(self._view))
        if self._position - self._dropped >= _DROP_EVERY:
            self._drop_behind()
        return self._view[start : self._position]

    def drain(self) -> None:
        self._position = len(self._view)

    @property
    def digest(self) -> str:
        """The diff id, which is also the blob's digest (call once all is read)."""
        self._thread.join()
        return f"sha256:{self._hash.hexdigest()}"

    @property
    def blob_digest(self) -> str:
        return self.digest

    def _hash_all(self) -> None:
        view = self._view
        for offset in range(self._start, len(view), CHUNK):
            if self._stop.is_set():
                return
            self._hash.update(view[offset : offset + CHUNK])  # without the GIL
            self._hashed = offset + CHUNK

    def _drop_behind(self) -> None:
        """Unmap the pages that the reader and the hasher are both past (a later
        touch, by a writer thread still writing a body from there, maps them again
        from the page cache)."""
        end = min(self._position, self._hashed) // _PAGE * _PAGE
        if end > self._dropped:
            with contextlib.suppress(OSError):
                self._mapping.madvise(mmap.MADV_DONTNEED, self._dropped, end - self._dropped)
            self._dropped = end
