"""The cgroup of one container: limits, membership, freezing, killing, OOM reports.

Two layouts are supported. Pure cgroup v2 has one hierarchy at the root, and a
controller works in a group only once every ancestor lists it in
`cgroup.subtree_control`. The v1 hybrid layout has one hierarchy per controller
(`<root>/memory`, `<root>/cpu`, …) and usually a controller-less cgroup2 mount
at `<root>/unified`, which still gives `cgroup.events` and `cgroup.kill`.
A container's group is `<base>/<id>` (base `stack`) under every hierarchy root
we use, so a leak is easy to spot and cleanup never touches what is not ours.

`limit_writes` turns `Resources` into file writes without touching the kernel,
so the translation and Docker's checks are tested without root; `Cgroup` does
the I/O. Its methods block (polling for freeze and kill): call them from a
worker thread, not the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from orchestrator.runtime.containers.launchspec import Resources
from orchestrator.spec.errors import StackError

LayoutKind = Literal["v1", "v2"]

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer")
V2_CONTROLLERS = ("cpu", "cpuset", "memory", "pids")
UNIFIED = "unified"  # the key of the cgroup2 hierarchy among a group's directories

MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses limits below this, and so do we
CFS_PERIOD = 100_000  # microseconds, the kernel's default and Docker's
MIN_SHARES, MAX_SHARES = 2, 262_144
POLL = 0.005  # seconds between looks at a freezer or a dying group

# The compose key behind each file, so a refused write names what the user wrote.
FILE_KEYS = {
    "memory.limit_in_bytes": "mem_limit",
    "memory.max": "mem_limit",
    "memory.memsw.limit_in_bytes": "memswap_limit",
    "memory.swap.max": "memswap_limit",
    "memory.soft_limit_in_bytes": "mem_reservation",
    "memory.low": "mem_reservation",
    "cpu.cfs_period_us": "cpus",
    "cpu.cfs_quota_us": "cpus",
    "cpu.max": "cpus",
    "cpu.shares": "cpu_shares",
    "cpu.weight": "cpu_shares",
    "cpuset.cpus": "cpuset",
    "cpuset.mems": "cpuset_mems",
    "pids.max": "pids_limit",
}
# Swap accounting is a kernel option; without it Docker limits memory alone, and so do we.
OPTIONAL_FILES = frozenset({"memory.memsw.limit_in_bytes", "memory.swap.max"})


class LimitWrite(NamedTuple):
    controller: str
    file: str
    value: str


@dataclass(frozen=True)
class Host:
    """What the machine offers, for Docker's "more than the host has" checks."""

    cpus: frozenset[int]
    mems: frozenset[int]

    @classmethod
    def probe(cls) -> Host:
        def online(path: str) -> frozenset[int]:
            try:
                with open(path) as file:
                    return parse_cpu_list(file.read().strip())
            except (OSError, ValueError):
                return frozenset({0})

        return cls(
            online("/sys/devices/system/cpu/online"), online("/sys/devices/system/node/online")
        )


@dataclass(frozen=True)
class CgroupLayout:
    """Where the hierarchies are mounted.

    `controllers` maps each controller we can use to the mount of its hierarchy
    (all the same path on v2); `unified` is the cgroup2 mount, if any.
    """

    kind: LayoutKind
    root: str
    controllers: Mapping[str, str]
    unified: str | None
    base: str = "stack"


