"""IPv4 address management for bridge networks, decided the way Docker decides it, with no I/O.

Three decisions live here: which subnet a new network gets (`allocate_subnet`,
carved from address pools), whether the `ipam.config` a user wrote is usable
(`choose_addressing`), and which address each container gets on a network
(`AddressBook`). The caller keeps the state (the network records and their
endpoints) and rebuilds these objects from it; the host's routes, which a new
subnet must not shadow, come from `read_host_routes`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any, Literal, NamedTuple

from orchestrator.spec.errors import StackError

ADDRESS_POOLS_VARIABLE = "STACK_ADDRESS_POOLS"
IPV6_UNSUPPORTED = "IPv6 networks are not supported yet"
_POOLS_EXAMPLE = "10.99.0.0/16:24,172.30.0.0/16:24"
# A subnet needs room for the gateway and at least one container.
_SMALLEST_SUBNET = 30
_RTF_UP = 0x0001


class AddressPool(NamedTuple):
    """A range that subnets are carved from: `base` split into subnets of prefix length `size`."""

    base: IPv4Network
    size: int

    def __str__(self) -> str:
        return f"{self.base}:{self.size}"


# Docker's defaults for local bridge networks, 172.18-31 as one /16 each, then
# 192.168.0.0/16 in /20s. 172.17.0.0/16 is docker0's: its host route would keep
# us off it while Docker runs, but Docker may start after our networks exist.
DEFAULT_ADDRESS_POOLS: tuple[AddressPool, ...] = (
    *(AddressPool(IPv4Network(f"172.{octet}.0.0/16"), 16) for octet in range(18, 32)),
    AddressPool(IPv4Network("192.168.0.0/16"), 20),
)


class HostRoute(NamedTuple):
    """A destination the host already routes (other than its default route), and through what."""

    network: IPv4Network
    device: str

    def __str__(self) -> str:
        return f"{self.network} dev {self.device}"


# ---- address pools ---------------------------------------------------------------------------


def configured_address_pools(environ: Mapping[str, str]) -> tuple[AddressPool, ...]:
    """The pools named by STACK_ADDRESS_POOLS in `environ`, or Docker's defaults when unset."""
    text = environ.get(ADDRESS_POOLS_VARIABLE, "")
    return parse_address_pools(text) if text.strip() else DEFAULT_ADDRESS_POOLS


def parse_address_pools(text: str) -> tuple[AddressPool, ...]:
    """`"10.99.0.0/16:24,172.30.0.0/16:24"` -> the pools, in the order subnets are taken."""
    pools = tuple(_parse_pool(entry.strip()) for entry in text.split(",") if entry.strip())
    if not pools:
        raise StackError(f"{ADDRESS_POOLS_VARIABLE} names no address pool",
                         hint=f"write BASE/PREFIX:SIZE entries, such as {_POOLS_EXAMPLE}")
    return pools


def _parse_pool(entry: str) -> AddressPool:
    where = f'{ADDRESS_POOLS_VARIABLE} entry "{entry}"'
    hint = f"write BASE/PREFIX:SIZE entries, such as {_POOLS_EXAMPLE}"
    base_text, colon, size_text = entry.rpartition(":")
    if not colon:
        raise StackError(f"{where}: the size of each subnet is missing", hint=hint)
    base = _ipv4_network(base_text.strip(), where, hint)
    size_text = size_text.strip()
    if not size_text.isdecimal():
        raise StackError(f'{where}: subnet size "{size_text}" is not a prefix length', hint=hint)
    size = int(size_text)
    if not base.prefixlen <= size <= _SMALLEST_SUBNET:
        raise StackError(
            f"{where}: subnet size /{size} must be between /{base.prefixlen} (the whole base) "
            f"and /{_SMALLEST_SUBNET}",
            hint=hint,
        )
    return AddressPool(base, size)


# ---- subnets -----------------------------------------------------------------------------------


def allocate_subnet(
    pools: Sequence[AddressPool],
    in_use: Iterable[IPv4Network],
    host_routes: Iterable[HostRoute],
    skip: Iterable[IPv4Network] = (),
) -> IPv4Network:
    """The first subnet of `pools`, in order, that overlaps none of our networks' subnets
    (`in_use`), no route of the host and nothing in `skip`.

    Sharing a range with a host route would shadow it (a VPN, the LAN) for the
    whole host, so a routed range counts as taken exactly like our own.
    """
    taken = _merged_spans([*in_use, *(route.network for route in host_routes), *skip])
    for pool in pools:
        subnet = _first_free_subnet(pool, taken)
        if subnet is not None:
            return subnet
    raise StackError(
        f"no free address pool: all of {', '.join(map(str, pools))} are in use",
        hint=f"set {ADDRESS_POOLS_VARIABLE} to other or larger pools, such as {_POOLS_EXAMPLE}",
    )


