"""Container output in the keeper: where a container writes, and turning it into log lines.

A container without a TTY writes straight into `stdout.raw` and `stderr.raw`
(O_APPEND), so its output never waits for anyone; the keeper turns what they
gained into timestamped log lines when inotify says they grew. A TTY
container writes to a terminal instead, whose master the keeper holds and
copies into `stdout.raw`.

Kept apart from launching and reaping because it has state and events of its
own — the inotify watches and whose each one is, a master with bytes to copy —
and neither of those needs to know how a process was forked or reaped.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
from collections.abc import Iterable

from orchestrator.runtime.containers.inotify import Inotify
from orchestrator.runtime.containers.keeper_running import Running, close_fd
from orchestrator.runtime.containers.launchspec import LaunchSpec
from orchestrator.runtime.containers.logs import LogIngester


class ContainerOutput:
    """The output of the containers the keeper watches, copied and ingested in its loop."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector  # the keeper's: a terminal's master is read in its loop
        self.inotify = Inotify()
        self.watch_owner: dict[int, Running] = {}

    def watch(self, running: Running) -> None:
        spec = running.container.read_spec()
        running.ingester = LogIngester(
            running.container.path, max_size=spec.log_max_size, max_files=spec.log_max_files
        )
        for name in ("stdout.raw", "stderr.raw"):
            path = running.container.path / name
            if path.exists():
                wd = self.inotify.watch(str(path))
                running.watches.append(wd)
                self.watch_owner[wd] = running
        if running.pty_master >= 0:
            os.set_blocking(running.pty_master, False)
            self.selector.register(running.pty_master, selectors.EVENT_READ, ("pty", running))

    def unwatch(self, running: Running) -> None:
        for wd in running.watches:
            self.inotify.unwatch(wd)
            self.watch_owner.pop(wd, None)

    def ingest_announced(self) -> None:
        """Ingest the output of each container whose files inotify says grew."""
        for wd in self.inotify.read_watches():
            owner = self.watch_owner.get(wd)
            if owner and owner.ingester:
                owner.ingester.ingest()

    def catch_up(self, running: Iterable[Running]) -> None:
        """Catch up with output inotify did not announce (a backlog, a restart)."""
        for one in running:
            if one.ingester and one.container.path.exists():
                one.ingester.ingest()
                while not one.ingester.caught_up:
                    one.ingester.ingest()

    def copy_terminal(self, running: Running) -> None:
        try:
            data = os.read(running.pty_master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(running.pty_master)
            return
        with open(running.container.path / "stdout.raw", "ab") as out:
            out.write(data)

    def copy_terminal_rest(self, running: Running) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(running.pty_master)
        while True:
            try:
                data = os.read(running.pty_master, 65536)
            except OSError:
                break
            if not data:
                break
            with open(running.container.path / "stdout.raw", "ab") as out:
                out.write(data)
        close_fd(running.pty_master)


def container_stdio(spec: LaunchSpec, running: Running) -> tuple[int, ...]:
    """What the child needs for its fds 0, 1 and 2.

    With a TTY that is one descriptor: the child's end of a channel. The terminal is
    opened in the container, from its own /dev/pts, so that it has a name there (`tty`
    prints /dev/pts/0, as with Docker); the child sends its master end back on the
    channel (`open_terminal`), and the keeper copies what it reads to `stdout.raw`.
    """
    path = running.container.path
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    out = os.open(path / "stdout.raw", flags, 0o640)
    if spec.process.tty:
        os.close(out)  # made for the watch on it; the keeper appends the terminal's output
        running.terminal, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        return (theirs.detach(),)
    err = os.open(path / "stderr.raw", flags, 0o640)
    if spec.process.stdin_open:
        stdin_r, running.stdin_writer = os.pipe()
    else:
        stdin_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    return stdin_r, out, err


def receive_terminal(channel: socket.socket) -> int:
    """The master the child sent before it reported (so it waits here already); -1 if not."""
    try:
        _, fds, _, _ = socket.recv_fds(
            channel, 1, 1, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
        )
    except BlockingIOError:
        fds = []
    if not fds:
        print("a TTY container started without sending its terminal", file=sys.stderr)
        return -1
    return fds[0]
