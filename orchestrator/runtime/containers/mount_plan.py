"""What planning a service's mounts builds up, and the checks every kind of mount shares.

A `MountPlan` collects the mounts (one per container path), the files the
runtime must write before launch (`FileToWrite`) and the volumes it must make
sure exist (`VolumeUse`); a `MountContext` is what the planning needs beyond
the service itself. Separate from `service_mounts.py`, which decides the order
of the mounts, and from the modules for each kind of mount, which all fill
these in.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers.launchspec import Mount
from orchestrator.runtime.containers.service_keys import ServiceKeys
from orchestrator.spec.errors import StackError, format_path
from orchestrator.spec.shortsyntax import clean_path


@dataclass(frozen=True)
class FileToWrite:
    """A file the runtime writes under the container's directory before launch."""

    path: str  # relative to the container's directory: "hosts", "files/secrets/0-db"
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class VolumeUse:
    """A volume the container mounts; the runtime creates it when it does not exist."""

    name: str
    target: str
    anonymous: bool = False


@dataclass
class MountPlan:
    """The mounts, files and volumes decided so far, and which key put a mount where."""

    mounts: list[Mount] = field(default_factory=list)
    files: list[FileToWrite] = field(default_factory=list)
    volumes: list[VolumeUse] = field(default_factory=list)
    owners: dict[str, tuple[str | int, ...]] = field(default_factory=dict)  # target -> key

    def add(self, keys: ServiceKeys, mount: Mount, where: tuple[str | int, ...]) -> None:
        """One mount per container path: a second one there is the user's mistake."""
        if mount.target in self.owners:
            first = format_path(("services", keys.name, *self.owners[mount.target]))
            raise keys.error(
                where,
                f"{mount.target} is already mounted by {first}",
                "each container path takes one mount",
            )
        self.owners[mount.target] = where
        self.mounts.append(mount)


def no_containers(reference: str) -> Sequence[Mount]:
    """The answer for `volumes_from` where no container can be looked up."""
    raise StackError(f"no container to take volumes from: {reference}")


@dataclass(frozen=True)
class MountContext:
    """What deciding the mounts needs beyond the service itself.

    `mounts_of` answers the mounts of the container a `volumes_from` entry
    names (`web` for a service's container, `container:db` for one by name),
    or raises a StackError when there is none.
    """

    container_dir: Path
    project_model: Mapping[str, Any]
    project_environment: Mapping[str, str]
    volume_path: Callable[[str], Path]
    anonymous_volumes: Mapping[str, str]  # target -> name, kept from a replaced container
    new_volume_name: Callable[[], str] = lambda: secrets.token_hex(32)
    mounts_of: Callable[[str], Sequence[Mount]] = no_containers


def mount_target(keys: ServiceKeys, where: tuple[str | int, ...], target: Any) -> str:
    """A container path to mount on: absolute, cleaned, never the root itself."""
    if not isinstance(target, str) or not target.startswith("/"):
        raise keys.error(where, f"mount target {target!r} must be an absolute path")
    target = clean_path(target)
    if target == "/":
        raise keys.error(where, "a mount target cannot be '/'")
    return target


def non_negative_integer(keys: ServiceKeys, where: tuple[str | int, ...], value: Any) -> int:
    """A size, mode, uid or gid given in the stack file, as a number of at least 0."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise keys.error(where, f"expected a number, not {value!r}") from None
    if number < 0:
        raise keys.error(where, f"must not be negative, not {number}")
    return number
