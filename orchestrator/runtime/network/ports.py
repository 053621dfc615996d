"""Published ports: from a service's `ports:` to host port bindings, checked before use.

The kernel forwards published ports (DNAT in our nftables table); no process
listens on the host port. So nothing would stop another program from using a
port we publish, or us from publishing one a program already serves: both
are checked here, before a container is created, by reading the kernel's
socket tables. The error names the process holding the port when it can.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.spec.errors import StackError

EPHEMERAL_RANGE = (32768, 60999)  # Docker's default for ports chosen by the engine
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class PublishedPort:
    container_port: int
    protocol: str  # "tcp" | "udp"
    host_port: int  # 0 until an ephemeral port is chosen
    host_ip: str = ""  # "" = every host address
    host_port_last: int = 0  # a host range `8000-8010` to choose from, before choosing

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        where = f"{self.host_ip}:" if self.host_ip else ""
        return f"{where}{self.host_port}->{self.container_port}/{self.protocol}"


def service_ports(service_name: str, ports: Sequence[Mapping[str, Any]]) -> list[PublishedPort]:
    """The normalized model's `ports` (one entry per port, ranges already expanded)."""
    published = []
    for index, entry in enumerate(ports or ()):
        host_ip = str(entry.get("host_ip") or "")
        if host_ip in ("0.0.0.0",):
            host_ip = ""
        if ":" in host_ip:
            raise StackError(
                f"services.{service_name}.ports[{index}]: IPv6 host_ip {host_ip} "
                "is not supported yet"
            )
        text = str(entry.get("published") or "")
        low, _, high = text.partition("-")  # a host range for one container port
        published.append(PublishedPort(
            int(entry["target"]), str(entry.get("protocol") or "tcp"),
            int(low) if low else 0, host_ip, int(high) if high else 0,
        ))
    return published


def choose_host_ports(
    service_name: str, wanted: Iterable[PublishedPort], taken_by_us: Mapping[tuple, str]
) -> list[PublishedPort]:
    """Fixed ports checked, ranges and ephemeral ports picked; a conflict is one error.

    `taken_by_us` maps (protocol, host_ip, host_port) to the container holding it.
    """
    wanted = list(wanted)
    host = listening_sockets() if wanted else {}
    claimed: dict[tuple[str, str, int], str] = dict(taken_by_us)
    chosen = []
    for port in wanted:
        if port.host_port and not port.host_port_last:
            _check_free(service_name, port, claimed, host)
            final = port
        else:
            if port.host_port_last:
                candidates = list(range(port.host_port, port.host_port_last + 1))
            else:
                low, high = EPHEMERAL_RANGE
                candidates = random.sample(range(low, high + 1), 200)
            final = _first_free(service_name, port, candidates, claimed, host)
        claimed[(final.protocol, final.host_ip, final.host_port)] = "this container"
        chosen.append(final)
    return chosen


def _first_free(
    service_name: str, port: PublishedPort, candidates: list[int],
    claimed: Mapping[tuple, str], host: Mapping[tuple, int],
) -> PublishedPort:
    for number in candidates:
        candidate = PublishedPort(port.container_port, port.protocol, number, port.host_ip)
        if _holder(candidate, claimed, host) is None:
            return candidate
    raise StackError(
        f"services.{service_name}: no free host port in {candidates[0]}-{candidates[-1]} "
        f"for {port.container_port}/{port.protocol}"
    )


def _check_free(
    service_name: str, port: PublishedPort, claimed: Mapping[tuple, str],
    host: Mapping[tuple, int],
) -> None:
    holder = _holder(port, claimed, host)
    if holder is not None:
        raise StackError(
            f"services.{service_name}: cannot publish {port.label()}: "
            f"{port.protocol} port {port.host_port} is already in use{holder}",
            hint="free the port or publish another one",
        )


def _holder(
    port: PublishedPort, claimed: Mapping[tuple, str], host: Mapping[tuple, int]
) -> str | None:
    """Who holds the port (" by …" text), or None when it is free."""
    for (protocol, host_ip, number), name in claimed.items():
        if protocol == port.protocol and number == port.host_port and _overlap(host_ip, port):
            return f" by container {name}"
    for (protocol, address, number), inode in host.items():
        if protocol == port.protocol and number == port.host_port and _overlap(address, port):
            owner = process_of_socket(inode)
            return f" by {owner}" if owner else " on the host"
    return None


def _overlap(address: str, port: PublishedPort) -> bool:
    wildcard = ("", "0.0.0.0")
    return address in wildcard or port.host_ip in wildcard or address == port.host_ip


def listening_sockets() -> dict[tuple[str, str, int], int]:
    """IPv4 and IPv6 TCP listeners and bound UDP sockets: (protocol, address, port) -> inode."""
    found: dict[tuple[str, str, int], int] = {}
    for protocol in ("tcp", "udp"):
        for family in ("", "6"):
            try:
                with open(f"/proc/net/{protocol}{family}") as table:
                    lines = table.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if protocol == "tcp" and fields[3] != _TCP_LISTEN:
                    continue
                address_hex, port_hex = fields[1].split(":")
                address = _address(address_hex)
                found[(protocol, address, int(port_hex, 16))] = int(fields[9])
    return found


def _address(text: str) -> str:
    if len(text) == 8:
        return ".".join(str(b) for b in reversed(bytes.fromhex(text)))
    return "" if set(text) == {"0"} else "::"  # v6 wildcard, or a v6 address we treat as any


def process_of_socket(inode: int) -> str:
    """`name (pid N)` of a process holding the socket, or "" when none can be found.

    Processes open and close descriptors while they are looked through: one that
    vanished between listing and reading is skipped alone, not with the rest of
    its process (a busy holder was otherwise missed now and then).
    """
    target = f"socket:[{inode}]"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # exited meanwhile
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
                    continue
            except OSError:
                continue  # closed meanwhile
            try:
                with open(f"/proc/{pid}/comm") as comm:
                    return f"{comm.read().strip()} (pid {pid})"
            except OSError:
                return f"pid {pid}"
    return ""
