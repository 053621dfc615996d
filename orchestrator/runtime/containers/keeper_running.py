"""What the keeper holds for each container it watches and each client it answers.

Shared by the keeper's parts — its request loop, its launches, its output
copying and its reaping — so it sits below all of them. The descriptors these
hold are optional (-1) and may be closed by either side first: `close_fd`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field

from orchestrator.runtime.containers.cgroups import Cgroup
from orchestrator.runtime.containers.logs import LogIngester
from orchestrator.runtime.containers.state import ContainerDir


@dataclass
class Client:
    sock: socket.socket
    buffer: bytes = b""
    fds: list[int] = field(default_factory=list)


@dataclass
class Running:
    """A container the keeper watches: its process, cgroup, output and who waits for it."""

    container: ContainerDir
    pid: int = 0
    cgroup: Cgroup | None = None
    ingester: LogIngester | None = None
    watches: list[int] = field(default_factory=list)
    pty_master: int = -1
    terminal: socket.socket | None = None  # brings back the master of a TTY container
    stdin_writer: int = -1
    waiters: list[Client] = field(default_factory=list)
    adopted_pidfd: int = -1


def close_fd(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
