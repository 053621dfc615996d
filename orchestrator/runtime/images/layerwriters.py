"""Creating a layer's regular files off the thread that reads the tar.

With many small files, unpacking is bound by what the kernel does per file
(allocating an inode, a directory entry, journal credits), not by bytes: on a
busy ext4 one create can wait hundreds of microseconds for the journal. Those
waits overlap when several threads create files, and open/write/fchown/close
release the GIL, so the tar is still read by one thread, in order, while file
bodies are handed here and written by a worker thread. Where there are cores to
spare, every body taken whole goes to the worker. On two cores or fewer only
large ones do (`OFFLOAD_FROM`): the threads that inflate and hash the layer
(layerstream.py) already take much of the second core, and a worker writing
small files only adds GIL hand-offs, one per file (measured with
bench/images_bench.py: 10% slower there); a large body is one hand-off for a
long write without the GIL. Below that size, `submit` writes the file before
it returns.

The reading thread keeps every ordering rule of the tar: it makes directories,
links and nodes itself, and before it touches a path (replacing it, linking to
it, walking through it) it waits for a pending write of that path with
`wait_for`; before it closes a directory fd or removes a tree it waits for all
of them with `barrier`. A worker only ever creates a new name (O_EXCL,
O_NOFOLLOW) in a directory fd it was given, so it cannot write outside the
layer either. Memory stays bounded: `submit` blocks while too many bytes are
queued (bodies that are views of a mapped blob cost no memory, but the bound
keeps the worker from falling far behind all the same).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import queue
import threading
from typing import NamedTuple

from orchestrator.spec.errors import StackError

Parts = tuple[str, ...]
Owner = tuple[int, int]
Times = tuple[int, int]  # (atime_ns, mtime_ns)
Data = bytes | memoryview  # file contents, maybe a view of the tar reader's buffer

WORKERS = 1
OFFLOAD_FROM = 0 if len(os.sched_getaffinity(0)) > 2 else 256 << 10
"""Bodies of at least this many bytes go to the worker; smaller ones are written
by the thread that submits them."""
WRITEBACK_EVERY = 16 << 20  # bytes of a large file written between writeback starts
_WRITEBACK_FROM = 1 << 20  # files this large have their writeback started when done
_DIRECT_FROM = 256 << 10  # bodies this large may be written with direct I/O
_DIRECT_ALIGN = 4096  # what direct writes are cut to: a block of ext4 and most filesystems
_QUEUED_BYTES = 32 << 20  # file bodies waiting for a worker, at most
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LIBC = ctypes.CDLL(None, use_errno=True)
_SYNC_FILE_RANGE_WRITE = 2  # start writing dirty pages out; wait for nothing
_LIBC.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)


class FileJob(NamedTuple):
    parts: Parts  # the key `wait_for` knows it by
    name: str  # the tar entry, for errors
    parent: int  # borrowed directory fd, kept open by the tree until a barrier
    data: Data
    owner: Owner
    mode: int
    times: Times
    xattrs: dict[str, bytes]
    umask: int


def process_umask() -> int:
    """The process's umask, read without changing it (os.umask only sets it, and
    setting it back and forth races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o7777  # unknown: every file gets its mode by fchmod


def create_file(parent: int, leaf: str, mode: int) -> int:
    """The fd of a new, empty regular file `leaf` in `parent` (never an existing name),
    created with the permission bits of `mode`, less the umask."""
    return os.open(leaf, _CREATE_FLAGS, mode & 0o777, dir_fd=parent)


def finish_file(
    fd: int, name: str, owner: Owner, mode: int, times: Times, xattrs: dict[str, bytes],
    umask: int,
) -> None:
    """The entry's metadata, once the content is written: writing drops file
    capabilities (security.capability), and chown drops setuid/setgid bits. The
    mode was set at creation unless the umask took bits away or it has bits above
    the permissions (setuid, setgid, sticky): one syscall less for most files."""
    os.fchown(fd, *owner)
    if mode & (0o7000 | umask):
        os.fchmod(fd, mode)
    if xattrs:
        set_xattrs(fd, xattrs, name)
    os.utime(fd, ns=times)


