"""A client's upgraded connection, relayed to a process's stdio: the engine's half of
`exec` and of an attached `run`.

The process gets pipes, or a terminal when the client wants a TTY; the engine
keeps the other ends and copies both ways, in frames (`raw_frames.py`):
stdin frames and resizes in, stdout and stderr out. When the process has
exited, what it wrote before is still in the pipes: the copies run on until
they reach the end (bounded, since a background child may hold a pipe open
forever), and only then does the exit frame go, so a client never loses the
last lines of output.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from orchestrator.engine import raw_frames
from orchestrator.engine.attach_frames import exit_frame, json_payload
from orchestrator.engine.http import UpgradedStream
from orchestrator.runtime.nurseries import open_nursery
from orchestrator.spec.errors import StackError

logger = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
DRAIN_TIMEOUT = 2.0
"""Seconds the output copies get after the process has exited, to reach the end of its pipes."""
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


class FrameSender:
    """Frames to the client from several tasks at once (a stream allows one sender at a time)."""

    def __init__(self, stream: UpgradedStream) -> None:
        self.stream = stream
        self._lock = trio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self.stream.send_all(data)

    async def exit(self, code: int, error: str = "") -> None:
        """The last frame: the exit code, and why the process never ran when it did not."""
        with contextlib.suppress(*_GONE):
            await self.send(exit_frame(code, error))


@dataclass
class ProcessEnds:
    """The engine's ends of a process's stdio (the process has the other ends)."""

    stdin: int = -1  # where the client's stdin goes; -1: the process has no stdin to write to
    outputs: list[tuple[int, int]] = field(default_factory=list)  # (fd, frame kind)
    terminal: int = -1  # the terminal's master, for resizes
    tty: bool = False

    def close(self) -> None:
        for fd in {self.stdin, self.terminal, *(fd for fd, _ in self.outputs)}:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin, self.terminal, self.outputs = -1, -1, []


def open_stdio(
    *, tty: bool, stdin: bool, size: tuple[int, int] | None = None
) -> tuple[ProcessEnds, tuple[int, int, int]]:
    """Pipes (or a terminal) for a process: the engine's ends and the process's 0, 1, 2.

    The process's ends are to be closed by the caller once the keeper has them.
    """
    if tty:
        master, slave = os.openpty()
        if size:
            set_terminal_size(master, *size)
        # Reading and writing go through separate streams, which each own their fd.
        writer = os.dup(master) if stdin else -1
        return ProcessEnds(writer, [(master, raw_frames.STDOUT)], os.dup(master), True), (
            slave, slave, slave)
    ends = ProcessEnds()
    theirs: list[int] = []
    try:
        if stdin:
            read_end, ends.stdin = os.pipe()
        else:
            read_end = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        theirs.append(read_end)
        for kind in (raw_frames.STDOUT, raw_frames.STDERR):
            read_end, write_end = os.pipe()
            ends.outputs.append((read_end, kind))
            theirs.append(write_end)
    except BaseException:
        ends.close()
        close_fds(theirs)
        raise
    return ends, (theirs[0], theirs[1], theirs[2])


def close_fds(fds: tuple[int, ...] | list[int]) -> None:
    for fd in set(fds):
        with contextlib.suppress(OSError):
            os.close(fd)


def set_terminal_size(fd: int, rows: int, cols: int) -> None:
    """The kernel tells the terminal's foreground processes with SIGWINCH."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class _Relay:
    """One attached session: who has gone, and the process's stdin while it takes input."""

    def __init__(self, stream: UpgradedStream, sender: FrameSender, ends: ProcessEnds) -> None:
        self.stream = stream
        self.sender = sender
        self.ends = ends
        self.client_gone = False
        self.scope = trio.CancelScope()
        self.stdin: trio.lowlevel.FdStream | None = None

    def gone(self) -> None:
        self.client_gone = True
        self.scope.cancel()

    async def from_client(self) -> None:
        decoder = raw_frames.FrameDecoder()
        while True:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except _GONE:
                data = b""
            if not data:  # our client never half-closes: an end is a client that left
                self.gone()
                return
            try:
                received = decoder.feed(data)
            except StackError as error:
                logger.warning("attached client sent a bad frame: %s", error)
                self.gone()
                return
            for kind, payload in received:
                await self._frame(kind, payload)

    async def _frame(self, kind: int, payload: bytes) -> None:
        if kind == raw_frames.STDIN and self.stdin is not None:
            if not payload:
                # A terminal has no end of input of its own; a pipe's is its closing.
                if not self.ends.tty:
                    await self.stdin.aclose()
                    self.stdin = None
                return
            try:
                await self.stdin.send_all(payload)
            except _GONE:  # the process closed its stdin: what follows has no reader
                await self.stdin.aclose()
                self.stdin = None
        elif kind == raw_frames.RESIZE and self.ends.terminal >= 0:
            size = json_payload(payload) or {}
            try:
                set_terminal_size(self.ends.terminal, int(size["rows"]), int(size["cols"]))
            except (KeyError, TypeError, ValueError, OSError, struct.error) as error:
                logger.warning("attached client sent a bad resize: %s", error)

    async def copy_output(self, output: trio.lowlevel.FdStream, kind: int) -> None:
        while True:
            try:
                data = await output.receive_some(RECEIVE_SIZE)
            except trio.BrokenResourceError:  # EIO: the terminal's last user closed it
                return
            if not data:
                return
            try:
                await self.sender.send(raw_frames.encode(kind, data))
            except _GONE:
                self.gone()
                return


async def relay(
    stream: UpgradedStream, sender: FrameSender, ends: ProcessEnds,
    wait: Callable[[], Awaitable[int]],
) -> int | None:
    """Copy between the client and the process until it has exited and its output is sent.

    The exit code (the caller sends the exit frame), or None when the client went
    away first: the caller decides what becomes of the process. The engine's ends
    are closed either way.
    """
    state = _Relay(stream, sender, ends)
    code: int | None = None
    async with contextlib.AsyncExitStack() as owned:
        outputs = []
        for fd, kind in ends.outputs:
            outputs.append((await owned.enter_async_context(trio.lowlevel.FdStream(fd)), kind))
        if ends.stdin >= 0:
            state.stdin = trio.lowlevel.FdStream(ends.stdin)
        ends.stdin, ends.outputs = -1, []  # the streams own them now
        try:
            with state.scope:
                async with open_nursery() as nursery:
                    nursery.start_soon(state.from_client)
                    async with trio.open_nursery() as copying:
                        for output, kind in outputs:
                            copying.start_soon(state.copy_output, output, kind)
                        code = await wait()
                        copying.cancel_scope.deadline = trio.current_time() + DRAIN_TIMEOUT
                    nursery.cancel_scope.cancel()
        finally:
            if state.stdin is not None:
                await trio.aclose_forcefully(state.stdin)
            ends.close()
    return None if state.client_gone else code
