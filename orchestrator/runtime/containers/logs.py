"""A container's output turned into a timestamped JSON-lines log, rotated by size.

The container writes straight into two plain files in its directory,
`stdout.raw` and `stderr.raw`, which the launcher opened with O_APPEND and gave
it as fds 1 and 2. Nothing sits between the container and the disk, so a
container never blocks or gets SIGPIPE while the engine is down. `LogIngester`
is the other end: the keeper calls `ingest()` when a raw file changes, and it
turns the new bytes into lines of `container.log` in the format of Docker's
json-file driver, `{"log": "...\\n", "stream": "stdout", "time": "<RFC 3339>"}`.

Exactly once across keeper restarts: `log.offsets` records how far each raw
file has been ingested together with the size of `container.log` at that
moment. A new ingester cuts `container.log` back to that size and reads the raw
files on from those offsets, so lines written after the last record are
written again rather than lost or doubled. The record is rewritten (rarely:
see `COMMIT_EVERY`) before raw bytes are released, before a rotation and when
the container exits.

Raw files never grow on disk: bytes already in the log are released with
fallocate(PUNCH_HOLE | KEEP_SIZE). The logical size keeps growing, so the
writer's O_APPEND offsets and ours stay valid; only the blocks go away.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator.runtime.containers.log_format import format_log_time, split_entries

STREAMS = ("stdout", "stderr")
RAW_NAMES = {"stdout": "stdout.raw", "stderr": "stderr.raw"}
LOG_NAME = "container.log"
OFFSETS_NAME = "log.offsets"

COMMIT_EVERY = 1 << 20
"""Bytes ingested per stream between two records in `log.offsets` (each one costs an fsync).

It bounds what a raw file keeps on disk; between records, a crash is repaired
by cutting `container.log` back rather than by writing more often.
"""

READ_BUDGET = 1 << 20
"""Bytes read per stream in one `ingest()`, so a large backlog cannot stall the keeper's loop."""

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_BLOCK = 4096


def rotated_name(index: int) -> str:
    """`container.log` for 0 (the file being written), then `container.log.1`, `.2`, … older."""
    return LOG_NAME if index == 0 else f"{LOG_NAME}.{index}"


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """Release the blocks of a byte range, keeping the size; False if the filesystem can't."""
    result = _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err))


_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_fallocate.restype = ctypes.c_int