def detect_layout(root: str = "/sys/fs/cgroup", base: str | None = None) -> CgroupLayout:
    """Where the hierarchies are. Containers' groups go under `base`: `stack`, or
    `STACK_CGROUP_PARENT` (a test session's own `stack/test-…`, say)."""
    base = base or os.environ.get("STACK_CGROUP_PARENT") or "stack"
    if os.path.isfile(os.path.join(root, "cgroup.controllers")):
        available = _read(os.path.join(root, "cgroup.controllers")).split()
        controllers = {name: root for name in V2_CONTROLLERS if name in available}
        return CgroupLayout("v2", root, controllers, root, base)
    controllers = {}
    for name in V1_CONTROLLERS:
        mount = os.path.join(root, name)
        is_v1 = not os.path.exists(os.path.join(mount, "cgroup.controllers"))
        if is_v1 and os.path.isfile(os.path.join(mount, "cgroup.procs")):
            # realpath: distributions mount cpu and cpuacct together and link both names to it
            controllers[name] = os.path.realpath(mount)
    unified: str | None = os.path.join(root, UNIFIED)
    if not os.path.isfile(os.path.join(unified, "cgroup.controllers")):
        unified = None
    if not controllers and unified is None:
        raise StackError(f"no cgroup filesystem found at {root}", hint="mount cgroup2 there")
    return CgroupLayout("v1", root, controllers, unified, base)


def parse_cpu_list(text: str) -> frozenset[int]:
    """`0-2,4` -> {0, 1, 2, 4}; ValueError for anything else."""
    numbers: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(text)
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(text)
        numbers.update(range(low, high + 1))
    return frozenset(numbers)


