"""The keeper's launches: forking a container's start or an exec, and hearing how it went.

A launch forks twice. The keeper's child enters the container's namespaces and
cgroup, forks the container's process and exits, and the orphaned container
becomes the child of the keeper, a subreaper. Both processes report on one pipe
("pid N" from the first, "ready" from a held container, "error …" from either),
read in the keeper's loop without blocking it. A held start waits before its
`execve` until a `release` request lets it go, so a caller can set up what
needs the process (its networks) before it runs. An exec forks the same way,
into a running container's namespaces and cgroup.

Kept apart from the request loop and from reaping: this is the launch protocol
only. It runs in the keeper's one thread, as part of `Keeper`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers import launcher
from orchestrator.runtime.containers.cgroups import Cgroup
from orchestrator.runtime.containers.keeper_child import (
    environment_of,
    exec_child,
    open_terminal,
    run_child,
    use_stdio,
    with_argv,
)
from orchestrator.runtime.containers.keeper_output import (
    ContainerOutput,
    container_stdio,
    receive_terminal,
)
from orchestrator.runtime.containers.keeper_running import Client, Running, close_fd
from orchestrator.runtime.containers.launchspec import LaunchSpec, ProcessSpec
from orchestrator.runtime.containers.state import ContainerDir, process_start_time
from orchestrator.runtime.volumes.copyup import copy_into_volume

INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/tini", "/sbin/tini")


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


class KeeperLaunches:
    """The `start`, `exec` and `release` requests of `Keeper`, and their report pipes.

    Uses the keeper's tables below (made by `Keeper.__init__`), its `_reply`, and
    `_child_exited` of `KeeperExits` for a process that finished before its launch
    was reported.
    """

    root: Path
    selector: selectors.BaseSelector
    output: ContainerOutput
    running: dict[str, Running]
    by_pid: dict[int, Running]
    execs: dict[int, Client]
    held: dict[str, Launch]
    intermediates: dict[int, bool]
    early_exits: dict[int, int]
    init_binary: str | None

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
                        close_fd(fd)
                    raise launcher.LaunchError("start with stdio needs three descriptors")
            else:
                stdio = container_stdio(spec, running)
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
            close_fd(fd)
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
        launcher.default_signals()
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
            running.pty_master = receive_terminal(running.terminal)
            running.terminal.close()
            running.terminal = None
        pid_start = process_start_time(pid) or 0
        with container.changing_state() as state:
            state.status, state.pid, state.pid_start = "running", pid, pid_start
            state.started_at, state.finished_at = time.time(), None
            state.exit_code, state.oom_killed, state.error = None, False, ""
        self.output.watch(running)
        self.running[container.id] = running
        self.by_pid[pid] = running

    def _failed(self, launch: Launch, message: str) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(launch.report)
        close_fd(launch.report)
        close_fd(launch.go)
        if launch.pid and self.early_exits.pop(launch.pid, None) is None:
            _reap_quietly(launch.pid)
        running = launch.running
        if running:
            if running.cgroup:
                running.cgroup.kill()
                running.cgroup.remove()
            close_fd(running.pty_master)
            close_fd(running.stdin_writer)
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
        close_fd(launch.go)
        self._reply(client, {"ok": True})


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
            close_fd(fd)
        launch = Launch(client, "exec", report_r)
        self.selector.register(report_r, selectors.EVENT_READ, ("launch", launch))



def _process_fields(document: dict[str, Any]) -> dict[str, Any]:
    from orchestrator.runtime.containers.launchspec import Rlimit

    fields = dict(document)
    for key in ("argv", "env", "additional_gids", "capabilities"):
        fields[key] = tuple(fields.get(key, ()))
    fields["rlimits"] = tuple(Rlimit(**r) for r in fields.get("rlimits", ()))
    return fields



def _reap_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass

