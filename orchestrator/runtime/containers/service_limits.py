"""What a service's container may do and use: privileges, sysctls, rlimits, cgroup limits.

Part of turning a service into a launch spec (`service_spec.py`): capabilities
with `cap_add`/`cap_drop`, `security_opt`, `sysctls`, `ulimits` and the
resource keys with their `deploy.resources` twins, each checked the way Docker
checks it, so a limit Docker refuses is refused here too, naming its key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from orchestrator.runtime.containers import defaults
from orchestrator.runtime.containers.launchspec import Namespaces, Resources, Rlimit
from orchestrator.runtime.containers.service_keys import ServiceKeys
from orchestrator.spec.errors import StackError
from orchestrator.spec.units import parse_bytes

_ULIMITS = frozenset({
    "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
    "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
})  # fmt: skip
_UNCONFINED = frozenset({
    "seccomp=unconfined", "seccomp:unconfined", "apparmor=unconfined", "apparmor:unconfined",
    "label=disable", "label:disable",
})  # fmt: skip
_MIN_MEMORY = 6 * 1024 * 1024  # Docker's floor: below it a container cannot even start
_CPUSET = re.compile(r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")


def capabilities(keys: ServiceKeys, privileged: bool) -> tuple[str, ...]:
    """Docker's default set adjusted by `cap_add`/`cap_drop`; a bad name points at its entry."""
    for key in ("cap_add", "cap_drop"):
        for index, name in enumerate(keys.get(key, [])):
            try:
                defaults.capability_name(name)
            except StackError as error:
                raise keys.error((key, index), error.message, error.hint) from None
    return defaults.capability_set(keys.get("cap_add", []), keys.get("cap_drop", []), privileged)


def no_new_privileges(keys: ServiceKeys) -> bool:
    """`security_opt: [no-new-privileges]` (`:true`, `=false`, ...); other options refused."""
    enabled = False
    for index, option in enumerate(keys.get("security_opt", [])):
        text = str(option)
        if text in _UNCONFINED:
            continue  # asks for less confinement than Docker's default, which we already give
        match = re.fullmatch(r"no-new-privileges(?:[:=](true|false))?", text)
        if match is None:
            raise keys.error(
                ("security_opt", index),
                f"security_opt {text!r} is not supported",
                "use no-new-privileges",
            )
        enabled = match.group(1) != "false"
    return enabled


def rlimits(keys: ServiceKeys) -> tuple[Rlimit, ...]:
    """`ulimits`: one number for both limits, or `{soft, hard}`; -1 is unlimited."""
    limits = []
    for name, value in sorted(keys.get("ulimits", {}).items()):
        where = ("ulimits", name)
        if name not in _ULIMITS:
            raise keys.error(
                where, f"invalid ulimit type {name!r}", "use one of " + ", ".join(sorted(_ULIMITS))
            )
        if isinstance(value, Mapping):
            soft, hard = value.get("soft", 0), value.get("hard", 0)
        else:
            soft = hard = value
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (soft, hard)):
            raise keys.error(where, f"ulimit {name} must be a number or {{soft, hard}}")
        if hard != -1 and (soft == -1 or soft > hard):  # -1 is "unlimited"
            raise keys.error(where, f"ulimit {name}: soft limit {soft} is above hard limit {hard}")
        limits.append(Rlimit(name, soft, hard))
    return tuple(limits)


def sysctls(keys: ServiceKeys, namespaces: Namespaces) -> tuple[tuple[str, str], ...]:
    """Only sysctls of a namespace the container owns, so none can change the host."""
    given = keys.get("sysctls", {})
    if isinstance(given, list):
        given = dict(str(item).partition("=")[::2] for item in given)
    chosen: dict[str, str] = {}
    if namespaces.net != "host":
        chosen.update(defaults.DEFAULT_NET_SYSCTLS)
    for name, value in given.items():
        owner = defaults.sysctl_namespace(name)
        if owner is None:
            raise keys.error(
                ("sysctls", name),
                f"sysctl {name!r} is not allowed",
                "only namespaced ones are: kernel.msg*, kernel.sem, kernel.shm*, "
                "fs.mqueue.*, net.*",
            )
        if getattr(namespaces, owner) == "host":
            raise keys.error(
                ("sysctls", name),
                f"sysctl {name!r} cannot be set with "
                f"{'network_mode' if owner == 'net' else 'ipc'}: host",
                "it would change the host's own setting",
            )
        chosen[name] = str(value)
    return tuple(sorted(chosen.items()))


