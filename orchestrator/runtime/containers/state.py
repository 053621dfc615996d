"""What the runtime remembers about each container, under `<state root>/containers/<id>/`.

`config.json` is written once at create: the launch spec plus the container's
name and compose metadata. `state.json` changes over the container's life:
the keeper writes it when a container starts and when it exits, the runtime
when it is created, paused or unpaused, or stopped by the user. Both are
replaced atomically (temp file, fsync, rename), so a reader never sees half a file.

Atomic replacement is not enough for two writers, though: each change reads the
state, edits one field and writes the whole state back, and the keeper and the
engine are two processes. If the keeper recorded an exit between the engine's
read and its write, the engine would write back "running" with the dead pid, and
the exit code, finish time and OOM verdict would be lost. So every change goes
through `ContainerDir.changing_state`, which holds an exclusive flock on the
container's folder from the read to the rename. The folder, not `state.json`, is
locked because the rename gives `state.json` a new inode on every write; the
folder keeps its inode for the container's whole life, needs no extra file, and a
lock dies with its holder, so a crashed writer never leaves the state locked.
Nothing else happens under the lock — no signal, no wait for another process —
so a writer waits at most for one read and one write: the keeper, whose single
loop must never stall, blocks only that long.

A pid alone is not an identity (pids are reused), so `state.json` also keeps
the process's start time from /proc; a pid whose start time differs is a
different process and is never signalled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers.launchspec import LaunchSpec
from orchestrator.runtime.images.store_files import write_atomic


@dataclass
class ContainerState:
    status: str = "created"  # created | running | paused | exited
    pid: int = 0
    pid_start: int = 0  # /proc/<pid>/stat start time, in clock ticks since boot
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    restart_count: int = 0
    stopped_by_user: bool = False  # no restart policy brings it back, even after a reboot

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ContainerState:
        known = {k: v for k, v in document.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def process_start_time(pid: int) -> int | None:
    """The start time of a live process (field 22 of /proc/<pid>/stat), None if gone.

    A zombie counts as gone: it has exited and only waits for its parent, which after a
    keeper restart is not us, to collect its exit status.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def is_alive(state: ContainerState) -> bool:
    return bool(state.pid) and process_start_time(state.pid) == state.pid_start


class ContainerDir:
    """One container's folder and the files in it."""

    def __init__(self, root: Path, container_id: str):
        self.id = container_id
        self.path = root / container_id

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    def read_config(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text())

    def read_spec(self) -> LaunchSpec:
        return LaunchSpec.from_json(self.read_config()["spec"])

    def write_config(self, document: dict[str, Any]) -> None:
        data = json.dumps(document, sort_keys=True).encode()
        write_atomic(self.config_path, data, self.path)

    def read_state(self) -> ContainerState:
        try:
            return ContainerState.from_json(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return ContainerState(status="exited", error="state lost")

    def write_state(self, state: ContainerState) -> None:
        """Replace the state outright: only for a folder no other process sees yet (create);
        changes to a visible container go through `changing_state`."""
        data = json.dumps(state.to_json(), sort_keys=True).encode()
        write_atomic(self.state_path, data, self.path)

    @contextlib.contextmanager
    def state_lock(self) -> Iterator[None]:
        """Exclusive, between processes, against every other change of this state.

        Raises FileNotFoundError when the folder is gone (the container was removed).
        """
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def changing_state(self) -> Iterator[ContainerState]:
        """The current state, to edit in the block; written back, if changed, at its end.

        Read and write happen under `state_lock`, so a change made meanwhile by the
        other process is never overwritten with what this one read. An exception in
        the block leaves the state as it was.
        """
        with self.state_lock():
            state = self.read_state()
            before = dataclasses.replace(state)
            yield state
            if state != before:
                self.write_state(state)


def container_ids(root: Path) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if len(n) == 64 and (root / n / "config.json").exists())


def images_in_use(containers_root: Path) -> dict[str, list[str]]:
    """Image manifest digest -> names of the containers (running or not) created from it.

    Read straight from the config files, without the runtime, so that image
    commands can refuse to delete an image a container needs.
    """
    users: dict[str, list[str]] = {}
    for container_id in container_ids(containers_root):
        try:
            config = json.loads((containers_root / container_id / "config.json").read_text())
            image_id = config["spec"].get("image_id")
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            continue
        if image_id:
            users.setdefault(image_id, []).append(str(config.get("name", container_id)))
    return users
