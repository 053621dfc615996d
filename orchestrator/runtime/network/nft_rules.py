"""Networks and published ports -> the text of one state root's nftables table.

Pure: no kernel, no subprocess. Each state root has a table of its own,
`table ip stack_<owner id>` (`owner.py`), holding only its networks and ports,
so engines of different roots on one host never rewrite each other's rules.
`nftables.apply_ruleset` loads the text in one transaction that deletes and
redefines that table, so the ruleset is always rebuilt whole from state (the
same state renders the same text, byte for byte: networks and ports are sorted).

What the table does, the way Docker's bridge driver behaves, built our own way:

- postrouting: masquerade what leaves a non-internal network's subnet for
  anywhere outside its bridge; masquerade hairpin traffic (a container reaching
  a published port of its own network through a host address, so the reply
  comes back through the host and is un-NATed); masquerade DNATed traffic from
  127.0.0.1 (the container could not answer a loopback source).
- forward: within one bridge everything passes (with `br_netfilter` loaded,
  frames bridged between two containers of one network are seen here, with the
  bridge as both input and output); replies and published-port traffic may
  enter a bridge; anything else between two of our bridges is dropped
  (isolation); a non-internal network may go out; nothing else comes in. An
  internal network's bridge talks only to itself. Between the bridges of two
  state roots, the receiving root's table drops ("nothing else reaches a
  container"), so isolation holds across roots too.
- input: an internal network reaches nothing on the host but the DNS server on
  its gateway address (port 53); replies to connections the host opened pass.
- prerouting and output: published ports. For every local destination address
  (`fib daddr type local`, so also 127.0.0.1 and the gateways) a host port is
  DNATed to `container_address:container_port`; a port with a specific
  `host_ip` matches that address only. prerouting serves other hosts and other
  containers, output serves the host's own processes.

Requirement on the caller: a port reached on 127.0.0.1 is DNATed in output and
then leaves through a bridge with a loopback source, which the kernel drops as
martian unless `net.ipv4.conf.<bridge>.route_localnet=1` is set on every bridge
(and `net.ipv4.ip_forward=1` for anything to be forwarded at all). And with
`br_netfilter` loaded, a container reaching its own published port has its
frame DNATed on the bridge and sent back out of the port it came in by, which
the bridge refuses unless that port has `hairpin on`: set it on every veth.

Priorities: our base chains sit 5 below the standard ones (dstnat - 5, srcnat -
5, filter - 5), so on a host where Docker's iptables-nft tables (`ip nat`, `ip
filter`) also exist, ours run first at each hook, in a fixed order rather than
in registration order. A NAT hook stops at the first chain that binds a
mapping, so our DNAT for our ports is decided before Docker's chains see the
packet. A filter verdict is different: an accept here only ends *our* chain,
and a drop in any table is final, so Docker's FORWARD policy DROP still kills
our traffic; `nftables.ensure_forward_accepts` deals with that.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.spec.errors import StackError

LEGACY_TABLE = "stack"  # the one table every root shared before tables were per root
FAMILY = "ip"
DNS_PORT = 53
PROTOCOLS = ("tcp", "udp", "sctp")

# Interface names go into the ruleset between quotes: accept only the plain
# characters our own names use (and a user's `com.docker.network.bridge.name`
# normally does), within the kernel's 15-byte limit.
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_COMMENT_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/ >+,=@-]")
_COMMENT_MAX = 128  # nft refuses longer comments


def render_ruleset(
    networks: Iterable[Mapping[str, Any]], ports: Iterable[Mapping[str, Any]], *, table: str
) -> str:
    """The definition of `table ip <table>` for these networks and published ports.

    A network is read for `name`, `bridge`, `subnet`, `gateway`, `internal`; a
    published port for `network` (a network's name), `container_address`,
    `host_ip` ("" or "0.0.0.0" for every host address), `host_port`,
    `container_port`, `protocol` and, for the rule's comment, `container_name`
    (else `container_id`). Ports on an internal network are not published (as
    with Docker), and IPv6 `host_ip`s are left to an `ip6` table (this one is
    IPv4 only). A bridge name nft cannot take raises StackError; a port naming
    an unknown network is an engine bug and raises ValueError.
    """
    nets = sorted((_Network.of(n) for n in networks), key=lambda n: n.bridge)
    by_name = {n.name: n for n in nets}
    published = sorted(
        (p for p in (_Port.of(raw, by_name) for raw in ports) if p is not None),
        key=lambda p: (p.host_ip == "", p.host_ip, p.host_port, p.protocol),
    )
    parts = [
        f"table {FAMILY} {table} {{",
        _bridge_set(nets),
        _chain("published_ports", None, [p.dnat_rule() for p in published]),
        _chain(
            "prerouting",
            "type nat hook prerouting priority dstnat - 5; policy accept;",
            ['fib daddr type local jump published_ports comment "published ports"'],
        ),
        # `dstnat` is not a name nft 1.0 accepts for the output hook: -100 - 5.
        _chain(
            "output",
            "type nat hook output priority -105; policy accept;",
            ['fib daddr type local jump published_ports comment "published ports, from the host"'],
        ),
        _chain(
            "postrouting",
            "type nat hook postrouting priority srcnat - 5; policy accept;",
            _postrouting_rules(nets),
        ),
        _chain(
            "forward",
            "type filter hook forward priority filter - 5; policy accept;",
            _forward_rules(nets),
        ),
        _chain(
            "input",
            "type filter hook input priority filter - 5; policy accept;",
            _input_rules(nets),
        ),
    ]
    return "\n".join(parts) + "\n}\n"


class _Network:
    __slots__ = ("name", "bridge", "subnet", "gateway", "internal")

    def __init__(
        self, name: str, bridge: str, subnet: str, gateway: str | None, internal: bool
    ) -> None:
        self.name = name
        self.bridge = bridge
        self.subnet = subnet
        self.gateway = gateway
        self.internal = internal

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> _Network:
        name = str(raw["name"])
        bridge = str(raw["bridge"])
        if not _IFNAME.fullmatch(bridge):
            raise StackError(
                f"bridge name {bridge!r} cannot be used",
                location=f"network {name}",
                hint="use at most 15 letters, digits, '_', '.' or '-'",
            )
        subnet = str(ipaddress.IPv4Network(raw["subnet"], strict=False))
        gateway = str(ipaddress.IPv4Address(raw["gateway"])) if raw.get("gateway") else None
        return cls(name, bridge, subnet, gateway, bool(raw.get("internal")))

    def comment(self, what: str) -> str:
        kind = "internal network" if self.internal else "network"
        return _comment(f"{kind} {self.name}: {what}")


class _Port:
    __slots__ = ("host_ip", "host_port", "protocol", "address", "container_port", "owner")

    def __init__(
        self,
        host_ip: str,
        host_port: int,
        protocol: str,
        address: str,
        container_port: int,
        owner: str,
    ) -> None:
        self.host_ip = host_ip
        self.host_port = host_port
        self.protocol = protocol
        self.address = address
        self.container_port = container_port
        self.owner = owner

    @classmethod
    def of(cls, raw: Mapping[str, Any], networks: Mapping[str, _Network]) -> _Port | None:
        network = networks.get(raw["network"])
        if network is None:
            raise ValueError(f"published port names unknown network {raw['network']!r}")
        host_ip = str(raw.get("host_ip") or "")
        if network.internal or ":" in host_ip:
            return None
        if host_ip == "0.0.0.0":
            host_ip = ""
        if host_ip:
            host_ip = str(ipaddress.IPv4Address(host_ip))
        protocol = str(raw.get("protocol") or "tcp").lower()
        if protocol not in PROTOCOLS:
            raise ValueError(f"published port has protocol {protocol!r}")
        owner = str(raw.get("container_name") or str(raw["container_id"])[:12])
        return cls(
            host_ip,
            _port_number(raw["host_port"]),
            protocol,
            str(ipaddress.IPv4Address(raw["container_address"])),
            _port_number(raw["container_port"]),
            owner,
        )

    def dnat_rule(self) -> str:
        match = f"ip daddr {self.host_ip} " if self.host_ip else ""
        shown = self.host_ip or "0.0.0.0"
        note = _comment(
            f"{self.owner} {self.protocol} {shown}:{self.host_port} -> {self.container_port}"
        )
        return (
            f"{match}{self.protocol} dport {self.host_port} "
            f"dnat to {self.address}:{self.container_port} comment {note}"
        )


def _port_number(value: Any) -> int:
    number = int(value)
    if not 0 < number < 65536:
        raise ValueError(f"port {value!r} is out of range")
    return number


def _postrouting_rules(nets: list[_Network]) -> list[str]:
    rules = []
    for net in nets:
        if net.internal:
            continue
        rules.append(
            f'ip saddr {net.subnet} oifname != "{net.bridge}" masquerade '
            f"comment {net.comment('egress')}"
        )
        # The reply of a container that a neighbour reached through a host
        # address must go back through the host to be un-DNATed, not straight
        # across the bridge: make it come from the gateway.
        rules.append(
            f'oifname "{net.bridge}" ip saddr {net.subnet} ct status dnat masquerade '
            f"comment {net.comment('hairpin to a published port')}"
        )
    rules.append(
        "oifname @bridges ip saddr 127.0.0.0/8 ct status dnat masquerade "
        'comment "published ports reached on 127.0.0.1"'
    )
    return rules


def _forward_rules(nets: list[_Network]) -> list[str]:
    rules = []
    # Internal networks first, so no later accept can let anything through.
    for net in nets:
        if net.internal:
            rules += [
                f'iifname "{net.bridge}" oifname "{net.bridge}" accept '
                f"comment {net.comment('within the network')}",
                f'iifname "{net.bridge}" drop comment {net.comment("no way out")}',
                f'oifname "{net.bridge}" drop comment {net.comment("no way in")}',
            ]
    for net in nets:
        if not net.internal:
            rules.append(
                f'iifname "{net.bridge}" oifname "{net.bridge}" accept '
                f"comment {net.comment('within the network')}"
            )
    # The order below is the policy: replies and published ports may enter a
    # bridge from anywhere, including another of our networks (a published
    # port is public); other traffic between two bridges is isolation's to drop.
    rules += [
        'oifname @bridges ct state established,related accept comment "replies"',
        'oifname @bridges ct status dnat accept comment "published ports"',
        'iifname @bridges oifname @bridges drop comment "isolation between networks"',
        'iifname @bridges accept comment "egress"',
        'oifname @bridges drop comment "nothing else reaches a container"',
    ]
    return rules


def _input_rules(nets: list[_Network]) -> list[str]:
    rules = []
    for net in nets:
        if not net.internal:
            continue
        bridge = f'iifname "{net.bridge}"'
        rules.append(
            f"{bridge} ct state established,related accept "
            f"comment {net.comment('replies to the host')}"
        )
        if net.gateway:
            for proto in ("udp", "tcp"):
                rules.append(
                    f"{bridge} ip daddr {net.gateway} {proto} dport {DNS_PORT} accept "
                    f"comment {net.comment('DNS')}"
                )
        rules.append(f"{bridge} drop comment {net.comment('no listener outside the network')}")
    return rules


def _bridge_set(nets: list[_Network]) -> str:
    lines = ["\tset bridges {", "\t\ttype ifname", '\t\tcomment "bridges of our networks"']
    if nets:
        names = ", ".join(f'"{n.bridge}"' for n in nets)
        lines.append(f"\t\telements = {{ {names} }}")
    lines.append("\t}")
    return "\n".join(lines)


def _chain(name: str, base: str | None, rules: list[str]) -> str:
    lines = [f"\tchain {name} {{"]
    if base:
        lines.append(f"\t\t{base}")
    lines += [f"\t\t{rule}" for rule in rules]
    lines.append("\t}")
    return "\n".join(lines)


def _comment(text: str) -> str:
    """A quoted nft comment: no quotes or odd characters inside, at most 128 bytes."""
    return '"' + _COMMENT_UNSAFE.sub("_", text)[:_COMMENT_MAX] + '"'
