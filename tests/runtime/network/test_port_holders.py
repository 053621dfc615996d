"""Naming the process that holds a host port, as the port-conflict error does,
even when that process is busy opening and closing files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator.runtime.network.ports import listening_sockets, process_of_socket

# Listens on a free port, says which, then opens and closes descriptors without a
# pause: whoever looks through its fds meets some that vanish under them, before
# the socket's own (a higher number, as in a long-running server).
BUSY_HOLDER = """
import os, socket, sys
below = [os.open("/dev/null", os.O_RDONLY) for _ in range(300)]
holder = socket.socket()
for fd in below:
    os.close(fd)
holder.bind(("127.0.0.1", 0))
holder.listen()
print(holder.getsockname()[1], flush=True)
while True:
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(200)]
    for fd in fds:
        os.close(fd)
"""


def test_a_busy_process_holding_a_port_is_named_every_time():
    process = subprocess.Popen([sys.executable, "-c", BUSY_HOLDER], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        inode = listening_sockets()[("tcp", "127.0.0.1", port)]
        comm = Path(f"/proc/{process.pid}/comm").read_text().strip()
        names = {process_of_socket(inode) for _ in range(30)}
        assert names == {f"{comm} (pid {process.pid})"}
    finally:
        process.kill()
        process.wait()


def test_a_socket_nobody_holds_any_more_has_no_holder():
    assert process_of_socket(1) == ""  # inode 1 is never a socket