def _merged_spans(networks: Iterable[IPv4Network]) -> list[tuple[int, int]]:
    """The networks as sorted, disjoint (first, last) address spans."""
    spans: list[tuple[int, int]] = []
    for first, last in sorted((int(n.network_address), int(n.broadcast_address))
                              for n in networks):
        if spans and first <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], last))
        else:
            spans.append((first, last))
    return spans


def _first_free_subnet(pool: AddressPool, taken: list[tuple[int, int]]) -> IPv4Network | None:
    # Jump past each taken span instead of testing every candidate: a 10.0.0.0/8
    # pool of /30s has four million candidates, and there are few taken spans.
    step = 1 << (32 - pool.size)
    candidate = int(pool.base.network_address)
    end = int(pool.base.broadcast_address)
    for first, last in taken:
        if last < candidate:
            continue
        if first >= candidate + step:
            break
        candidate = (last // step + 1) * step  # the base is aligned to step, so this is too
        if candidate > end:
            return None
    return IPv4Network((candidate, pool.size))


def default_gateway(subnet: IPv4Network) -> IPv4Address:
    """Docker's default: the first host address of the subnet."""
    return subnet.network_address + 1


@dataclass(frozen=True)
class Addressing:
    """A network's IPv4 layout, as stored in its record and shown by `network inspect`."""

    subnet: IPv4Network
    gateway: IPv4Address
    ip_range: IPv4Network | None = None  # where containers' automatic addresses come from
    aux_addresses: Mapping[str, IPv4Address] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"subnet": str(self.subnet), "gateway": str(self.gateway)}
        if self.ip_range is not None:
            record["ip_range"] = str(self.ip_range)
        if self.aux_addresses:
            record["aux_addresses"] = {k: str(v) for k, v in self.aux_addresses.items()}
        return record

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Addressing:
        """Read back `to_json`'s keys from a network record (other keys are ignored)."""
        ip_range = record.get("ip_range")
        aux = record.get("aux_addresses") or {}
        return cls(
            subnet=IPv4Network(record["subnet"]),
            gateway=IPv4Address(record["gateway"]),
            ip_range=IPv4Network(ip_range) if ip_range else None,
            aux_addresses={name: IPv4Address(address) for name, address in aux.items()},
        )


def choose_addressing(
    network: str,
    ipam_config: Sequence[Mapping[str, Any]] | None,
    *,
    pools: Sequence[AddressPool],
    others: Mapping[str, IPv4Network],
    host_routes: Sequence[HostRoute],
) -> Addressing:
    """The layout of a new network: its `ipam.config` checked, or a subnet from `pools`.

    `others` maps the names of our other networks to their subnets (an entry for
    `network` itself is ignored, so an existing network can be checked again).
    """
    others = {name: subnet for name, subnet in others.items() if name != network}
    entry = _the_ipv4_entry(network, ipam_config or ())
    if entry is None:
        subnet = allocate_subnet(pools, others.values(), host_routes)
        return Addressing(subnet, default_gateway(subnet))
    index, config = entry
    key = f"network {network}: ipam.config[{index}]"
    subnet = _ipv4_network(config["subnet"], f"{key}.subnet")
    if subnet.prefixlen > _SMALLEST_SUBNET:
        raise StackError(f"{key}.subnet: {subnet} is too small for a gateway and a container",
                         hint=f"use a /{_SMALLEST_SUBNET} or larger")
    ip_range = None
    if config.get("ip_range"):
        ip_range = _ipv4_network(config["ip_range"], f"{key}.ip_range")
        if not ip_range.subnet_of(subnet):
            raise StackError(f"{key}.ip_range: {ip_range} is not inside subnet {subnet}")
    gateway = default_gateway(subnet)
    if config.get("gateway"):
        gateway = _host_address(config["gateway"], subnet, f"{key}.gateway")
    aux: dict[str, IPv4Address] = {}
    for name, text in (config.get("aux_addresses") or {}).items():
        address = _host_address(text, subnet, f"{key}.aux_addresses.{name}")
        holder = "the gateway" if address == gateway else next(
            (f'aux address "{n}"' for n, a in aux.items() if a == address), None)
        if holder is not None:
            raise StackError(f"{key}.aux_addresses.{name}: {address} is already {holder}")
        aux[name] = address
    _check_overlaps(network, subnet, others, host_routes)
    return Addressing(subnet, gateway, ip_range, aux)


