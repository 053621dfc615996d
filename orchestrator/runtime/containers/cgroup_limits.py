"""How a container's `Resources` become cgroup control-file writes, and Docker's refusals.

Kept apart from the groups themselves because none of it touches the kernel:
`limit_writes` only says which files to write, in order, for either layout, so
the translation and Docker's checks (the same limits, in Docker's wording) are
tested without root. `Cgroup.create` makes the writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from orchestrator.runtime.containers.cgroupfs import LayoutKind
from orchestrator.runtime.containers.launchspec import Resources
from orchestrator.spec.errors import StackError

MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses limits below this, and so do we
CFS_PERIOD = 100_000  # microseconds, the kernel's default and Docker's
MIN_SHARES, MAX_SHARES = 2, 262_144

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
