"""The container runtime's library API, for trio callers (the engine, tests, benchmarks).

create → start → (exec, logs, pause/unpause, kill) → stop → remove. Creating
writes the container's folder from a validated launch spec and touches no
kernel object; starting asks the keeper to launch it; everything after that
works from the container's state, so any process — a restarted engine, a CLI —
can pick a container up where another left it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from orchestrator.runtime.containers.cgroups import Cgroup
from orchestrator.runtime.containers.keeper_client import KeeperClient
from orchestrator.runtime.containers.launchspec import (
    LaunchSpec,
    ProcessSpec,
    signal_number,
    validate_spec,
)
from orchestrator.runtime.containers.mount_plan import FileToWrite
from orchestrator.runtime.containers.state import (
    ContainerDir,
    ContainerState,
    container_ids,
    is_alive,
)
from orchestrator.spec.errors import StackError


class ContainerError(StackError):
    """A container operation that cannot be done, worded for the user."""


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    spec: LaunchSpec
    state: ContainerState
    metadata: dict[str, Any]

    @property
    def short_id(self) -> str:
        return self.id[:12]


class ContainerRuntime:
    def __init__(self, state_root: Path):
        self.state_root = state_root
        self.root = state_root / "containers"
        self.keeper = KeeperClient(self.root)
        self._configs: dict[str, tuple[str, LaunchSpec, dict[str, Any]]] = {}

    # --- reading --------------------------------------------------------------------------

    def _dir(self, container_id: str) -> ContainerDir:
        return ContainerDir(self.root, container_id)

    def get(self, name_or_id: str) -> Container:
        return self._load(self.resolve(name_or_id))

    def _load(self, container_id: str) -> Container:
        # config.json never changes once written: read and parse it once per process.
        cached = self._configs.get(container_id)
        folder = self._dir(container_id)
        if cached is None:
            config = folder.read_config()
            cached = (str(config["name"]), LaunchSpec.from_json(config["spec"]),
                      dict(config.get("metadata", {})))
            self._configs[container_id] = cached
        name, spec, metadata = cached
        # The state is read afresh every time: the keeper rewrites it, and (inode, mtime,
        # size) cannot tell two versions apart (inodes are reused at once, and mtimes are
        # as coarse as the kernel's tick).
        return Container(container_id, name, spec, folder.read_state(), dict(metadata))

    def resolve(self, name_or_id: str) -> str:
        if len(name_or_id) == 64 and (self.root / name_or_id / "config.json").exists():
            return name_or_id
        ids = container_ids(self.root)
        if name_or_id in ids:
            return name_or_id
        by_name = [i for i in ids if self._name_of(i) == name_or_id]
        if by_name:
            return by_name[0]
        by_prefix = [i for i in ids if i.startswith(name_or_id)] if len(name_or_id) >= 3 else []
        if len(by_prefix) == 1:
            return by_prefix[0]
        raise ContainerError(f"no such container: {name_or_id}")

    def _name_of(self, container_id: str) -> str:
        cached = self._configs.get(container_id)
        if cached is not None:
            return cached[0]
        try:
            return str(self._dir(container_id).read_config()["name"])
        except (OSError, ValueError, KeyError):
            return ""

    def list(self) -> list[Container]:
        containers = []
        ids = container_ids(self.root)
        for stale in set(self._configs) - set(ids):
            del self._configs[stale]
        for container_id in ids:
            try:
                containers.append(self._load(container_id))
            except (OSError, ValueError, KeyError, ContainerError):
                continue  # a folder half-created by a crash is not a container
        return containers

    def clean_leftovers(self) -> None:
        """Folders a crash left mid-create (`.new-*`) or mid-remove (`.removing-*`)."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if entry.name.startswith((".new-", ".removing-")) and entry.is_dir():
                _remove_tree(entry)

    def images_in_use(self) -> set[str]:
        return {c.spec.image_id for c in self.list() if c.spec.image_id}

    # --- create and remove ----------------------------------------------------------------

    def create(
        self,
        spec: LaunchSpec,
        files: tuple[FileToWrite, ...] | list[FileToWrite] = (),
        metadata: dict[str, Any] | None = None,
    ) -> Container:
        """Write the container's folder. `spec.id` may be empty: a fresh id is chosen."""
        container_id = spec.id or secrets.token_hex(32)
        if spec.id != container_id:
            spec = LaunchSpec.from_json(spec.to_json() | {"id": container_id})
        validate_spec(spec)
        if any(self._name_of(i) == spec.name for i in container_ids(self.root)):
            raise ContainerError(
                f'the container name "{spec.name}" is already in use',
                hint="remove that container or choose another name",
            )
        folder = self._dir(container_id)
        tmp = self.root / f".new-{container_id}"
        try:
            tmp.mkdir(parents=True, mode=0o700)
            for sub in ("upper", "work", "rootfs"):  # the upper's mode is the root's mode
                (tmp / sub).mkdir(mode=0o755)
            for item in files:
                target = tmp / item.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(item.content)
                os.chown(target, item.uid, item.gid)
                os.chmod(target, item.mode)
            staged = ContainerDir(self.root, container_id)
            staged.path = tmp
            document = {"id": container_id, "name": spec.name, "spec": spec.to_json()}
            staged.write_config(document | {"metadata": metadata or {}})
            staged.write_state(ContainerState())
            tmp.rename(folder.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.get(container_id)

    async def remove(self, name_or_id: str, *, force: bool = False) -> None:
        container = self.get(name_or_id)
        if container.state.status in ("running", "paused"):
            if not force and self._is_running(container.state):
                raise ContainerError(
                    f"cannot remove container {container.name}: it is running",
                    hint="stop it first or remove with force",
                )
            if self._is_running(container.state):
                await self.kill(container.id, "SIGKILL")
            await self.wait(container.id)
        folder = self._dir(container.id)
        graveyard = self.root / f".removing-{container.id}"
        folder.path.rename(graveyard)
        await trio.to_thread.run_sync(_remove_tree, graveyard)

    # --- start, signals, stop -------------------------------------------------------------

    async def start(
        self, name_or_id: str, *, hold: bool = False, stdio: tuple[int, int, int] | None = None
    ) -> int:
        """Start the container; with `hold`, it waits before exec until `release`.

        With `stdio`, its fds 0, 1 and 2 are these (a client attached to a one-off
        container) instead of its log files; the keeper has its own copies once this
        returns, so the caller closes its copies of the container's ends.
        """
        container = self.get(name_or_id)
        if self._is_running(container.state):
            return container.state.pid
        request = {"op": "start", "id": container.id, "hold": hold}
        if stdio is not None:
            request["stdio"] = True
        reply = await self.keeper.request(request, stdio or ())
        if "error" in reply:
            raise ContainerError(f"cannot start container {container.name}: {reply['error']}")
        return int(reply["pid"])

    async def held(self) -> list[str]:
        """The containers started with `hold` and never released: their starter died."""
        reply = await self.keeper.request({"op": "held"})
        return [str(i) for i in reply.get("ids", [])]

    async def release(self, name_or_id: str) -> None:
        container = self.get(name_or_id)
        reply = await self.keeper.request({"op": "release", "id": container.id})
        if "error" in reply:
            raise ContainerError(f"container {container.name}: {reply['error']}")

    async def wait(self, name_or_id: str) -> ContainerState:
        """Until the container is no longer running; its final state."""
        container = self.get(name_or_id)
        # The state file may still say running while the keeper records the exit: only
        # the keeper knows when it is done, so ask it whenever the file says running.
        if container.state.status in ("running", "paused"):
            async with await self.keeper.connect() as connection:
                await connection.send({"op": "wait", "id": container.id})
                await connection.receive()
        return self._dir(container.id).read_state()

    async def kill(self, name_or_id: str, signal_name: str = "SIGKILL") -> None:
        container = self.get(name_or_id)
        number = signal_number(signal_name)
        if not self._is_running(container.state):
            raise ContainerError(f"container {container.name} is not running")
        try:
            pidfd = os.pidfd_open(container.state.pid)
        except ProcessLookupError:
            return
        try:
            if not is_alive(container.state):  # exited, and the pid may be reused already
                return
            with contextlib.suppress(ProcessLookupError):  # exiting right now
                signal.pidfd_send_signal(pidfd, number)
        finally:
            os.close(pidfd)
        if number == signal.SIGKILL:
            # PID 1's death kills its namespace, but not processes that joined the group
            # another way; the group is also what holds a paused container's tasks frozen.
            cgroup = Cgroup.open(container.id)
            if cgroup:
                await trio.to_thread.run_sync(cgroup.kill)

    async def stop(self, name_or_id: str, timeout: float | None = None) -> ContainerState:
        """The stop signal, then SIGKILL once the grace period has passed."""
        container = self.get(name_or_id)
        grace = container.spec.stop_grace_period if timeout is None else timeout
        if not self._is_running(container.state):
            # Its exit may not be recorded yet (it died while no keeper ran): wait settles
            # it. But a state file that lags behind the keeper must not make a stop wait for
            # ever: after the grace period, whatever is left in its cgroup is killed.
            with trio.move_on_after(grace):
                return await self.wait(container.id)
            cgroup = Cgroup.open(container.id)
            if cgroup:
                await trio.to_thread.run_sync(cgroup.kill)
            return await self.wait(container.id)
        if container.state.status == "paused":
            await self.unpause(container.id)
        with trio.move_on_after(grace):
            await self.kill(container.id, container.spec.stop_signal)
            return await self.wait(container.id)
        if self._is_running(self._dir(container.id).read_state()):
            await self.kill(container.id, "SIGKILL")
        return await self.wait(container.id)

    async def restart(self, name_or_id: str, timeout: float | None = None) -> int:
        await self.stop(name_or_id, timeout)
        return await self.start(name_or_id)

    async def pause(self, name_or_id: str) -> None:
        container, cgroup = self._running_cgroup(name_or_id)
        if container.state.status == "paused":
            raise ContainerError(f"container {container.name} is already paused")
        await trio.to_thread.run_sync(cgroup.freeze)
        await trio.to_thread.run_sync(self._set_status, container, "paused")

    async def unpause(self, name_or_id: str) -> None:
        container, cgroup = self._running_cgroup(name_or_id)
        if container.state.status != "paused":
            raise ContainerError(f"container {container.name} is not paused")
        await trio.to_thread.run_sync(cgroup.thaw)
        await trio.to_thread.run_sync(self._set_status, container, "running")

    def _running_cgroup(self, name_or_id: str) -> tuple[Container, Cgroup]:
        container = self.get(name_or_id)
        cgroup = Cgroup.open(container.id)
        if not self._is_running(container.state) or cgroup is None:
            raise ContainerError(f"container {container.name} is not running")
        return container, cgroup

    # The keeper writes the same state.json (start, exit): each change below is one locked
    # read-modify-write (`changing_state`), or an exit recorded meanwhile would be lost.
    # Waiting for the lock is waiting for one keeper write; pause and unpause still do it
    # in a thread, off the event loop, as they do the freeze.

    def mark_stopped_by_user(self, name_or_id: str, stopped: bool) -> None:
        """Remember (in the container's state) whether the user stopped it."""
        with self._dir(self.resolve(name_or_id)).changing_state() as state:
            state.stopped_by_user = stopped

    def _set_status(self, container: Container, status: str) -> None:
        """Paused or running again, if the process we froze or thawed still runs.

        Between the freeze (or thaw) and here the container may have exited, and even
        been started anew; the fresh state under the lock tells, and an exited or
        different process is left as the keeper recorded it.
        """
        with self._dir(container.id).changing_state() as state:
            same_process = (state.pid, state.pid_start) == (
                container.state.pid, container.state.pid_start
            )
            if state.status in ("running", "paused") and same_process:
                state.status = status

    @staticmethod
    def _is_running(state: ContainerState) -> bool:
        return state.status in ("running", "paused") and is_alive(state)

    # --- exec -----------------------------------------------------------------------------

    async def exec(
        self, name_or_id: str, process: ProcessSpec, stdio: tuple[int, int, int],
        *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> int:
        """Run `process` inside the running container with the given stdio; its exit code.

        Under `nursery.start` it reports the process's pid as soon as it runs: the keeper
        has its own copies of `stdio` then, and a caller that closes its copies sees its
        pipes end when the process (and whatever inherited them) does.
        """
        container = self.get(name_or_id)
        if not self._is_running(container.state):
            raise ContainerError(f"container {container.name} is not running")
        if container.state.status == "paused":
            # Its process would join the frozen group and hang before it even started.
            raise ContainerError(
                f"container {container.name} is paused", hint="unpause it before exec"
            )
        async with await self.keeper.connect() as connection:
            request = {"op": "exec", "id": container.id, "process": _process_json(process)}
            await connection.send(request, stdio)
            reply = await connection.receive()
            if "error" in reply:
                raise ContainerError(f"exec in {container.name} failed: {reply['error']}")
            task_status.started(int(reply.get("pid") or 0))
            done = await connection.receive()
        return int(done["exit_code"])

    def exec_process(
        self, container: Container, argv: list[str], *, user: tuple[int, int] | None = None,
        env: list[str] | None = None, cwd: str | None = None, tty: bool = False,
    ) -> ProcessSpec:
        """The container's own process settings with the overrides `exec` allows."""
        base = container.spec.process
        environment = dict(e.split("=", 1) for e in base.env if "=" in e)
        for entry in env or []:
            key, _, value = entry.partition("=")
            environment[key] = value
        uid, gid = user if user else (base.uid, base.gid)
        return ProcessSpec(
            argv=tuple(argv), env=tuple(f"{k}={v}" for k, v in environment.items()),
            cwd=cwd or base.cwd, uid=uid, gid=gid,
            additional_gids=base.additional_gids if user is None else (),
            capabilities=base.capabilities, no_new_privileges=base.no_new_privileges,
            rlimits=base.rlimits, tty=tty,
        )

    async def shutdown_keeper(self) -> None:
        await self.keeper.shutdown()


def _process_json(process: ProcessSpec) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(process)


def _remove_tree(path: Path) -> None:
    """Delete a container folder without ever crossing into a mount point."""
    device = os.lstat(path).st_dev
    for entry in _walk_bottom_up(path, device):
        try:
            if entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as error:
            if error.errno not in (errno.ENOENT,):
                raise
    os.rmdir(path)


def _walk_bottom_up(path: Path, device: int) -> Iterator[os.DirEntry[str]]:
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_dev != device:
                    raise ContainerError(f"refusing to delete {entry.path}: something is mounted")
                yield from _walk_bottom_up(Path(entry.path), device)
            yield entry

