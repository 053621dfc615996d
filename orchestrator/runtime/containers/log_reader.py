"""Reading a container's log: tail, since, until, and following it as it grows.

The log is `container.log` plus its rotated predecessors `container.log.1`,
`.2`, … (older as the number grows), JSON lines written by `LogIngester`. A
reader opens the files newest first and keeps them open, so a rotation that
renames them mid-read changes nothing for it; a file seen twice under two
names (renamed between two opens) is read once, by inode.

Following polls the current file every 50 ms instead of waiting on inotify.
The wait has to wake up regularly anyway to ask whether the container still
runs, a stat per tick costs nothing next to that, and polling needs no extra
fd or watch per follower and sees a rotation the same way it sees new data.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from orchestrator.runtime.containers.log_format import parse_log_time
from orchestrator.runtime.containers.logs import LOG_NAME, STREAMS, rotated_name

_CHUNK = 256 * 1024
_BATCH = 1 << 20  # bytes of log read per step, so a long log is yielded as it is read
POLL_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class LogEntry:
    time: str  # RFC 3339 as written in the log, what `logs --timestamps` shows
    stream: str  # "stdout" or "stderr"
    text: str  # the output, with its newline unless it is part of a longer line
    epoch: float  # `time` in seconds since the epoch, for comparisons


def read_log(
    container_dir: Path,
    *,
    tail: int | None = None,
    since: float | None = None,
    until: float | None = None,
    streams: Iterable[str] = STREAMS,
) -> list[LogEntry]:
    """The entries of the log, oldest first: the last `tail` of those in [since, until]."""
    reader = _LogReader(Path(container_dir), tail, since, until, streams)
    try:
        entries: list[LogEntry] = []
        while True:
            entries += reader.read()
            if not reader.has_more:
                break
    finally:
        reader.close()
    # Entries written while we were reading may have come after the last `tail`.
    return entries[len(entries) - tail :] if tail is not None and len(entries) > tail else entries


async def follow_log(
    container_dir: Path,
    *,
    is_running: Callable[[], bool],
    tail: int | None = None,
    since: float | None = None,
    until: float | None = None,
    streams: Iterable[str] = STREAMS,
) -> AsyncIterator[LogEntry]:
    """The entries `read_log` would give, then new ones as the container writes them.

    Ends once `until` has passed, or once everything is read after
    `is_running()` said False. The keeper ingests a container's last output
    before it records the exit, so nothing is written after that answer.
    """
    directory = Path(container_dir)
    reader = await trio.to_thread.run_sync(_LogReader, directory, tail, since, until, streams)
    try:
        while True:
            # Asked before reading: once the answer is "stopped" (or "past until"), the read
            # that follows sees everything there will be.
            running = is_running()
            ended = until is not None and time.time() > until
            for entry in await trio.to_thread.run_sync(reader.read):
                yield entry
            if reader.past_until:
                return
            if reader.has_more:
                continue
            if ended or not running:
                return
            await trio.sleep(POLL_INTERVAL)
    finally:
        reader.close()


class _OpenLog:
    def __init__(self, fd: int, inode: int) -> None:
        self.fd = fd
        self.inode = inode
        self.position = 0
        self.partial = b""  # the start of a line still being written


class _LogReader:
    """Reads forward through the rotated files, then the current one, as far as they go."""

    def __init__(
        self,
        container_dir: Path,
        tail: int | None,
        since: float | None,
        until: float | None,
        streams: Iterable[str],
    ) -> None:
        if tail is not None and tail < 0:
            raise ValueError(f"tail must be 0 or more, not {tail}")
        self.dir = container_dir
        self.since, self.until = since, until
        self.streams = frozenset(streams)
        if not self.streams <= set(STREAMS):
            raise ValueError(f"unknown streams: {sorted(self.streams - set(STREAMS))}")
        self.past_until = False
        self.has_more = False
        self.files = _open_newer(self.dir, None)  # oldest first; the last one is being written
        if tail is not None:
            self._skip_to_tail(tail)

    def read(self) -> list[LogEntry]:
        """Up to about _BATCH bytes worth of entries; `has_more` says whether more are there."""
        entries: list[LogEntry] = []
        budget = _BATCH
        while not self.past_until:
            if not self.files:
                self.files = _open_newer(self.dir, None)
                if not self.files:
                    break
            current = self.files[0]
            size = os.fstat(current.fd).st_size
            if size < current.position:  # cut back by a restarted ingester
                current.position, current.partial = size, b""
            if current.position < size:
                count = min(size - current.position, budget)
                entries += self._parse(current, os.pread(current.fd, count, current.position))
                budget -= count
                if budget <= 0:
                    break
            elif len(self.files) > 1:
                # A rotated file is complete; its writer moved on before renaming it.
                os.close(self.files.pop(0).fd)
            elif not self._rotated(current):
                break
        self.has_more = budget <= 0 and not self.past_until
        return entries

    def close(self) -> None:
        for log in self.files:
            os.close(log.fd)
        self.files = []

    def _rotated(self, current: _OpenLog) -> bool:
        """Whether newer files than `current` appeared; they are opened after it."""
        try:
            inode = os.stat(self.dir / LOG_NAME).st_ino
        except FileNotFoundError:
            return False
        if inode == current.inode:
            return False
        newer = _open_newer(self.dir, current.inode)
        self.files += newer
        return bool(newer)

    def _parse(self, log: _OpenLog, data: bytes) -> list[LogEntry]:
        log.position += len(data)
        data = log.partial + data
        end = data.rfind(b"\n") + 1
        log.partial = data[end:]
        entries = []
        for line in data[:end].split(b"\n"):
            entry = _decode(line) if line else None
            if entry is None:
                continue
            if self.until is not None and entry.epoch > self.until:
                self.past_until = True  # entries are in time order: none after this is wanted
                break
            if self._wanted(entry):
                entries.append(entry)
        return entries

    def _wanted(self, entry: LogEntry) -> bool:
        return entry.stream in self.streams and (self.since is None or entry.epoch >= self.since)

    def _skip_to_tail(self, tail: int) -> None:
        """Start reading where the last `tail` wanted entries begin (at the end for 0)."""
        found = 0
        for index in range(len(self.files) - 1, -1, -1):
            log = self.files[index]
            end = _complete_end(log.fd, os.fstat(log.fd).st_size)
            log.position = end
            for start, line in _lines_backward(log.fd, end):
                if found == tail:
                    break
                entry = _decode(line)
                if entry is None:
                    continue
                if self.since is not None and entry.epoch < self.since:
                    found = tail  # everything before is older still
                    break
                if self._wanted(entry) and (self.until is None or entry.epoch <= self.until):
                    found += 1
                log.position = start
            if found == tail:
                for older in self.files[:index]:
                    os.close(older.fd)
                del self.files[:index]
                return


def _open_newer(directory: Path, known_inode: int | None) -> list[_OpenLog]:
    """Open the log files newer than the one with `known_inode` (all of them for None).

    Opened newest first, so that a rotation between two opens shows a file
    twice (skipped by inode) rather than hiding one. A file not found under
    its old name any more has left the chain: all files there are newer.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    prefix = LOG_NAME + "."
    indexes = sorted(
        0 if name == LOG_NAME else int(name[len(prefix) :])
        for name in names
        if name == LOG_NAME or (name.startswith(prefix) and name[len(prefix) :].isdigit())
    )
    opened: list[_OpenLog] = []
    seen: set[int] = set()
    for index in indexes:
        try:
            fd = os.open(directory / rotated_name(index), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        inode = os.fstat(fd).st_ino
        if inode == known_inode or inode in seen:
            os.close(fd)
            if inode == known_inode:
                break
            continue
        seen.add(inode)
        opened.append(_OpenLog(fd, inode))
    opened.reverse()
    return opened


def _decode(line: bytes) -> LogEntry | None:
    """One JSON line as an entry; None for a line that is not one (left by a crash)."""
    try:
        document = json.loads(line)
        stamp = document["time"]
        return LogEntry(stamp, document["stream"], document["log"], parse_log_time(stamp) / 10**9)
    except (ValueError, KeyError, TypeError):
        return None


def _complete_end(fd: int, size: int) -> int:
    """The offset just after the last newline before `size`: where whole lines end."""
    position = size
    while position > 0:
        start = max(0, position - _CHUNK)
        newline = os.pread(fd, position - start, start).rfind(b"\n")
        if newline != -1:
            return start + newline + 1
        position = start
    return 0


def _lines_backward(fd: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(start offset, line) for the lines before `end` (a line boundary), last first."""
    carry = b""
    position = end
    while position > 0:
        start = max(0, position - _CHUNK)
        buffer = os.pread(fd, position - start, start) + carry
        position = start
        line_end = len(buffer)
        while line_end > 0:
            newline = buffer.rfind(b"\n", 0, line_end - 1)
            if newline == -1 and start > 0:
                break
            yield start + newline + 1, buffer[newline + 1 : line_end]
            line_end = newline + 1
        carry = buffer[:line_end]
