"""What the keeper's forked children run: the launch's first child, an exec's, and the
stdio they hand to the container. Kept apart from the keeper's loop because none of it
may touch the keeper's state: after `fork` only this process exists for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import termios
from typing import Any

from orchestrator.runtime.containers import launcher, linux
from orchestrator.runtime.containers.launchspec import ProcessSpec


def run_child(report: int, body: Any) -> None:
    """Run `body` in a forked child; report a failure on the report pipe; never return."""
    try:
        body()
        os._exit(0)
    except launcher.LaunchError as error:
        report_failure(report, str(error))
    except OSError as error:
        report_failure(report, str(error) if error.strerror else repr(error))
    except BaseException as error:  # anything else is our bug: say so, still one line
        report_failure(report, f"internal error: {type(error).__name__}: {error}")
    os._exit(127)


def report_failure(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, ("error " + message.replace("\n", " ") + "\n").encode())


def exec_child(
    target: int, procs: list[str], process: ProcessSpec, stdio: tuple[int, ...], report: int
) -> None:
    for path in procs:
        with open(path, "w") as file:
            file.write("0")
    namespaces = []
    for name in ("ipc", "uts", "net", "cgroup", "pid", "mnt"):
        path = f"/proc/{target}/ns/{name}"
        if os.readlink(path) != os.readlink(f"/proc/self/ns/{name}"):
            namespaces.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    for fd in namespaces:
        linux.setns(fd)
        os.close(fd)
    pid = os.fork()
    if pid:
        os.write(report, f"pid {pid}\n".encode())
        os._exit(0)
    use_stdio(stdio, process.tty)
    path, argv = launcher.become_process(process)
    launcher.default_signals()
    os.execve(path, argv, environment_of(process))


def open_terminal(channel: int) -> tuple[int, int, int]:
    """In the container, its /dev built: a terminal of its own; the master goes to the keeper."""
    master, slave = os.openpty()
    with socket.socket(fileno=channel) as sock:
        socket.send_fds(sock, [b"t"], [master])
    os.close(master)
    return slave, slave, slave


def use_stdio(stdio: tuple[int, ...], tty: bool) -> None:
    if tty:
        os.setsid()
        fcntl.ioctl(stdio[0], termios.TIOCSCTTY, 0)
    for target, fd in enumerate(stdio):
        os.dup2(fd, target, inheritable=True)


def environment_of(process: ProcessSpec) -> dict[bytes, bytes]:
    environment: dict[bytes, bytes] = {}
    for entry in process.env:
        key, _, value = entry.partition("=")
        environment[os.fsencode(key)] = os.fsencode(value)
    return environment


def with_argv(process: ProcessSpec, argv: tuple[str, ...]) -> ProcessSpec:
    fields = process.__dict__ | {"argv": argv}
    return ProcessSpec(**fields)
