"""The keeper: one small process per state root that starts containers and outlives engines.

Why a separate process. Container processes must not die with the engine, and
their exit codes must still be known when the engine is gone or restarting.
Only a parent learns an exit code, so the keeper is a child subreaper: it
forks each launch, the launch's intermediate child exits, and the container
becomes the keeper's child. The keeper then reaps it and writes the exit code,
finish time and OOM verdict into the container's `state.json`, flushes its log
and removes its cgroup — whether or not any engine is listening.

The engine changes `state.json` too (pause, stopped by the user): both sides
change it only under the container's state lock (`ContainerDir.changing_state`),
which each holds for one read and one write, so the loop waits at most that long.

It is deliberately single-threaded (fork in a threaded process is unsafe) and
does little: accept requests on a unix socket (`containers/keeper.sock`, one
JSON object per line), fork, reap, and turn container output into timestamped
log lines when inotify says the output files grew. Everything else — specs,
signals, volumes — stays in the library, in the caller's process.

Requests: {"op": "ping"}, {"op": "start", "id", "hold", "stdio"} (+ stdio fds by
SCM_RIGHTS when "stdio" is true), {"op": "release", "id"}, {"op": "held"},
{"op": "exec", "id", "process", "tty"} (+ stdio fds by SCM_RIGHTS),
{"op": "wait", "id"}, {"op": "shutdown"}. Replies are JSON lines too.

This module is the process: its loop, its requests and its entry point. The
rest of `Keeper` is in its parts: `keeper_launches` forks starts and execs and
reads their reports, `keeper_exits` reaps, records exits and adopts after a
restart, `keeper_output` copies terminals and ingests output; `keeper_running`
is what they all hold, `keeper_child` what the forked children run.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers import launcher, linux
from orchestrator.runtime.containers.keeper_exits import KeeperExits
from orchestrator.runtime.containers.keeper_launches import INIT_BINARIES, KeeperLaunches, Launch
from orchestrator.runtime.containers.keeper_output import ContainerOutput
from orchestrator.runtime.containers.keeper_running import Client, Running, close_fd
from orchestrator.spec.errors import StackError

SOCKET_NAME = "keeper.sock"


class Keeper(KeeperLaunches, KeeperExits):
    """The keeper's state (every table its parts use) and its loop."""

    def __init__(self, root: Path):
        self.root = root
        self.selector = selectors.DefaultSelector()
        self.output = ContainerOutput(self.selector)
        self.running: dict[str, Running] = {}
        self.by_pid: dict[int, Running] = {}
        self.execs: dict[int, Client] = {}
        self.held: dict[str, Launch] = {}
        self.intermediates: dict[int, bool] = {}  # first children, which exit after forking
        self.early_exits: dict[int, int] = {}  # reaped before their launch was reported
        self.init_binary = next((p for p in INIT_BINARIES if os.path.exists(p)), None)
        self.stopping = False

    # --- the loop -------------------------------------------------------------------------

    def serve(self, listener: socket.socket) -> None:
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, ("accept", None))
        self.selector.register(wake_r, selectors.EVENT_READ, ("signal", None))
        self.selector.register(self.output.inotify.fd, selectors.EVENT_READ, ("inotify", None))
        self._adopt()
        while not self.stopping:
            for key, _ in self.selector.select(timeout=1.0):
                kind, data = key.data
                self._guarded(self._dispatch, kind, data, key)
            self._guarded(self._reap)
            self._guarded(self.output.catch_up, list(self.running.values()))

    @staticmethod
    def _guarded(action: Any, *args: Any) -> None:
        """Run one step of the loop; a fault is logged, never fatal to the keeper."""
        try:
            action(*args)
        except Exception:
            traceback.print_exc()
            sys.stderr.flush()

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def _dispatch(self, kind: str, data: Any, key: selectors.SelectorKey) -> None:
        if kind == "accept":
            sock, _ = key.fileobj.accept()  # type: ignore[union-attr]
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, ("client", Client(sock)))
        elif kind == "signal":
            while True:
                try:
                    if not os.read(key.fd, 512):
                        break
                except BlockingIOError:
                    break
        elif kind == "inotify":
            self.output.ingest_announced()
        elif kind == "client":
            self._read_client(data)
        elif kind == "launch":
            self._read_launch(data)
        elif kind == "pty":
            self.output.copy_terminal(data)
        elif kind == "adopted":
            self._adopted_exit(data)

    # --- requests -------------------------------------------------------------------------

    def _read_client(self, client: Client) -> None:
        try:
            # Close-on-exec: the descriptors are dup'ed onto an exec's 0, 1 and 2, and these
            # originals must not leak into the container's process as well.
            data, ancillary, _, _ = client.sock.recvmsg(
                65536, socket.CMSG_SPACE(16 * 4), socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []  # the client is gone: drop it below
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                client.fds.extend(fds)
        if not data:
            self._drop_client(client)
            return
        client.buffer += data
        while b"\n" in client.buffer:
            line, client.buffer = client.buffer.split(b"\n", 1)
            try:
                request = json.loads(line)
                self._handle(client, request)
            except (launcher.LaunchError, StackError) as error:  # the user's to read
                self._reply(client, {"error": str(error)})
            except Exception as error:  # reply, never crash
                self._reply(client, {"error": f"{type(error).__name__}: {error}"})

    def _handle(self, client: Client, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "ping":
            self._reply(client, {"ok": True, "pid": os.getpid()})
        elif op == "start":
            self._start(client, request["id"], bool(request.get("hold")),
                        attached=bool(request.get("stdio")))
        elif op == "release":
            self._release(client, request["id"])
        elif op == "held":  # starts a client began and never released (it died meanwhile)
            self._reply(client, {"ids": sorted(self.held)})
        elif op == "exec":
            self._exec(client, request)
        elif op == "wait":
            self._wait(client, request["id"])
        elif op == "shutdown":
            self._reply(client, {"ok": True})
            self.stopping = True
        else:
            self._reply(client, {"error": f"unknown request {op!r}"})

    def _reply(self, client: Client, message: dict[str, Any]) -> None:
        try:
            client.sock.setblocking(True)
            client.sock.sendall(json.dumps(message).encode() + b"\n")
            client.sock.setblocking(False)
        except OSError:
            self._drop_client(client)

    def _drop_client(self, client: Client) -> None:
        for fd in client.fds:
            close_fd(fd)
        client.fds.clear()
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)
        client.sock.close()



def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    root = Path(args[0])
    root.mkdir(parents=True, exist_ok=True)
    lock = os.open(root / "keeper.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return 0  # another keeper serves this root
        raise
    path = root / SOCKET_NAME
    if path.exists():
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(128)
    try:
        Keeper(root).serve(listener)
    finally:
        listener.close()
        path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
