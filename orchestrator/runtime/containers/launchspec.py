"""The launch spec: everything needed to start one container, decided before any fork.

Built from a service and its image (see `service_spec.py`), checked by
`validate_spec`, stored as the container's `config.json`, and handed to the
launcher that runs inside the new namespaces. It is plain data — strings,
numbers, tuples — so it serializes to JSON and back without loss, and it is
what `inspect` shows. Nothing here touches the kernel.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from dataclasses import dataclass, field
from typing import Any

from orchestrator.spec.errors import StackError

MOUNT_KINDS = ("bind", "tmpfs", "proc", "sysfs", "devpts", "mqueue")
PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
NAMESPACE_MODES = ("new", "host")  # or a path such as /proc/<pid>/ns/net to join


@dataclass(frozen=True)
class Mount:
    """One filesystem mounted into the container at `target` (absolute, inside).

    `source` is a host path for binds (volumes are binds of their `_data`
    folder). `data` is the filesystem option string (tmpfs `size=…,mode=…`).
    `create` says what to make at `target` when the image lacks it: "dir",
    "file", or "" for nothing (then a missing target is an error). `origin`
    is what the service declared — "volume", "bind", "tmpfs", "config" or
    "secret" — which `volumes_from` needs: it shares volumes and binds only.
    """

    target: str
    kind: str = "bind"
    source: str = ""
    read_only: bool = False
    propagation: str = "rprivate"
    data: str = ""
    create: str = "dir"
    nodev: bool = True
    nosuid: bool = False
    noexec: bool = False
    copy_up: bool = False  # a named volume seen empty for the first time gets the image's files
    create_source: bool = False  # a missing bind source is made (a directory) at every start
    origin: str = ""


@dataclass(frozen=True)
class Rlimit:
    name: str  # "nofile", "nproc", "core", ... (RLIMIT_ without the prefix, lower case)
    soft: int
    hard: int


@dataclass(frozen=True)
class Resources:
    """cgroup limits; None means "not limited"."""

    memory: int | None = None  # bytes
    memory_swap: int | None = None  # memory + swap, bytes; -1 unlimited swap
    memory_reservation: int | None = None
    cpus: float | None = None  # CPU quota, in CPUs
    cpu_shares: int | None = None
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int | None = None


@dataclass(frozen=True)
class Namespaces:
    """"new", "host", the path of a namespace to join (`/proc/<pid>/ns/net`), or
    `container:<id>`: the namespace of that container's process at each start."""

    net: str = "new"
    ipc: str = "new"
    pid: str = "new"
    uts: str = "new"


@dataclass(frozen=True)
class ProcessSpec:
    """The process to run: what argv[0] resolves to is checked inside the container."""

    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    capabilities: tuple[str, ...] = ()  # "CAP_CHOWN", ...; the bounding, effective, permitted set
    no_new_privileges: bool = False
    rlimits: tuple[Rlimit, ...] = ()
    tty: bool = False
    stdin_open: bool = False


@dataclass(frozen=True)
class Rootfs:
    """The container's root: overlay of `lowers` (topmost first) under a private upper.

    `masked` lists paths (inside) hidden behind empty tmpfs or /dev/null:
    used when a lower is the host's own `/` (`x-stack: {rootfs: /}`).
    """

    lowers: tuple[str, ...]
    read_only: bool = False
    masked: tuple[str, ...] = ()


@dataclass(frozen=True)
class LaunchSpec:
    id: str
    name: str
    rootfs: Rootfs
    process: ProcessSpec
    hostname: str = ""
    domainname: str = ""
    mounts: tuple[Mount, ...] = ()
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    namespaces: Namespaces = Namespaces()
    resources: Resources = Resources()
    sysctls: tuple[tuple[str, str], ...] = ()
    privileged: bool = False
    init: bool = False
    stop_signal: str = "SIGTERM"
    stop_grace_period: float = 10.0
    shm_size: int = 64 * 1024 * 1024
    log_max_size: int = 10 * 1024 * 1024  # bytes of container.log before it rotates
    log_max_files: int = 3  # container.log and the rotated files kept
    image: str = ""  # the image reference as the service names it
    image_id: str = ""  # manifest digest of the stored image ("" for a host rootfs)
    labels: tuple[tuple[str, str], ...] = ()
    annotations: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> LaunchSpec:
        doc = dict(document)
        rootfs = doc.pop("rootfs")
        process = dict(doc.pop("process"))
        process["rlimits"] = tuple(Rlimit(**r) for r in process.get("rlimits", ()))
        for key in ("argv", "env", "additional_gids", "capabilities"):
            process[key] = tuple(process.get(key, ()))
        return cls(
            rootfs=Rootfs(**{k: tuple(v) if isinstance(v, list) else v for k, v in rootfs.items()}),
            process=ProcessSpec(**process),
            mounts=tuple(Mount(**m) for m in doc.pop("mounts", ())),
            masked_paths=tuple(doc.pop("masked_paths", ())),
            readonly_paths=tuple(doc.pop("readonly_paths", ())),
            namespaces=Namespaces(**doc.pop("namespaces", {})),
            resources=Resources(**doc.pop("resources", {})),
            sysctls=tuple(tuple(pair) for pair in doc.pop("sysctls", ())),  # type: ignore[misc]
            labels=tuple(tuple(pair) for pair in doc.pop("labels", ())),  # type: ignore[misc]
            **doc,
        )


def signal_number(name: str) -> int:
    """`SIGTERM`, `TERM`, `15` -> 15; a StackError for anything else."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        if not text.startswith("SIG"):
            text = "SIG" + text
        if text in signal.Signals.__members__ and not text.startswith("SIG_"):
            return int(signal.Signals[text])
        if text.startswith("SIGRTMIN"):
            offset = text[len("SIGRTMIN") :]
            number = signal.SIGRTMIN + (int(offset[1:]) if offset.startswith("+") else 0)
            if number <= signal.SIGRTMAX:
                return int(number)
    raise StackError(f"invalid signal {name!r}", hint="use a name such as SIGTERM or a number")


def validate_spec(spec: LaunchSpec) -> None:
    """Refuse a spec the launcher could not carry out, before anything is created."""
    where = f"container {spec.name}"
    if not spec.process.argv:
        raise StackError(f"{where}: no command to run (the image has no CMD or ENTRYPOINT)")
    if not spec.rootfs.lowers:
        raise StackError(f"{where}: no root filesystem")
    if not spec.process.cwd.startswith("/"):
        raise StackError(f"{where}: working_dir {spec.process.cwd!r} must be an absolute path")
    for mount in spec.mounts:
        if not mount.target.startswith("/"):
            raise StackError(f"{where}: mount target {mount.target!r} must be an absolute path")
        if mount.kind not in MOUNT_KINDS:
            raise StackError(f"{where}: unknown mount type {mount.kind!r} at {mount.target}")
        if mount.propagation not in PROPAGATIONS:
            raise StackError(
                f"{where}: invalid propagation {mount.propagation!r} at {mount.target}",
                hint="use one of " + ", ".join(PROPAGATIONS),
            )
        if mount.kind == "bind" and not mount.source.startswith("/"):
            raise StackError(f"{where}: bind source {mount.source!r} must be an absolute path")
    for name in ("net", "ipc", "pid", "uts"):
        mode = getattr(spec.namespaces, name)
        if mode not in NAMESPACE_MODES and not mode.startswith(("/", "container:")):
            raise StackError(f"{where}: invalid {name} namespace mode {mode!r}")
    signal_number(spec.stop_signal)
    if spec.stop_grace_period < 0:
        raise StackError(f"{where}: stop_grace_period must not be negative")
