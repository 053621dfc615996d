"""The cgroup filesystem: where its hierarchies are mounted, and how its files behave.

Two layouts are supported. Pure cgroup v2 has one hierarchy at the root, and a
controller works in a group only once every ancestor lists it in
`cgroup.subtree_control`. The v1 hybrid layout has one hierarchy per controller
(`<root>/memory`, `<root>/cpu`, …) and usually a controller-less cgroup2 mount
at `<root>/unified`, which still gives `cgroup.events` and `cgroup.kill`.

Kept apart from `Cgroup` (one container's group) because these are the
filesystem's own rules, whoever the group is for: control files that vanish
with their group, controllers enabled level by level, v1 cpusets that refuse
processes until filled, directories that stay busy while their processes exit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from orchestrator.spec.errors import StackError

LayoutKind = Literal["v1", "v2"]

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer")
V2_CONTROLLERS = ("cpu", "cpuset", "memory", "pids")
UNIFIED = "unified"  # the key of the cgroup2 hierarchy among a group's directories

POLL = 0.005  # seconds between looks at a freezer or a dying group


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
        available = read_control(os.path.join(root, "cgroup.controllers")).split()
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


def levels_below_mount(mount: str, path: str) -> list[str]:
    """The directories from just below `mount` down to `path`, outermost first."""
    levels = []
    mount, path = os.path.normpath(mount), os.path.normpath(path)
    while path != mount and path != os.path.dirname(path):
        levels.append(path)
        path = os.path.dirname(path)
    return levels[::-1]


def inherit_cpuset(path: str) -> None:
    """Give a v1 cpuset group its parent's CPUs and memory nodes where it has none."""
    parent = os.path.dirname(path)
    for file in ("cpuset.cpus", "cpuset.mems"):
        if not read_control(os.path.join(path, file)).strip():
            inherited = read_control(os.path.join(parent, file)).strip()
            write_control(os.path.join(path, file), inherited)


def enable_controllers(path: str, controllers: Mapping[str, str]) -> None:
    """Make `controllers` available to the v2 groups directly below `path`."""
    enabled = read_control(os.path.join(path, "cgroup.subtree_control")).split()
    for name in controllers:
        if name not in enabled:
            # Left off when refused: a limit that needs it then fails naming its key.
            with contextlib.suppress(OSError):
                write_control(os.path.join(path, "cgroup.subtree_control"), "+" + name)


def remove_tree(top: str, deadline: float) -> None:
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


def keyed_counts(path: str, file: str) -> dict[str, int]:
    """A flat keyed file such as cgroup.events or memory.oom_control, as numbers."""
    counts = {}
    for line in read_control(os.path.join(path, file)).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            counts[key] = int(value)
    return counts


def read_control(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError as error:
        raise _gone(error, path) from None


def write_control(path: str, value: str) -> None:
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
