"""What a container gets when the stack file says nothing: Docker's defaults.

People move stack files between Docker and `stack` and expect the same
container: the same capabilities (`CapEff` 00000000a80425fb), the same `/proc`
and `/sys` entries hidden or read-only, the same sysctls accepted. The lists
here are Docker's, so a difference is a bug, not a choice.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from orchestrator.spec.errors import StackError

# Bit numbers from linux/capability.h; the position in this tuple is the bit.
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
CAPABILITY_BITS: dict[str, int] = {name: bit for bit, name in enumerate(CAPABILITIES)}

DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

# Hidden behind an empty, read-only mount (or /dev/null for a file): they leak
# host details or let a container poke at hardware.
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip

# Sysctls that live in a namespace the container owns, so setting one cannot
# change the host. Which namespace decides when it is allowed.
IPC_SYSCTLS: frozenset[str] = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})  # fmt: skip
IPC_SYSCTL_PREFIXES: tuple[str, ...] = ("fs.mqueue.",)
NET_SYSCTL_PREFIXES: tuple[str, ...] = ("net.",)

# Docker sets these in every container with its own network namespace, so an
# unprivileged process may bind port 80 and ping; a service's own value wins.
DEFAULT_NET_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("net.ipv4.ip_unprivileged_port_start", "0"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
)

# With the host's own `/` as the root, these would hand the container the
# host's secrets and the engine's state; they are hidden.
HOST_ROOTFS_MASKS: tuple[str, ...] = (
    "/root", "/home", "/etc/shadow", "/etc/gshadow", "/etc/ssh", "/run",
)  # fmt: skip

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_STOP_SIGNAL = "SIGTERM"
DEFAULT_STOP_GRACE_PERIOD = 10.0  # seconds
DEFAULT_SHM_SIZE = 64 * 1024 * 1024


def host_rootfs_masks(rootfs: str, state_root: Path | str) -> tuple[str, ...]:
    """The paths (inside) hidden when a container runs on the host folder `rootfs`.

    The state root, wherever it lies in that tree — at the path a symlink to
    it names and where it really is, since the launcher never mounts over a
    link; and on the host's own `/`, the host's secrets and private folders.
    """
    tree = os.path.realpath(rootfs)
    given = os.path.abspath(state_root)
    hidden = []
    for place in (given, os.path.realpath(given)):
        relative = os.path.relpath(place, tree)
        if relative.split("/")[0] not in (".", ".."):  # inside the tree, not the tree itself
            hidden.append("/" + relative)
    if tree == "/":
        hidden += HOST_ROOTFS_MASKS
    return tuple(dict.fromkeys(hidden))


def capability_name(name: str) -> str:
    """`net_admin`, `NET_ADMIN`, `cap_net_admin` -> `CAP_NET_ADMIN`; `all` -> `ALL`."""
    text = str(name).strip().upper()
    if text == "ALL":
        return text
    if not text.startswith("CAP_"):
        text = "CAP_" + text
    if text not in CAPABILITY_BITS:
        raise StackError(
            f"unknown capability {name!r}", hint="use a name such as NET_ADMIN, or ALL"
        )
    return text


def capability_set(
    cap_add: Iterable[str], cap_drop: Iterable[str], privileged: bool
) -> tuple[str, ...]:
    """The capabilities a container runs with, decided the way Docker decides.

    Privileged gets everything. `cap_add: [ALL]` is everything but what
    `cap_drop` names; `cap_drop: [ALL]` is exactly `cap_add`; otherwise the
    drops come off the default set and the adds go on after — so a name in
    both lists is kept, as in Docker. Sorted by bit number.
    """
    adds = [capability_name(name) for name in cap_add]
    drops = [capability_name(name) for name in cap_drop]
    if privileged:
        chosen: Iterable[str] = CAPABILITIES
    elif "ALL" in adds:
        chosen = [cap for cap in CAPABILITIES if cap not in drops]
    elif "ALL" in drops:
        chosen = [cap for cap in adds if cap != "ALL"]
    else:
        chosen = [cap for cap in DEFAULT_CAPABILITIES if cap not in drops] + adds
    return tuple(sorted(set(chosen), key=CAPABILITY_BITS.__getitem__))


def capability_mask(names: Iterable[str]) -> int:
    """The bit mask the kernel shows as `CapEff` in /proc/<pid>/status."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_BITS[name]
    return mask


def sysctl_namespace(name: str) -> str | None:
    """ "ipc" or "net" for a sysctl a container may set, None for one it may not."""
    if name in IPC_SYSCTLS or name.startswith(IPC_SYSCTL_PREFIXES):
        return "ipc"
    if name.startswith(NET_SYSCTL_PREFIXES):
        return "net"
    return None