def _the_ipv4_entry(
    network: str, ipam_config: Sequence[Mapping[str, Any]]
) -> tuple[int, Mapping[str, Any]] | None:
    """The one `ipam.config` entry that describes the IPv4 subnet, with its index, if any."""
    found: list[tuple[int, Mapping[str, Any]]] = []
    for index, config in enumerate(ipam_config):
        key = f"network {network}: ipam.config[{index}]"
        values = {k: v for k, v in config.items() if not k.startswith("x-") and v}
        if not values:
            continue
        if ":" in str(values.get("subnet", "")):
            raise StackError(f"{key}.subnet: {IPV6_UNSUPPORTED}",
                             hint="remove the IPv6 entry and enable_ipv6")
        if "subnet" not in values:
            raise StackError(f"{key}: {', '.join(sorted(values))} given without a subnet",
                             hint="add the subnet they belong to")
        found.append((index, config))
    if len(found) > 1:
        raise StackError(f"network {network}: ipam.config has {len(found)} IPv4 subnets; "
                         "only one per network is supported", hint="keep one subnet entry")
    return found[0] if found else None


def _check_overlaps(
    network: str,
    subnet: IPv4Network,
    others: Mapping[str, IPv4Network],
    host_routes: Sequence[HostRoute],
) -> None:
    for name in sorted(others):
        if subnet.overlaps(others[name]):
            raise StackError(
                f"network {network}: subnet {subnet} overlaps subnet {others[name]} "
                f"of network {name}",
                hint=f"choose another subnet, or remove network {name}",
            )
    for route in host_routes:
        if subnet.overlaps(route.network):
            raise StackError(
                f"network {network}: subnet {subnet} overlaps the host route {route}",
                hint="choose a subnet the host does not route already",
            )


# ---- container addresses -----------------------------------------------------------------------


class AddressBook:
    """The container addresses of one network: which are held, by whom, and which comes next.

    `allocate` gives the lowest free address (of `ip_range` when set). Docker
    instead carries on after the last address it gave out; lowest-free was
    chosen because the book is rebuilt from the held addresses alone, so the
    same state always gives the same next address, also after an engine restart.
    A static address may lie anywhere in the subnet, outside `ip_range` too,
    as in Docker. Neither ever takes the subnet's network or broadcast address,
    the gateway or an aux address.
    """

    def __init__(
        self,
        network: str,
        addressing: Addressing,
        used: Mapping[IPv4Address | str, str] | Iterable[IPv4Address | str] = (),
    ) -> None:
        """`used`: the addresses containers hold, or a mapping of them to their holders' names.

        The state is taken as it is (an odd address is still never handed out
        twice), so a restarted engine never refuses to read what it wrote.
        """
        self.network = network
        self.addressing = addressing
        subnet = addressing.subnet
        self._reserved: dict[int, str] = {
            int(subnet.network_address): f"the network address of {subnet}",
            int(subnet.broadcast_address): f"the broadcast address of {subnet}",
            int(addressing.gateway): "the gateway",
        }
        for name, address in addressing.aux_addresses.items():
            self._reserved.setdefault(int(address), f'aux address "{name}"')
        holders = used if isinstance(used, Mapping) else dict.fromkeys(used, "")
        self._held: dict[int, str] = {int(IPv4Address(a)): h for a, h in holders.items()}
        span = addressing.ip_range or subnet
        self._first = int(span.network_address)
        self._last = int(span.broadcast_address)

    @property
    def used(self) -> dict[IPv4Address, str]:
        """The held addresses, lowest first, with their holders ("" when unknown)."""
        return {IPv4Address(a): self._held[a] for a in sorted(self._held)}

    def __contains__(self, address: object) -> bool:
        try:
            return int(IPv4Address(address)) in self._held  # type: ignore[arg-type]
        except ValueError:
            return False

    def allocate(self, holder: str = "") -> IPv4Address:
        """Hold and return the lowest free address."""
        # Every address passed over is held or reserved, so this loop is as short
        # as the book is full, however large the subnet.
        candidate = self._first
        while candidate <= self._last:
            if candidate not in self._held and candidate not in self._reserved:
                self._held[candidate] = holder
                return IPv4Address(candidate)
            candidate += 1
        span = self.addressing.ip_range
        where = f"ip_range {span}" if span else f"subnet {self.addressing.subnet}"
        raise StackError(f"no free address on network {self.network}: every address of "
                         f"{where} is in use", hint="use a larger subnet or ip_range")

    def reserve(self, address: IPv4Address | str, holder: str = "") -> IPv4Address:
        """Hold a static address (`ipv4_address`); holding it again for the same holder is fine."""
        where = f"{holder}: " if holder else ""
        hint = "choose another ipv4_address, or leave it out to get a free one"
        wanted = _ipv4_address(address, f"{where}ipv4_address")
        subnet = self.addressing.subnet
        if wanted not in subnet:
            raise StackError(f"{where}address {wanted} is outside subnet {subnet} of network "
                             f"{self.network}", hint=hint)
        number = int(wanted)
        if number in self._reserved:
            raise StackError(f"{where}address {wanted} is reserved on network {self.network}: "
                             f"it is {self._reserved[number]}", hint=hint)
        if number in self._held and not (holder and self._held[number] == holder):
            other = self._held[number]
            raise StackError(f"{where}address {wanted} is already in use on network "
                             f"{self.network}" + (f" by {other}" if other else ""), hint=hint)
        self._held[number] = holder
        return wanted

    def release(self, address: IPv4Address | str) -> None:
        """Give an address back; releasing one that is not held does nothing."""
        self._held.pop(int(IPv4Address(address)), None)