class _RawFile:
    """Where the ingester stands in one raw file.

    `consumed` bytes are in `container.log`; `pending` holds the bytes read
    after them that do not make a whole entry yet; `durable` is what
    `log.offsets` says, and nothing past it is ever released from disk.
    """

    def __init__(self, path: Path, offset: int, inode: int | None) -> None:
        self.path = path
        self.fd: int | None = None
        self.inode = inode
        self.consumed = offset
        self.durable = offset
        self.released = offset - offset % _BLOCK
        self.pending = b""
        self.can_punch = True

    def open(self) -> bool:
        if self.fd is not None:
            return True
        try:
            # Read-write only because fallocate refuses a read-only fd; we never write.
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        stat = os.fstat(fd)
        if stat.st_ino != self.inode or stat.st_size < self.consumed:
            # A different or shorter file than the one recorded: start it from the top.
            self.consumed = self.durable = self.released = 0
        self.inode, self.fd = stat.st_ino, fd
        return True

    def read(self) -> bool:
        """Read new bytes into `pending`; True when the file is read to its end."""
        if not self.open():
            return True
        assert self.fd is not None
        position = self.consumed + len(self.pending)
        available = os.fstat(self.fd).st_size - position
        if available <= 0:
            return True
        count = min(available, READ_BUDGET)
        self.pending += os.pread(self.fd, count, position)
        return count == available

    def release(self) -> None:
        """Give back the disk blocks of what `log.offsets` records as ingested."""
        if self.fd is None or not self.can_punch or self.durable <= self.released:
            return
        self.can_punch = _punch_hole(self.fd, self.released, self.durable - self.released)
        # The block under a partly covered end is zeroed, not freed; punch it again next time.
        self.released = self.durable - self.durable % _BLOCK

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class LogIngester:
    """Moves new output from a container's raw files into `container.log`.

    Single-threaded and synchronous: every call reads and writes local files
    only, never waits for the container. Use one ingester per container
    directory at a time.
    """

    def __init__(self, container_dir: Path, *, max_size: int = 10 * 2**20, max_files: int = 3):
        if max_size < 1 or max_files < 1:
            raise ValueError(f"max_size and max_files must be positive: {max_size}, {max_files}")
        self.dir = Path(container_dir)
        self.max_size = max_size
        self.max_files = max_files
        self.caught_up = True
        """False when the last `ingest()` left output unread (see READ_BUDGET): call it again."""
        self._last_ns = 0
        self._log_fd = -1
        self._recorded_size = -1  # the log size in `log.offsets`
        record = self._load_record()
        streams = record.get("streams", {})
        self._raw = {
            name: _RawFile(
                self.dir / RAW_NAMES[name],
                int(streams.get(name, {}).get("offset", 0)),
                streams.get(name, {}).get("inode"),
            )
            for name in STREAMS
        }
        self._open_log()
        if record:
            self._cut_back(record)
            self._recorded_size = int(record.get("log_size", 0))
        else:
            self._commit()

    def ingest(self, flush_partial: bool = False) -> int:
        """Append the new complete lines to the log; returns how many entries were written.

        `flush_partial` (the container has exited) also writes a last line that
        has no newline. All entries of one call carry the same time: the time
        the output was read, which is all the ingester can know (and within
        one call, stdout's entries come before stderr's).
        """
        now = max(time.time_ns(), self._last_ns)
        self._last_ns = now
        stamp = format_log_time(now)
        records: list[tuple[_RawFile, int, bytes]] = []
        caught_up = True
        for name, raw in self._raw.items():
            at_end = raw.read()
            caught_up = caught_up and at_end
            pieces, _ = split_entries(raw.pending, flush=flush_partial and at_end)
            suffix = f',"stream":"{name}","time":"{stamp}"}}\n'.encode()
            end = raw.consumed
            for piece in pieces:
                end += len(piece)
                text = json.dumps(piece.decode("utf-8", "replace"), ensure_ascii=False)
                records.append((raw, end, b'{"log":' + text.encode() + suffix))
        self.caught_up = caught_up
        self._write(records)
        if flush_partial or any(r.consumed - r.durable >= COMMIT_EVERY for r in self._raw.values()):
            self._commit()
        return len(records)

    def close(self) -> None:
        """Record where we are and close the files; unfinished lines wait in the raw files."""
        if self._log_fd < 0:
            return
        try:
            unrecorded = any(raw.consumed != raw.durable for raw in self._raw.values())
            if unrecorded or self._log_size != self._recorded_size:
                self._commit()
        finally:
            for raw in self._raw.values():
                raw.close()
            os.close(self._log_fd)
            self._log_fd = -1

    def __enter__(self) -> LogIngester:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _write(self, records: list[tuple[_RawFile, int, bytes]]) -> None:
        batch = bytearray()
        ends: dict[_RawFile, int] = {}
        for raw, end, line in records:
            size = self._log_size + len(batch)
            if size and size + len(line) > self.max_size:
                self._append(batch, ends)
                batch, ends = bytearray(), {}
                self._rotate()
            batch += line
            ends[raw] = end
        self._append(batch, ends)

    def _append(self, batch: bytearray, ends: dict[_RawFile, int]) -> None:
        view = memoryview(batch)
        while view:
            written = os.write(self._log_fd, view)
            self._log_size += written
            view = view[written:]
        for raw, end in ends.items():
            raw.pending = raw.pending[end - raw.consumed :]
            raw.consumed = end

    def _rotate(self) -> None:
        """container.log -> .1 -> .2 …, keeping `max_files` files in all."""
        self._commit()  # what is in the file being renamed must not be ingested again
        os.close(self._log_fd)
        self._log_fd = -1
        for index in range(self.max_files - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.dir / rotated_name(index - 1), self.dir / rotated_name(index))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / LOG_NAME)  # only still there when max_files is 1
        for extra in self.dir.glob(f"{LOG_NAME}.*"):  # left by a larger max_files before
            suffix = extra.name[len(LOG_NAME) + 1 :]
            if suffix.isdigit() and int(suffix) >= self.max_files:
                extra.unlink(missing_ok=True)
        self._open_log()
        self._commit()

    def _open_log(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self._log_fd = os.open(self.dir / LOG_NAME, flags, 0o640)
        stat = os.fstat(self._log_fd)
        self._log_inode, self._log_size = stat.st_ino, stat.st_size

    def _cut_back(self, record: dict[str, Any]) -> None:
        """Drop log lines written after the last record: their output will be read again."""
        size = int(record.get("log_size", 0))
        if record.get("log_inode") == self._log_inode and self._log_size > size:
            os.ftruncate(self._log_fd, size)
            self._log_size = size

    def _commit(self) -> None:
        """Write `log.offsets` (atomically), then release what it covers from the raw files."""
        record = {
            "streams": {
                name: {"offset": raw.consumed, "inode": raw.inode}
                for name, raw in self._raw.items()
            },
            "log_inode": self._log_inode,
            "log_size": self._log_size,
        }
        path = self.dir / OFFSETS_NAME
        temp = path.with_name(OFFSETS_NAME + ".tmp")
        with open(temp, "w", encoding="utf-8") as out:
            json.dump(record, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
        self._recorded_size = self._log_size
        for raw in self._raw.values():
            raw.durable = raw.consumed
            raw.release()

    def _load_record(self) -> dict[str, Any]:
        """The last record, or {} when there is none or it cannot be read."""
        try:
            record = json.loads((self.dir / OFFSETS_NAME).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}