def start_writeback(fd: int) -> None:
    """Have the disk start writing a finished file while the unpack goes on.

    The store flushes every layer (syncfs) before it publishes it, so these bytes
    must reach the disk before the layer counts anyway; started here, the disk
    writes them while later entries are still being created, instead of all at
    the end. Only for large files: for small ones it would be a syscall and a
    tiny write each. A hint: where it is not supported nothing changes.
    (ctypes calls run without the GIL.)
    """
    _LIBC.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def write_body(fd: int, data: Data, direct: bool = False) -> bool:
    """Write a whole file body into the new file `fd`, with its writeback started
    as for a streamed one.

    `direct`: the body is a view of a mapped blob, block-aligned in memory
    (layermap.py), so a large one may go to the disk by direct I/O. Returns
    whether direct I/O may be tried again: False once the filesystem refused it.
    """
    view = memoryview(data)
    written = 0
    if direct and len(view) >= _DIRECT_FROM:
        written, direct = _write_direct(fd, view[: len(view) // _DIRECT_ALIGN * _DIRECT_ALIGN])
    rest = view[written:]
    if len(rest) < _WRITEBACK_FROM:
        write_all(fd, rest)
        return direct
    for start in range(0, len(rest), WRITEBACK_EVERY):
        write_all(fd, rest[start : start + WRITEBACK_EVERY])
        start_writeback(fd)
    return direct


def _write_direct(fd: int, view: memoryview) -> tuple[int, bool]:
    """Write `view` at the start of the empty file `fd`, bypassing the page cache.

    A large body written through the page cache is copied there by the CPU and
    written out later; with O_DIRECT the disk takes it straight from the mapped
    blob, which on two cores leaves the CPU to hashing and to creating the small
    files (bench/images_bench.py, plain layers + sync: 0.27 s through the page
    cache, 0.19-0.21 s with this, where `cp -a` of the same tree takes 0.26 s).
    The page cache is not filled with image data either. The writes wait for the
    disk, but in the writer thread, while the tar reader goes on. Lengths are
    whole 4 KB blocks, so ext4 takes them without zeroing partial blocks; the
    rest of the body is written through the page cache. A filesystem that takes
    no direct I/O (or not from this alignment) refuses with EINVAL; what was
    written stays, and the caller goes on through the page cache.

    Returns (bytes written, whether direct I/O was accepted).
    """
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    written = 0
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        while written < len(view):
            done = os.write(fd, view[written:])
            if not done:  # never seen; taken as a refusal rather than retried forever
                return written, False
            written += done
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        return written, False
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return written, True


def write_all(fd: int, data: Data) -> None:
    written = os.write(fd, data) if data else 0
    if written < len(data):  # a short write: rare, for regular files
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def set_xattrs(target: int | str, xattrs: dict[str, bytes], name: str) -> None:
    for key, value in xattrs.items():
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as error:
            raise StackError(
                f"cannot set xattr {key!r} on layer entry {name!r}: {error.strerror}"
            ) from None


def _write_job(job: FileJob, direct: bool) -> bool:
    """Create the job's file; returns whether direct I/O may be tried again."""
    try:
        fd = create_file(job.parent, job.parts[-1], job.mode)
        try:
            direct = write_body(fd, job.data, direct)
            finish_file(fd, job.name, job.owner, job.mode, job.times, job.xattrs, job.umask)
        finally:
            os.close(fd)
    except OSError as error:
        raise StackError(f"cannot unpack layer entry {job.name!r}: {error.strerror}") from None
    return direct


class FileWriters:
    """A pool of threads writing small files; one per layer being unpacked."""

    def __init__(self, workers: int | None = None, direct_io: bool = False) -> None:
        """`direct_io`: bodies are aligned views of a mapped blob (see write_body)."""
        self._jobs: queue.SimpleQueue[FileJob | None] = queue.SimpleQueue()
        self._changed = threading.Condition()
        self._pending: set[Parts] = set()
        self._queued_bytes = 0
        self._waiting = False  # someone waits on _changed: workers only notify then
        self._error: BaseException | None = None
        self._workers = WORKERS if workers is None else workers
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._direct = direct_io  # set once by whichever thread finds it refused

    def submit(self, job: FileJob) -> None:
        """Queue `job`; raises the first error a worker met, so a bad layer stops early."""
        if not self._workers or len(job.data) < OFFLOAD_FROM:
            self._write(job)
            return
        if not self._threads:
            self._start()
        with self._changed:
            while self._queued_bytes > _QUEUED_BYTES and self._error is None:
                self._wait()
            self._raise_error()
            self._pending.add(job.parts)
            self._queued_bytes += len(job.data)
        self._jobs.put(job)

    def wait_for(self, parts: Parts) -> None:
        """Return once no write of `parts` is pending (raising a worker's error)."""
        if parts not in self._pending:  # read without the lock: only this thread adds
            return
        with self._changed:
            while parts in self._pending:
                self._wait()
            self._raise_error()

    def barrier(self) -> None:
        """Return once every queued file is written (raising a worker's error, unless
        closed: a layer given up on is already failing with an error of its own)."""
        if self._closed:
            return
        if not self._pending:
            self._raise_error_locked()
            return
        with self._changed:
            while self._pending:
                self._wait()
            self._raise_error()

    def close(self) -> None:
        """Stop the workers after what is queued (written, or skipped after an error)."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    # -- inside ------------------------------------------------------------------

    def _write(self, job: FileJob) -> None:
        if not _write_job(job, self._direct):
            self._direct = False

    def _start(self) -> None:
        for n in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"layer-write-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _wait(self) -> None:
        self._waiting = True
        self._changed.wait()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _raise_error_locked(self) -> None:
        with self._changed:
            self._raise_error()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            error: BaseException | None = None
            if self._error is None:  # after a failure the rest is only drained
                try:
                    self._write(job)
                except BaseException as raised:
                    error = raised
            with self._changed:
                if error is not None and self._error is None:
                    self._error = error
                self._pending.discard(job.parts)
                self._queued_bytes -= len(job.data)
                if self._waiting:
                    self._waiting = False
                    self._changed.notify_all()
