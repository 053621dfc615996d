"""The keeper's side of a container's end: reaping, recording the exit, telling waiters.

Every exit ends the same way: the exit code, finish time and OOM verdict go
into the container's `state.json`, its last output into its log, its cgroup is
removed and whoever waits hears back. A keeper started again adopts the
containers an earlier one left running: it keeps their logs and, as it is not
their parent and cannot reap them, notices their end with a pidfd.

Kept apart from launching because an exit arrives from several places — a
reaped child, a child reaped before its launch was reported, an adopted
container found gone or signalled by its pidfd — and each must end the same
way. It runs in the keeper's one thread, as part of `Keeper`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from pathlib import Path

from orchestrator.runtime.containers.cgroups import Cgroup
from orchestrator.runtime.containers.keeper_output import ContainerOutput
from orchestrator.runtime.containers.keeper_running import Client, Running, close_fd
from orchestrator.runtime.containers.state import ContainerDir, container_ids, is_alive


class KeeperExits:
    """The `wait` requests of `Keeper`, its reaping, and its adopting after a restart.

    Uses the keeper's tables below (made by `Keeper.__init__`), its `_reply`
    and its `_guarded`.
    """

    root: Path
    selector: selectors.BaseSelector
    output: ContainerOutput
    running: dict[str, Running]
    by_pid: dict[int, Running]
    execs: dict[int, Client]
    intermediates: dict[int, bool]
    early_exits: dict[int, int]

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
            self._guarded(self.output.copy_terminal_rest, running)
        self.output.unwatch(running)
        if running.ingester:
            if container.path.exists():  # removed already when forced while running
                self._guarded(running.ingester.ingest, True)
            self._guarded(running.ingester.close)
        close_fd(running.stdin_writer)
        self._guarded(_record_exit, container, code, oom, error)
        for waiter in running.waiters:
            self._reply(waiter, {"exit_code": code, "status": "exited", "oom_killed": oom})

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
            self.output.watch(running)

    def _adopted_exit(self, running: Running) -> None:
        self.selector.unregister(running.adopted_pidfd)
        close_fd(running.adopted_pidfd)
        self._exited(running, 255, "exit status unknown: the keeper was restarted")


def _record_exit(container: ContainerDir, code: int, oom: bool, error: str) -> None:
    # A container removed by force while it ran has no folder left to record anything in.
    with contextlib.suppress(FileNotFoundError), container.changing_state() as state:
        state.status, state.exit_code, state.oom_killed = "exited", code, oom
        state.finished_at, state.pid, state.error = time.time(), 0, error

