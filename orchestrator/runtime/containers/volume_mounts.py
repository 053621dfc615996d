"""A service's volumes, binds and tmpfs, and the ones it shares from another container.

Each entry of `volumes:` (long syntax, as normalized: `type` bind, volume or
tmpfs), of `tmpfs:` (short syntax) and of `volumes_from:` becomes `Mount`s
with Docker's defaults and checks; named and anonymous volumes are noted in the
plan for the runtime to create. What order they go in, and which wins where
two meet, is `service_mounts.py`'s business.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers.launchspec import PROPAGATIONS, Mount
from orchestrator.runtime.containers.mount_plan import (
    MountContext,
    MountPlan,
    VolumeUse,
    mount_target,
    non_negative_integer,
)
from orchestrator.runtime.containers.service_keys import ServiceKeys
from orchestrator.spec.errors import StackError
from orchestrator.spec.shortsyntax import clean_path

_TMPFS_FLAGS = {
    "ro": ("read_only", True), "rw": ("read_only", False),
    "noexec": ("noexec", True), "exec": ("noexec", False),
    "nosuid": ("nosuid", True), "suid": ("nosuid", False),
    "nodev": ("nodev", True), "dev": ("nodev", False),
}  # fmt: skip
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge", "mpol")
_KERNEL_SIZE = re.compile(r"^[0-9]+[kKmMgGtTpPeE%]?$")


def volume_entry(
    keys: ServiceKeys, index: int, entry: Any, context: MountContext, plan: MountPlan
) -> Mount:
    """One entry of `volumes:`: a bind, a named or anonymous volume, or a tmpfs."""
    where = ("volumes", index)
    if not isinstance(entry, dict):
        raise keys.error(where, f"invalid volume {entry!r}", "write SOURCE:TARGET[:OPTIONS]")
    target = mount_target(keys, where, entry.get("target"))
    kind = entry.get("type", "volume")
    read_only = bool(entry.get("read_only"))
    if kind == "bind":
        return _bind(keys, where, entry, target, read_only)
    if kind == "volume":
        options = entry.get("volume") or {}
        return volume_mount(
            keys, where, target, entry.get("source"), options, read_only, context, plan
        )
    if kind == "tmpfs":
        options = entry.get("tmpfs") or {}
        data = []
        if options.get("size") is not None:
            size = non_negative_integer(keys, (*where, "tmpfs", "size"), options["size"])
            data.append(f"size={size}")
        if options.get("mode") is not None:
            mode = non_negative_integer(keys, (*where, "tmpfs", "mode"), options["mode"])
            data.append(f"mode={mode:o}")
        return Mount(
            target,
            kind="tmpfs",
            source="tmpfs",
            read_only=read_only,
            data=",".join(data),
            nosuid=True,
            noexec=True,
            origin="tmpfs",
        )
    raise keys.error(
        (*where, "type"), f"volume type {kind!r} is not supported", "use bind, volume or tmpfs"
    )



def _bind(
    keys: ServiceKeys, where: tuple[str | int, ...], entry: dict, target: str, read_only: bool
) -> Mount:
    source = entry.get("source")
    options = entry.get("bind") or {}
    if not isinstance(source, str) or not source.startswith("/"):
        raise keys.error(where, f"bind source {source!r} must be an absolute path")
    create_source = options.get("create_host_path") is True
    if not os.path.exists(source) and not create_source:
        raise keys.error(
            where,
            f"bind source path does not exist: {source}",
            "create it, or set bind.create_host_path: true",
        )
    propagation = options.get("propagation") or "rprivate"
    if propagation not in PROPAGATIONS:
        raise keys.error(
            (*where, "bind", "propagation"),
            f"invalid propagation {propagation!r}",
            "use one of " + ", ".join(PROPAGATIONS),
        )
    if options.get("recursive") not in (None, "enabled"):
        raise keys.error(
            (*where, "bind", "recursive"),
            f"bind.recursive {options['recursive']!r} is not supported",
        )
    # A bind of a file needs a file to mount over; a missing source will be a directory.
    create = "file" if os.path.exists(source) and not os.path.isdir(source) else "dir"
    return Mount(
        target,
        source=source,
        read_only=read_only,
        propagation=propagation,
        create=create,
        nodev=False,
        create_source=create_source,
        origin="bind",
    )


def volume_mount(
    keys: ServiceKeys,
    where: tuple[str | int, ...],
    target: str,
    source: Any,
    options: Mapping[str, Any],
    read_only: bool,
    context: MountContext,
    plan: MountPlan,
) -> Mount:
    """A named or anonymous volume: a bind of its data folder, filled from the image once."""
    if source:
        declared_volumes = context.project_model.get("volumes") or {}
        if source not in declared_volumes:
            raise keys.error(
                where, f"undefined volume {source!r}", "declare it under the top-level volumes:"
            )
        name = (declared_volumes[source] or {}).get("name") or source
        plan.volumes.append(VolumeUse(name, target))
    else:
        name = context.anonymous_volumes.get(target) or context.new_volume_name()
        plan.volumes.append(VolumeUse(name, target, anonymous=True))
    path = Path(context.volume_path(name))
    subpath = options.get("subpath")
    if subpath:
        parts = clean_path(str(subpath)).split("/")
        if str(subpath).startswith("/") or ".." in parts:
            raise keys.error(
                (*where, "volume", "subpath"),
                f"volume subpath {subpath!r} must stay inside the volume",
            )
        path = path / "/".join(parts)
    # Docker copies the image's files into an empty volume, never into a subpath.
    copy_up = not options.get("nocopy") and not subpath
    return Mount(
        target, source=str(path), read_only=read_only, nodev=False, copy_up=copy_up,
        origin="volume",
    )


def tmpfs_entry(keys: ServiceKeys, index: int, entry: str) -> Mount:
    """`/run` or `/tmp:size=64m,mode=1777,exec`: noexec, nosuid, nodev unless said otherwise."""
    where = ("tmpfs", index)
    target_text, _, option_text = entry.partition(":")
    target = mount_target(keys, where, target_text)
    flags = {"read_only": False, "noexec": True, "nosuid": True, "nodev": True}
    data = []
    for option in filter(None, option_text.split(",")):
        name, sep, value = option.partition("=")
        if not sep and name in _TMPFS_FLAGS:
            flag, setting = _TMPFS_FLAGS[name]
            flags[flag] = setting
        elif sep and name in _TMPFS_DATA:
            if name == "size" and not _KERNEL_SIZE.match(value):
                raise keys.error(where, f"invalid tmpfs size {value!r}", "write e.g. 64m or 50%")
            if name == "mode" and not re.fullmatch(r"[0-7]{1,4}", value):
                raise keys.error(where, f"invalid tmpfs mode {value!r}", "write it in octal: 1777")
            data.append(option)
        else:
            raise keys.error(
                where, f"unknown tmpfs option {option!r}", "use size=, mode=, ro, exec, suid or dev"
            )
    return Mount(
        target, kind="tmpfs", source="tmpfs", data=",".join(data), origin="tmpfs", **flags
    )


def volumes_from(
    keys: ServiceKeys, index: int, entry: str, context: MountContext
) -> list[Mount]:
    """The volumes and binds of the container `entry` names (`web`, `web:ro`,
    `container:db`, `container:db:rw`); a mode makes them all read-only or writable,
    no mode keeps each one's own. Its tmpfs, configs and secrets stay its own."""
    where = ("volumes_from", index)
    if entry.startswith("container:"):
        name, _, mode = entry[len("container:") :].partition(":")
        reference = f"container:{name}"
    else:
        reference, _, mode = entry.partition(":")
    if mode not in ("", "ro", "rw"):
        raise keys.error(where, f"invalid volumes_from mode {mode!r} in {entry!r}", "use ro or rw")
    try:
        mounts = context.mounts_of(reference)
    except StackError as error:
        raise keys.error(where, error.message, error.hint) from None
    shared = [m for m in mounts if m.origin in ("volume", "bind")]
    if mode:
        shared = [dataclasses.replace(m, read_only=mode == "ro") for m in shared]
    return shared