# ---- host routes -------------------------------------------------------------------------------


def read_host_routes(path: str = "/proc/net/route") -> list[HostRoute]:
    """The host's IPv4 routes of the main table, from procfs (a small read that never blocks)."""
    with open(path, encoding="ascii", errors="replace") as table:
        return parse_proc_net_route(table.read())


def parse_proc_net_route(
    text: str, byteorder: Literal["little", "big"] = sys.byteorder
) -> list[HostRoute]:
    """The routes listed in a /proc/net/route text, without the default route.

    The kernel prints each destination and mask as the 32-bit value it keeps
    in network byte order, read as a native integer: `0002A8C0` on a
    little-endian host is 192.168.2.0. Routes that are down and lines that do
    not parse are left out.
    """
    routes: list[HostRoute] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[0] == "Iface":
            continue
        try:
            destination = IPv4Address(int(fields[1], 16).to_bytes(4, byteorder))
            mask = IPv4Address(int(fields[7], 16).to_bytes(4, byteorder))
            flags = int(fields[3], 16)
            network = IPv4Network(f"{destination}/{mask}")
        except (ValueError, OverflowError):
            continue
        if flags & _RTF_UP and network.prefixlen > 0:
            routes.append(HostRoute(network, fields[0]))
    return routes


# ---- parsing user text --------------------------------------------------------------------------


def _ipv4_network(text: Any, where: str, hint: str | None = None) -> IPv4Network:
    """`text` as an IPv4 network written with its prefix length, else a StackError at `where`."""
    if not isinstance(text, str) or "/" not in text:
        raise StackError(f'{where}: "{text}" is not a subnet in CIDR form',
                         hint=hint or "write it like 172.28.0.0/16")
    try:
        network = ip_network(text)
    except ValueError:
        try:
            loose = ip_network(text, strict=False)
        except ValueError:
            raise StackError(f'{where}: invalid subnet "{text}"',
                             hint=hint or "write it like 172.28.0.0/16") from None
        raise StackError(f"{where}: invalid subnet {text}: it should be {loose}",
                         hint=hint) from None
    if not isinstance(network, IPv4Network):
        raise StackError(f"{where}: {IPV6_UNSUPPORTED}", hint=hint)
    return network


def _ipv4_address(text: Any, where: str) -> IPv4Address:
    if isinstance(text, IPv4Address):
        return text
    try:
        address = ip_address(str(text))
    except ValueError:
        raise StackError(f'{where}: "{text}" is not an IPv4 address') from None
    if not isinstance(address, IPv4Address):
        raise StackError(f"{where}: {IPV6_UNSUPPORTED}")
    return address


def _host_address(text: Any, subnet: IPv4Network, where: str) -> IPv4Address:
    """An address a host can hold in `subnet`: inside it, not its network or broadcast address."""
    address = _ipv4_address(text, where)
    if address not in subnet:
        raise StackError(f"{where}: {address} is outside subnet {subnet}")
    if address in (subnet.network_address, subnet.broadcast_address):
        which = "network" if address == subnet.network_address else "broadcast"
        raise StackError(f"{where}: {address} is the {which} address of {subnet}")
    return address