def format_cpu_list(numbers: frozenset[int]) -> str:
    """{0, 1, 2, 4} -> `0-2,4`."""
    runs: list[list[int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)


def limit_writes(resources: Resources, kind: LayoutKind, host: Host) -> list[LimitWrite]:
    """The files to write, in order, for `resources`; StackError where Docker refuses."""
    check_resources(resources, host)
    r = resources
    memory = r.memory or None  # 0 means "not set" in compose as in Docker
    swap = r.memory_swap or None
    v2 = kind == "v2"
    writes: list[LimitWrite] = []
    if memory is not None:
        value = str(memory) if memory > 0 else "max" if v2 else "-1"
        writes.append(LimitWrite("memory", "memory.max" if v2 else "memory.limit_in_bytes", value))
    if swap is not None:
        if v2:  # v2 limits swap alone, v1 limits memory and swap together
            value = "max" if swap < 0 else str(swap - (memory or 0))
            writes.append(LimitWrite("memory", "memory.swap.max", value))
        else:
            writes.append(LimitWrite("memory", "memory.memsw.limit_in_bytes", str(swap)))
    if r.memory_reservation:
        file = "memory.low" if v2 else "memory.soft_limit_in_bytes"
        writes.append(LimitWrite("memory", file, str(r.memory_reservation)))
    if r.cpus:
        quota = round(r.cpus * CFS_PERIOD)  # round: 0.29 * 100000 is 28999.999…
        if v2:
            writes.append(LimitWrite("cpu", "cpu.max", f"{quota} {CFS_PERIOD}"))
        else:
            writes.append(LimitWrite("cpu", "cpu.cfs_period_us", str(CFS_PERIOD)))
            writes.append(LimitWrite("cpu", "cpu.cfs_quota_us", str(quota)))
    if r.cpu_shares:
        # Docker clamps shares to the range v1 accepts rather than refusing them.
        shares = min(max(r.cpu_shares, MIN_SHARES), MAX_SHARES)
        if v2:
            writes.append(LimitWrite("cpu", "cpu.weight", str(shares_to_weight(shares))))
        else:
            writes.append(LimitWrite("cpu", "cpu.shares", str(shares)))
    if r.cpuset_cpus:
        writes.append(LimitWrite("cpuset", "cpuset.cpus", r.cpuset_cpus.strip()))
    if r.cpuset_mems:
        writes.append(LimitWrite("cpuset", "cpuset.mems", r.cpuset_mems.strip()))
    if r.pids_limit is not None:
        # 0 and -1 both mean unlimited, as in Docker
        value = str(r.pids_limit) if r.pids_limit > 0 else "max"
        writes.append(LimitWrite("pids", "pids.max", value))
    return writes


def check_resources(resources: Resources, host: Host) -> None:
    """Docker's refusals, with its wording, so users find the same advice."""
    r = resources
    memory = r.memory or None
    swap = r.memory_swap or None
    reservation = r.memory_reservation or None
    for key, size in (("mem_limit", memory), ("memswap_limit", swap)):
        if size is not None and size < -1:
            raise StackError(f"{key} {size} is negative", hint="use a size, or -1 for unlimited")
    if memory is not None and 0 < memory < MIN_MEMORY:
        raise StackError(
            f"mem_limit {memory}: Minimum memory limit allowed is 6MB", hint="use at least 6m"
        )
    if swap is not None and swap > 0:
        if memory is None or memory < 0:
            raise StackError(
                "memswap_limit: You should always set the Memory limit when using Memoryswap limit",
                hint="set mem_limit too",
            )
        if swap < memory:
            raise StackError(
                f"memswap_limit {swap}: Minimum memoryswap limit should be larger than memory "
                f"limit {memory}",
                hint="memswap_limit counts memory plus swap; use -1 for unlimited swap",
            )
    if reservation is not None:
        if reservation < MIN_MEMORY:
            raise StackError(
                f"mem_reservation {reservation}: Minimum memory reservation allowed is 6MB",
                hint="use at least 6m",
            )
        if memory is not None and 0 < memory < reservation:
            raise StackError(
                f"mem_reservation {reservation}: Minimum memory limit can not be less than "
                f"memory reservation limit {memory}",
                hint="make mem_limit at least mem_reservation",
            )
    n = len(host.cpus)
    if r.cpus and not 0.01 <= r.cpus <= n:
        raise StackError(
            f"cpus {r.cpus}: Range of CPUs is from 0.01 to {n}.00, "
            f"as there are only {n} CPUs available"
        )
    _check_cpuset("cpuset", r.cpuset_cpus, host.cpus, "CPUs")
    _check_cpuset("cpuset_mems", r.cpuset_mems, host.mems, "memory nodes")


def shares_to_weight(shares: int) -> int:
    """v1 cpu.shares [2, 262144] mapped linearly onto v2 cpu.weight [1, 10000], as runc does."""
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


def _check_cpuset(key: str, text: str, available: frozenset[int], what: str) -> None:
    if not text:
        return
    try:
        requested = parse_cpu_list(text)
    except ValueError:
        raise StackError(
            f"{key}: Invalid value {text!r}", hint="use a list such as 0-2,4"
        ) from None
    if not requested <= available:
        raise StackError(
            f"{key}: Requested {what} are not available - requested {text}, "
            f"available: {format_cpu_list(available)}"
        )


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
                _inherit_cpuset(cpuset)
            for write in writes:
                group._apply(write)
        except BaseException:
            for path in reversed(created):
                _rmdir_tree(path, deadline=time.monotonic() + 1.0)
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
            for level in _levels_below_mount(self.layout.controllers["cpuset"], parent):
                _inherit_cpuset(level)
        elif self.layout.kind == "v2" and self.layout.controllers:
            for level in [self.layout.root, *_levels_below_mount(self.layout.root, parent)]:
                _enable_controllers(level, self.layout.controllers)

    def _apply(self, write: LimitWrite) -> None:
        key = FILE_KEYS[write.file]
        try:
            _write(os.path.join(self.dirs[write.controller], write.file), write.value)
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
            _write(path, str(pid))

    def procs_files(self) -> list[str]:
        """Where a process joins the group: a forked child writes "0" (itself) into each."""
        return [os.path.join(path, "cgroup.procs") for path in self.hierarchy_dirs]

    def pids(self) -> list[int]:
        """Every process in the group or below it, in any hierarchy."""
        found: set[int] = set()
        for top in self.hierarchy_dirs:
            for path, _, _ in os.walk(top):
                try:
                    found.update(int(line) for line in _read(f"{path}/cgroup.procs").split())
                except FileNotFoundError:
                    continue
        return sorted(found)

    def populated(self) -> bool:
        unified = self.dirs.get(UNIFIED)
        if unified is not None:
            try:
                return _events(unified, "cgroup.events").get("populated", 0) > 0
            except FileNotFoundError:
                return False
        return bool(self.pids())

    def freeze(self, timeout: float = 5.0) -> None:
        """Stop every process of the group; returns once all of them are stopped."""
        deadline = time.monotonic() + timeout
        while True:
            if self._v1_freezer is not None:
                # Writing again nudges tasks that were busy forking when first asked.
                _write(f"{self._v1_freezer}/freezer.state", "FROZEN")
            else:
                _write(f"{self._unified_dir('pause')}/cgroup.freeze", "1")
            if self.frozen():
                return
            if time.monotonic() > deadline:
                self.thaw()
                raise TimeoutError(f"container {self.id}: processes did not freeze in {timeout}s")
            time.sleep(POLL)

    def thaw(self) -> None:
        if self._v1_freezer is not None:
            _write(f"{self._v1_freezer}/freezer.state", "THAWED")
        else:
            _write(f"{self._unified_dir('unpause')}/cgroup.freeze", "0")

    def frozen(self) -> bool:
        if self._v1_freezer is not None:
            return self.read("freezer", "freezer.state") == "FROZEN"
        return _events(self._unified_dir("pause"), "cgroup.events").get("frozen", 0) == 1

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
                    _write(kill_file, "1")
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
            return _events(self.dirs["memory"], file).get("oom_kill", 0) > 0
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
        return _read(os.path.join(self.dirs[controller], file)).strip()

    def remove(self, timeout: float = 2.0) -> None:
        """Delete the group everywhere; waits briefly for exiting processes. Idempotent."""
        deadline = time.monotonic() + timeout
        for path in self.hierarchy_dirs:
            _rmdir_tree(path, deadline)

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


def _levels_below_mount(mount: str, path: str) -> list[str]:
    """The directories from just below `mount` down to `path`, outermost first."""
    levels = []
    mount, path = os.path.normpath(mount), os.path.normpath(path)
    while path != mount and path != os.path.dirname(path):
        levels.append(path)
        path = os.path.dirname(path)
    return levels[::-1]


def _inherit_cpuset(path: str) -> None:
    parent = os.path.dirname(path)
    for file in ("cpuset.cpus", "cpuset.mems"):
        if not _read(os.path.join(path, file)).strip():
            _write(os.path.join(path, file), _read(os.path.join(parent, file)).strip())


def _enable_controllers(path: str, controllers: Mapping[str, str]) -> None:
    enabled = _read(os.path.join(path, "cgroup.subtree_control")).split()
    for name in controllers:
        if name not in enabled:
            # Left off when refused: a limit that needs it then fails naming its key.
            with contextlib.suppress(OSError):
                _write(os.path.join(path, "cgroup.subtree_control"), "+" + name)


def _rmdir_tree(top: str, deadline: float) -> None:
    """rmdir `top` and any groups made below it, retrying while processes finish exiting."""
    while True:
        try:
            for path, _, _ in os.walk(top, topdown=False):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(path)
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(POLL)


def _events(path: str, file: str) -> dict[str, int]:
    """A flat keyed file such as cgroup.events or memory.oom_control, as numbers."""
    counts = {}
    for line in _read(os.path.join(path, file)).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            counts[key] = int(value)
    return counts


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError as error:
        raise _gone(error, path) from None


def _write(path: str, value: str) -> None:
    # No O_CREAT: a missing control file means a missing controller, not a file to make.
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as error:
        raise _gone(error, path) from None


def _gone(error: OSError, path: str) -> OSError:
    """ENODEV is a control file whose group was removed after we opened it (the keeper
    removes a group as its container exits): the same as not finding it at all."""
    if error.errno == errno.ENODEV:
        return FileNotFoundError(errno.ENOENT, "cgroup removed", path)
    return error
