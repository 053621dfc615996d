"""The cgroup of one container: creation with its limits, membership, freezing, killing,
OOM reports and removal.

A container's group is `<base>/<id>` (base `stack`) under every hierarchy root
we use, so a leak is easy to spot and cleanup never touches what is not ours.
Where the hierarchies are and how their files behave is `cgroupfs`; which files
a limit writes is `cgroup_limits`. `Cgroup` does the I/O. Its methods block
(polling for freeze and kill): call them from a worker thread, not the event loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from orchestrator.runtime.containers.cgroup_limits import (
    FILE_KEYS,
    OPTIONAL_FILES,
    Host,
    LimitWrite,
    limit_writes,
)
from orchestrator.runtime.containers.cgroupfs import (
    POLL,
    UNIFIED,
    CgroupLayout,
    detect_layout,
    enable_controllers,
    inherit_cpuset,
    keyed_counts,
    levels_below_mount,
    read_control,
    remove_tree,
    write_control,
)
from orchestrator.runtime.containers.launchspec import Resources
from orchestrator.spec.errors import StackError


class Cgroup:
    """The group of container `id`: one directory per hierarchy (they may not exist yet)."""

    def __init__(self, container_id: str, layout: CgroupLayout) -> None:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise ValueError(f"not a container id: {container_id!r}")
        self.id = container_id
        self.layout = layout
        # controller (or UNIFIED) -> the group's directory in that hierarchy
        self.dirs: dict[str, str] = {
            name: os.path.join(mount, layout.base, container_id)
            for name, mount in layout.controllers.items()
        }
        if layout.unified is not None:
            self.dirs[UNIFIED] = os.path.join(layout.unified, layout.base, container_id)
        self.hierarchy_dirs = tuple(dict.fromkeys(self.dirs.values()))
        self._v1_freezer = self.dirs.get("freezer") if layout.kind == "v1" else None

    @classmethod
    def create(
        cls,
        container_id: str,
        resources: Resources,
        layout: CgroupLayout | None = None,
        host: Host | None = None,
    ) -> Cgroup:
        """Make the group and apply the limits; on failure nothing of it is left."""
        group = cls(container_id, layout or detect_layout())
        writes = limit_writes(resources, group.layout.kind, host or Host.probe())
        for write in writes:
            if write.controller not in group.dirs:
                raise StackError(
                    f"{FILE_KEYS[write.file]} is not supported on this host",
                    hint=f"the {write.controller} cgroup controller is not available",
                )
        created: list[str] = []
        try:
            for path in group.hierarchy_dirs:
                group._prepare_parents(path)
                os.mkdir(path)
                created.append(path)
            cpuset = group.dirs.get("cpuset") if group.layout.kind == "v1" else None
            if cpuset is not None:
                inherit_cpuset(cpuset)
            for write in writes:
                group._apply(write)
        except BaseException:
            for path in reversed(created):
                remove_tree(path, deadline=time.monotonic() + 1.0)
            raise
        return group

    @classmethod
    def open(cls, container_id: str, layout: CgroupLayout | None = None) -> Cgroup | None:
        """The group of a container made earlier (say, before the engine restarted)."""
        group = cls(container_id, layout or detect_layout())
        return group if any(os.path.isdir(p) for p in group.hierarchy_dirs) else None

    def _prepare_parents(self, path: str) -> None:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        if path == self.dirs.get("cpuset") and self.layout.kind == "v1":
            # A v1 cpuset group with no CPUs or memory nodes refuses every process.
            for level in levels_below_mount(self.layout.controllers["cpuset"], parent):
                inherit_cpuset(level)
        elif self.layout.kind == "v2" and self.layout.controllers:
            for level in [self.layout.root, *levels_below_mount(self.layout.root, parent)]:
                enable_controllers(level, self.layout.controllers)

    def _apply(self, write: LimitWrite) -> None:
        key = FILE_KEYS[write.file]
        try:
            write_control(os.path.join(self.dirs[write.controller], write.file), write.value)
        except FileNotFoundError:
            if write.file in OPTIONAL_FILES:
                return
            raise StackError(
                f"{key} is not supported on this host",
                hint=f"the kernel has no {write.file}",
            ) from None
        except OSError as error:
            raise StackError(
                f"{key}: the kernel refused {write.value!r} for {write.file} "
                f"of container {self.id} ({error.strerror})"
            ) from None

    def add(self, pid: int) -> None:
        for path in self.procs_files():
            write_control(path, str(pid))

    def procs_files(self) -> list[str]:
        """Where a process joins the group: a forked child writes "0" (itself) into each."""
        return [os.path.join(path, "cgroup.procs") for path in self.hierarchy_dirs]

    def pids(self) -> list[int]:
        """Every process in the group or below it, in any hierarchy."""
        found: set[int] = set()
        for top in self.hierarchy_dirs:
            for path, _, _ in os.walk(top):
                try:
                    found.update(int(line) for line in read_control(f"{path}/cgroup.procs").split())
                except FileNotFoundError:
                    continue
        return sorted(found)

    def populated(self) -> bool:
        unified = self.dirs.get(UNIFIED)
        if unified is not None:
            try:
                return keyed_counts(unified, "cgroup.events").get("populated", 0) > 0
            except FileNotFoundError:
                return False
        return bool(self.pids())

    def freeze(self, timeout: float = 5.0) -> None:
        """Stop every process of the group; returns once all of them are stopped."""
        deadline = time.monotonic() + timeout
        while True:
            if self._v1_freezer is not None:
                # Writing again nudges tasks that were busy forking when first asked.
                write_control(f"{self._v1_freezer}/freezer.state", "FROZEN")
            else:
                write_control(f"{self._unified_dir('pause')}/cgroup.freeze", "1")
            if self.frozen():
                return
            if time.monotonic() > deadline:
                self.thaw()
                raise TimeoutError(f"container {self.id}: processes did not freeze in {timeout}s")
            time.sleep(POLL)

    def thaw(self) -> None:
        if self._v1_freezer is not None:
            write_control(f"{self._v1_freezer}/freezer.state", "THAWED")
        else:
            write_control(f"{self._unified_dir('unpause')}/cgroup.freeze", "0")

    def frozen(self) -> bool:
        if self._v1_freezer is not None:
            return self.read("freezer", "freezer.state") == "FROZEN"
        return keyed_counts(self._unified_dir("pause"), "cgroup.events").get("frozen", 0) == 1

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        """Send `sig` to every process; for SIGKILL, return once the group is empty."""
        if sig != signal.SIGKILL:
            self._signal_each(sig)
            return
        kill_file = os.path.join(self.dirs.get(UNIFIED, ""), "cgroup.kill")
        has_kill_file = UNIFIED in self.dirs and os.path.exists(kill_file)
        deadline = time.monotonic() + timeout
        while True:
            if has_kill_file:
                try:
                    write_control(kill_file, "1")
                except FileNotFoundError:
                    return  # removed meanwhile (by the keeper): only an empty group can be
            else:
                # Repeat: a process may have forked between our listing and its death.
                self._signal_each(sig)
            if self._v1_freezer is not None:
                # A task frozen by the v1 freezer holds a pending SIGKILL until thawed.
                with contextlib.suppress(FileNotFoundError):
                    self.thaw()
            if not self.populated():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {self.id}: processes still alive after SIGKILL")
            time.sleep(POLL)

    def _signal_each(self, sig: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def oom_killed(self) -> bool:
        if "memory" not in self.dirs:
            return False
        file = "memory.oom_control" if self.layout.kind == "v1" else "memory.events"
        try:
            return keyed_counts(self.dirs["memory"], file).get("oom_kill", 0) > 0
        except FileNotFoundError:
            return False

    def memory_usage(self) -> int:
        """Bytes charged to the group now (0 when no memory controller is available)."""
        if "memory" not in self.dirs:
            return 0
        file = "memory.usage_in_bytes" if self.layout.kind == "v1" else "memory.current"
        return int(self.read("memory", file))

    def read(self, controller: str, file: str) -> str:
        """One control file of the group, such as read("cpu", "cpu.max")."""
        return read_control(os.path.join(self.dirs[controller], file)).strip()

    def remove(self, timeout: float = 2.0) -> None:
        """Delete the group everywhere; waits briefly for exiting processes. Idempotent."""
        deadline = time.monotonic() + timeout
        for path in self.hierarchy_dirs:
            remove_tree(path, deadline)

    def _unified_dir(self, action: str) -> str:
        if UNIFIED not in self.dirs:
            raise StackError(f"{action} is not supported on this host", hint="no freezer cgroup")
        return self.dirs[UNIFIED]


def remove_stale(keep: set[str], layout: CgroupLayout | None = None) -> list[str]:
    """Remove the groups of containers not in `keep` that hold no process; their ids."""
    layout = layout or detect_layout()
    mounts = [*layout.controllers.values(), *([layout.unified] if layout.unified else [])]
    ids: set[str] = set()
    for mount in dict.fromkeys(mounts):
        try:
            with os.scandir(os.path.join(mount, layout.base)) as entries:
                ids.update(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            continue
    removed = []
    for container_id in sorted(ids - keep):
        group = Cgroup(container_id, layout)
        if group.pids():
            continue
        try:
            group.remove(timeout=0)
        except OSError:
            continue  # a process joined meanwhile: not stale after all
        removed.append(container_id)
    return removed

