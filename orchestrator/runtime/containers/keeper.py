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
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers import launcher, linux
from orchestrator.runtime.containers.cgroups import Cgroup
from orchestrator.runtime.containers.inotify import Inotify
from orchestrator.runtime.containers.keeper_child import (
    environment_of,
    exec_child,
    open_terminal,
    run_child,
    use_stdio,
    with_argv,
)
from orchestrator.runtime.containers.launchspec import LaunchSpec, ProcessSpec
from orchestrator.runtime.containers.logs import LogIngester
from orchestrator.runtime.containers.state import (
    ContainerDir,
    container_ids,
    is_alive,
    process_start_time,
)
from orchestrator.runtime.volumes.copyup import copy_into_volume
from orchestrator.spec.errors import StackError

SOCKET_NAME = "keeper.sock"
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/tini", "/sbin/tini")


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


@dataclass
class Launch:
    """A fork in progress: the report pipe tells its pid, then an error or success."""

    client: Client
    kind: str  # "start" | "exec"
    report: int
    go: int = -1
    pid: int = 0
    hold: bool = False
    ready: bool = False
    text: bytes = b""
    running: Running | None = None


class Keeper:
    def __init__(self, root: Path):
        self.root = root
        self.selector = selectors.DefaultSelector()
        self.inotify = Inotify()
        self.running: dict[str, Running] = {}
        self.by_pid: dict[int, Running] = {}
        self.execs: dict[int, Client] = {}
        self.held: dict[str, Launch] = {}
        self.watch_owner: dict[int, Running] = {}
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
        self.selector.register(self.inotify.fd, selectors.EVENT_READ, ("inotify", None))
        self._adopt()
        while not self.stopping:
            for key, _ in self.selector.select(timeout=1.0):
                kind, data = key.data
                self._guarded(self._dispatch, kind, data, key)
            self._guarded(self._reap)
            self._guarded(self._ingest_all)

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
            for wd in self.inotify.read_watches():
                owner = self.watch_owner.get(wd)
                if owner and owner.ingester:
                    owner.ingester.ingest()
        elif kind == "client":
            self._read_client(data)
        elif kind == "launch":
            self._read_launch(data)
        elif kind == "pty":
            self._copy_pty(data)
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
            _close(fd)
        client.fds.clear()
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)
        client.sock.close()

    # --- start ----------------------------------------------------------------------------

    def _start(
        self, client: Client, container_id: str, hold: bool, attached: bool = False
    ) -> None:
        container = ContainerDir(self.root, container_id)
        if container_id in self.running:
            self._reply(client, {"error": "container is already running"})
            return
        spec = self._joined_namespaces(container.read_spec())
        cgroup = Cgroup.create(container_id, spec.resources)
        running = Running(container, cgroup=cgroup)
        try:
            if attached:  # the client's pipes or terminal (`run` attached), not the log files
                stdio, client.fds = tuple(client.fds[:3]), client.fds[3:]
                if len(stdio) != 3:
                    for fd in stdio:
                        _close(fd)
                    raise launcher.LaunchError("start with stdio needs three descriptors")
            else:
                stdio = self._container_stdio(spec, running)
        except BaseException:
            cgroup.remove()
            raise
        report_r, report_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            os.close(go_w)
            run_child(
                report_w,
                lambda: self._launch_container(
                    spec, container, cgroup, stdio, report_w, go_r, hold
                ),
            )
        self.intermediates[pid] = True
        for fd in (*stdio, report_w, go_r):
            _close(fd)
        launch = Launch(client, "start", report_r, go_w, hold=hold, running=running)
        self.selector.register(report_r, selectors.EVENT_READ, ("launch", launch))

    def _joined_namespaces(self, spec: LaunchSpec) -> LaunchSpec:
        """`container:<id>` namespace modes become that container's current /proc path."""
        modes = {}
        for kind in ("net", "ipc", "pid", "uts"):
            mode = getattr(spec.namespaces, kind)
            if mode.startswith("container:"):
                other = self.running.get(mode.removeprefix("container:"))
                if other is None or not other.pid:
                    raise launcher.LaunchError(
                        f"cannot join the {kind} namespace of container "
                        f"{mode.removeprefix('container:')[:12]}: it is not running"
                    )
                modes[kind] = f"/proc/{other.pid}/ns/{kind}"
        if not modes:
            return spec
        namespaces = dataclasses.replace(spec.namespaces, **modes)
        return dataclasses.replace(spec, namespaces=namespaces)

    def _container_stdio(self, spec: LaunchSpec, running: Running) -> tuple[int, ...]:
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

    def _launch_container(
        self, spec: LaunchSpec, container: ContainerDir, cgroup: Cgroup,
        stdio: tuple[int, ...], report: int, go: int, hold: bool,
    ) -> None:
        launcher.enter_namespaces(spec, cgroup.procs_files())
        pid = os.fork()
        if pid:
            os.write(report, f"pid {pid}\n".encode())
            os._exit(0)
        launcher.build_container(spec, container.path, self.init_binary, copy_into_volume)
        process = spec.process
        if spec.init:
            if not self.init_binary:
                raise launcher.LaunchError("init: true needs tini (Debian package tini)")
            process = with_argv(process, (launcher.INIT_PATH, "--", *process.argv))
        if process.tty and len(stdio) == 1:  # not when a client gave its own terminal
            stdio = open_terminal(stdio[0])
        use_stdio(stdio, process.tty)
        path, argv = launcher.become_process(process)
        if hold:
            os.write(report, b"ready\n")
            if os.read(go, 1) != b"g":
                os._exit(1)
        os.execve(path, argv, environment_of(process))

    def _read_launch(self, launch: Launch) -> None:
        try:
            chunk = os.read(launch.report, 4096)
        except BlockingIOError:
            return
        launch.text += chunk
        lines = launch.text.split(b"\n")
        launch.text = lines.pop()
        for line in lines:
            word, _, rest = line.decode(errors="replace").partition(" ")
            # "pid" comes from the intermediate process, "ready" from the container it
            # forked: under load the child can report first. A start is recorded only once
            # both are in, or it would be recorded with pid 0 and its exit never matched.
            if word == "pid":
                launch.pid = int(rest)
                if launch.ready:
                    self._held_started(launch)
            elif word == "ready":
                launch.ready = True
                if launch.pid:
                    self._held_started(launch)
            elif word == "error":
                self._failed(launch, rest)
                return
        if not chunk:
            self.selector.unregister(launch.report)
            os.close(launch.report)
            if not launch.pid:
                self._failed(launch, "the container process could not be created")
            elif not launch.ready:
                self._started(launch, held=False)

    def _held_started(self, launch: Launch) -> None:
        assert launch.running is not None
        self.held[launch.running.container.id] = launch
        self._started(launch, held=True)

    def _started(self, launch: Launch, *, held: bool) -> None:
        """The process runs (or, held, waits for `release`): record it, answer, reap it later."""
        if launch.kind == "exec":
            self.execs[launch.pid] = launch.client
            self._reply(launch.client, {"ok": True, "pid": launch.pid})
        else:
            running = launch.running
            assert running is not None
            if running.container.id not in self.running:
                self._record_start(running, launch.pid)
                self._reply(launch.client, {"ok": True, "pid": launch.pid, "held": held})
        if launch.pid in self.early_exits:  # it may have finished before we heard it started
            self._child_exited(launch.pid, self.early_exits.pop(launch.pid))

    def _record_start(self, running: Running, pid: int) -> None:
        container = running.container
        running.pid = pid
        if running.terminal is not None:
            running.pty_master = _receive_terminal(running.terminal)
            running.terminal.close()
            running.terminal = None
        pid_start = process_start_time(pid) or 0
        with container.changing_state() as state:
            state.status, state.pid, state.pid_start = "running", pid, pid_start
            state.started_at, state.finished_at = time.time(), None
            state.exit_code, state.oom_killed, state.error = None, False, ""
        self._watch_output(running)
        self.running[container.id] = running
        self.by_pid[pid] = running

    def _failed(self, launch: Launch, message: str) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(launch.report)
        _close(launch.report)
        _close(launch.go)
        if launch.pid and self.early_exits.pop(launch.pid, None) is None:
            _reap_quietly(launch.pid)
        running = launch.running
        if running:
            if running.cgroup:
                running.cgroup.kill()
                running.cgroup.remove()
            _close(running.pty_master)
            _close(running.stdin_writer)
            if running.terminal is not None:
                running.terminal.close()
            container = running.container
            with contextlib.suppress(FileNotFoundError), container.changing_state() as state:
                state.status, state.error, state.pid = "created", message, 0
        self._reply(launch.client, {"error": message})

    def _release(self, client: Client, container_id: str) -> None:
        launch = self.held.pop(container_id, None)
        if launch is None:
            self._reply(client, {"error": "container is not held"})
            return
        os.write(launch.go, b"g")
        _close(launch.go)
        self._reply(client, {"ok": True})

    def _watch_output(self, running: Running) -> None:
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

    def _copy_pty(self, running: Running) -> None:
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

    # --- exec -----------------------------------------------------------------------------

    def _exec(self, client: Client, request: dict[str, Any]) -> None:
        running = self.running.get(request["id"])
        if running is None or not running.pid:
            self._reply(client, {"error": "container is not running"})
            return
        process = ProcessSpec(**_process_fields(request["process"]))
        stdio = tuple(client.fds[:3])
        client.fds = client.fds[3:]
        if len(stdio) != 3:
            self._reply(client, {"error": "exec needs three stdio descriptors"})
            return
        procs = running.cgroup.procs_files() if running.cgroup else []
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            run_child(report_w, lambda: exec_child(running.pid, procs, process, stdio, report_w))
        self.intermediates[pid] = True
        for fd in (*stdio, report_w):
            _close(fd)
        launch = Launch(client, "exec", report_r)
        self.selector.register(report_r, selectors.EVENT_READ, ("launch", launch))

    # --- exits ----------------------------------------------------------------------------

    def _wait(self, client: Client, container_id: str) -> None:
        running = self.running.get(container_id)
        if running is None:
            state = ContainerDir(self.root, container_id).read_state()
            self._reply(client, {"exit_code": state.exit_code, "status": state.status})
        else:
            running.waiters.append(client)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            if self.intermediates.pop(pid, None) is None:
                self._child_exited(pid, code)

    def _child_exited(self, pid: int, code: int) -> None:
        if pid in self.by_pid:
            self._exited(self.by_pid.pop(pid), code)
        elif pid in self.execs:
            self._reply(self.execs.pop(pid), {"exit_code": code})
        else:
            self.early_exits[pid] = code

    def _exited(self, running: Running, code: int, error: str = "") -> None:
        """Record an exit and clean up after it. Each step is guarded on its own: whatever
        fails, the state says "exited" and every waiter hears back, or `wait` would hang."""
        container = running.container
        self.running.pop(container.id, None)
        oom = False
        if running.cgroup:
            cgroup = running.cgroup
            with contextlib.suppress(OSError):
                oom = cgroup.oom_killed()
            self._guarded(cgroup.kill)
            self._guarded(cgroup.remove)
        if running.pty_master >= 0:
            self._guarded(self._copy_pty_rest, running)
        for wd in running.watches:
            self.inotify.unwatch(wd)
            self.watch_owner.pop(wd, None)
        if running.ingester:
            if container.path.exists():  # removed already when forced while running
                self._guarded(running.ingester.ingest, True)
            self._guarded(running.ingester.close)
        _close(running.stdin_writer)
        self._guarded(_record_exit, container, code, oom, error)
        for waiter in running.waiters:
            self._reply(waiter, {"exit_code": code, "status": "exited", "oom_killed": oom})

    def _copy_pty_rest(self, running: Running) -> None:
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
        _close(running.pty_master)

    def _ingest_all(self) -> None:
        """Catch up with output inotify did not announce (a backlog, a restart)."""
        for running in list(self.running.values()):
            if running.ingester and running.container.path.exists():
                running.ingester.ingest()
                while not running.ingester.caught_up:
                    running.ingester.ingest()

    # --- after a restart ------------------------------------------------------------------

    def _adopt(self) -> None:
        """Containers still running from an earlier keeper: watch them, keep their logs."""
        for container_id in container_ids(self.root):
            container = ContainerDir(self.root, container_id)
            state = container.read_state()
            if state.status not in ("running", "paused"):
                continue
            running = Running(container, pid=state.pid, cgroup=Cgroup.open(container_id))
            if not is_alive(state):
                self._exited(running, 255, "exit status unknown: the keeper was restarted")
                continue
            try:
                running.adopted_pidfd = os.pidfd_open(state.pid)
            except OSError:
                self._exited(running, 255, "exit status unknown: the keeper was restarted")
                continue
            self.selector.register(
                running.adopted_pidfd, selectors.EVENT_READ, ("adopted", running)
            )
            self.running[container_id] = running
            self._watch_output(running)

    def _adopted_exit(self, running: Running) -> None:
        self.selector.unregister(running.adopted_pidfd)
        _close(running.adopted_pidfd)
        self._exited(running, 255, "exit status unknown: the keeper was restarted")


def _record_exit(container: ContainerDir, code: int, oom: bool, error: str) -> None:
    # A container removed by force while it ran has no folder left to record anything in.
    with contextlib.suppress(FileNotFoundError), container.changing_state() as state:
        state.status, state.exit_code, state.oom_killed = "exited", code, oom
        state.finished_at, state.pid, state.error = time.time(), 0, error


def _receive_terminal(channel: socket.socket) -> int:
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


def _process_fields(document: dict[str, Any]) -> dict[str, Any]:
    from orchestrator.runtime.containers.launchspec import Rlimit

    fields = dict(document)
    for key in ("argv", "env", "additional_gids", "capabilities"):
        fields[key] = tuple(fields.get(key, ()))
    fields["rlimits"] = tuple(Rlimit(**r) for r in fields.get("rlimits", ()))
    return fields


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


def _reap_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


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