def resources(keys: ServiceKeys) -> Resources:
    """cgroup limits from the service keys or their `deploy.resources` twins (they agree)."""
    deploy = keys.get("deploy", {}).get("resources") or {}
    limits = deploy.get("limits") or {}
    reservations = deploy.get("reservations") or {}
    memory = byte_size(keys, "mem_limit") or byte_size(
        keys, ("deploy", "resources", "limits", "memory"), limits.get("memory")
    )
    reservation = byte_size(keys, "mem_reservation") or byte_size(
        keys, ("deploy", "resources", "reservations", "memory"), reservations.get("memory")
    )
    swap = byte_size(keys, "memswap_limit", allow_unlimited=True)
    if memory is not None and memory < _MIN_MEMORY:
        raise keys.error("mem_limit", f"memory limit {memory} is below the minimum of 6MB")
    if swap is not None and memory is None:
        raise keys.error("memswap_limit", "memswap_limit needs mem_limit too")
    if swap is not None and memory is not None and swap != -1 and swap < memory:
        raise keys.error(
            "memswap_limit",
            f"memswap_limit {swap} is below mem_limit {memory}",
            "it counts memory plus swap; -1 means unlimited swap",
        )
    if reservation is not None and memory is not None and reservation > memory:
        raise keys.error(
            "mem_reservation", f"mem_reservation {reservation} is above mem_limit {memory}"
        )
    return Resources(
        memory=memory,
        memory_swap=swap,
        memory_reservation=reservation,
        cpus=_cpus(keys, limits),
        cpu_shares=int(keys.get("cpu_shares")) if keys.get("cpu_shares") else None,
        cpuset_cpus=_cpuset(keys),
        pids_limit=_pids_limit(keys, limits),
    )


def _cpus(keys: ServiceKeys, limits: Mapping[str, Any]) -> float | None:
    value = keys.get("cpus") or limits.get("cpus")
    if not value:
        return None
    cpus = float(value)
    available = os.cpu_count() or 1
    if not 0.01 <= cpus <= available:
        raise keys.error(
            "cpus" if keys.get("cpus") else ("deploy", "resources", "limits", "cpus"),
            f"cpus {cpus:g} is out of range",
            f"use 0.01 to {available}, the CPUs this machine has",
        )
    return cpus


def _cpuset(keys: ServiceKeys) -> str:
    cpuset = str(keys.get("cpuset", ""))
    if cpuset and not _CPUSET.match(cpuset):
        raise keys.error("cpuset", f"invalid cpuset {cpuset!r}", "write e.g. 0-2 or 0,1")
    return cpuset


def _pids_limit(keys: ServiceKeys, limits: Mapping[str, Any]) -> int | None:
    """0 and -1 both mean "no limit", as in Docker."""
    pids = keys.get("pids_limit") or limits.get("pids")
    return int(pids) if pids and int(pids) > 0 else None


def byte_size(
    keys: ServiceKeys,
    key: str | tuple[str, ...],
    value: Any = None,
    *,
    allow_unlimited: bool = False,
) -> int | None:
    """A size the normalizer already spelled in bytes ("536870912"); None when unset."""
    if value is None and isinstance(key, str):
        value = keys.get(key)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise keys.error(key, f"invalid size {value!r}", "write a size like 512m") from None
    if allow_unlimited and number == -1:
        return -1
    if number < 0:
        raise keys.error(key, f"invalid size {value!r}", "a size cannot be negative")
    return number or None


LOG_DRIVERS = ("json-file", "local")


def log_rotation(keys: ServiceKeys) -> tuple[int, int]:
    """(max size, files kept) from `logging:`; our log is json-file's format, so that
    driver (and `local`) are honoured with their `max-size` and `max-file` options."""
    logging = keys.get("logging") or {}
    driver = logging.get("driver") or "json-file"
    if driver not in LOG_DRIVERS:
        raise keys.error(("logging", "driver"), f"logging driver {driver!r} is not supported",
                         "use json-file (the default) or local")
    options = logging.get("options") or {}
    size, files = 10 * 1024 * 1024, 3
    if "max-size" in options:
        try:
            size = parse_bytes(str(options["max-size"]))
        except ValueError:
            raise keys.error(
                ("logging", "options", "max-size"),
                f"invalid size {options['max-size']!r}", "write a size like 10m",
            ) from None
    if "max-file" in options:
        try:
            files = int(str(options["max-file"]))
        except ValueError:
            files = 0
        if files < 1:
            raise keys.error(
                ("logging", "options", "max-file"),
                f"invalid max-file {options['max-file']!r}", "use a number from 1",
            )
    if size < 1:
        raise keys.error(("logging", "options", "max-size"), "max-size must be positive")
    return size, files
