"""Service-name DNS for containers, decided without any I/O: query bytes in, a decision out.

`DnsAnswerer` holds the endpoints (a container's attachment to one network)
and turns one DNS message from one client address into a `Decision`:

  Answer(wire)     a response to send back as-is
  Forward(query)   not one of our names: ask the upstream resolvers, relay their answer
  Drop(reason)     nothing to send (the message is not a query we can even reply to)

What a container can resolve, as Docker's embedded DNS does on user networks:
on each network, the compose service name (every replica's address, the order
rotated on each answer), the container name, its short id, its hostname and its
aliases, also written `<name>.<network>`; a reverse (PTR) lookup of a container
address gives `<container name>.<network>`, Docker's form. A client only sees
the networks its own container is attached to, found from the source address of
the query; an address we do not know is refused, so the resolver cannot serve
or forward for hosts outside our networks.

Behaviour at the edges, chosen so clients do not cache a wrong negative answer:
a known name asked for another type (AAAA, MX, ...) gets NOERROR with no
records (NODATA), never NXDOMAIN; unknown names and other classes are forwarded.
A message with a readable header but an unreadable body gets FORMERR; one too
short for a header, or that is itself a response, is dropped (answering a
response could start a loop between two servers).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from dnslib import EDNS0, PTR, QTYPE, RCODE, RR, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from orchestrator.spec.errors import StackError

TTL = 600  # seconds, Docker's value for its embedded DNS answers
UDP_LIMIT = 512  # RFC 1035: the largest UDP answer a client without EDNS accepts
TCP_LIMIT = 65535  # the 2-byte length prefix
EDNS_PAYLOAD = 4096  # what we announce in our OPT record: we read UDP messages of any size
DNS_PORT = 53
_HEADER_SIZE = 12
_CLASS_IN = 1
_OPCODE_QUERY = 0
_REVERSE_SUFFIX = ("in-addr", "arpa")

Nameserver = tuple[str, int]
"""An upstream resolver: IP address and port."""


class NamedEndpoint(Protocol):
    """What DNS needs of an endpoint (a container attached to one network)."""

    @property
    def network(self) -> str: ...
    @property
    def container_id(self) -> str: ...
    @property
    def container_name(self) -> str: ...
    @property
    def service(self) -> str: ...  # "" for a container outside any compose service
    @property
    def address(self) -> str: ...
    @property
    def aliases(self) -> Sequence[str]: ...
    @property
    def hostname(self) -> str: ...


@dataclass(frozen=True)
class Answer:
    wire: bytes


@dataclass(frozen=True)
class Forward:
    query: bytes  # the client's message, relayed unchanged (id, flags and EDNS kept)
    nameservers: tuple[Nameserver, ...]  # the client's own `dns:` servers; empty: the host's

    def servfail(self) -> bytes:
        """The answer to send when no upstream answered."""
        request = DNSRecord.parse(self.query)
        return _reply(request, RCODE.SERVFAIL).pack()


@dataclass(frozen=True)
class Drop:
    reason: str


Decision = Answer | Forward | Drop


def parse_nameserver(text: str) -> Nameserver:
    """`1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:5353` -> (address, port)."""
    text = text.strip()
    host, port = text, DNS_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), text)
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        port = _port(rest, text)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise StackError(f"DNS server {text!r} is not an IP address",
                         hint="write an address such as 192.0.2.53 or [2001:db8::53]:53") from None


def _port(text: str, whole: str) -> int:
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    raise StackError(f"DNS server {whole!r} has an invalid port", hint="ports are 1-65535")


class DnsAnswerer:
    """The names containers can resolve, and the answers to their queries."""

    def __init__(self) -> None:
        self._endpoints: dict[tuple[str, str], NamedEndpoint] = {}  # (container id, network)
        self._nameservers: dict[str, tuple[Nameserver, ...]] = {}  # container id -> `dns:`
        self._links: dict[str, dict[str, str]] = {}  # container id -> link alias -> name
        self._rebuild()

    # -- records -------------------------------------------------------------------------

    def set_endpoints(self, endpoints: Iterable[NamedEndpoint]) -> None:
        """Replace every record by those of `endpoints` (e.g. after reading the state)."""
        self._endpoints = {(e.container_id, e.network): e for e in endpoints}
        present = {container_id for container_id, _ in self._endpoints}
        self._nameservers = {k: v for k, v in self._nameservers.items() if k in present}
        self._links = {k: v for k, v in self._links.items() if k in present}
        self._rebuild()

    def add_endpoint(self, endpoint: NamedEndpoint) -> None:
        """Add a container's names on one network (replacing what it had there)."""
        self._endpoints[(endpoint.container_id, endpoint.network)] = endpoint
        self._rebuild()

    def remove_endpoint(self, container_id: str, network: str) -> None:
        self._endpoints.pop((container_id, network), None)
        self._rebuild()

    def remove_container(self, container_id: str) -> None:
        """Forget a container on every network, and its `dns:` servers."""
        for key in [key for key in self._endpoints if key[0] == container_id]:
            del self._endpoints[key]
        self._nameservers.pop(container_id, None)
        self._links.pop(container_id, None)
        self._rebuild()

    def set_container_dns(self, container_id: str, servers: Sequence[str]) -> None:
        """Forward this container's other names to `servers` (its `dns:`) instead of the host's.

        Docker keeps service names resolvable for a container with `dns:` the same
        way: the embedded server stays its resolver and forwards to those servers.
        """
        parsed = tuple(parse_nameserver(server) for server in servers)
        if parsed:
            self._nameservers[container_id] = parsed
        else:
            self._nameservers.pop(container_id, None)

    def set_container_links(self, container_id: str, links: Mapping[str, str]) -> None:
        """Names only this container resolves (compose `links: [db:database]`): each
        alias answers as the name it stands for, on the container's own networks."""
        aliases = {_name_key(alias): _name_key(name) for alias, name in links.items()}
        if aliases:
            self._links[container_id] = aliases
        else:
            self._links.pop(container_id, None)

    def _rebuild(self) -> None:
        # Indexes made once per change, so answering is a few dict lookups.
        names: dict[str, dict[str, list[str]]] = {}  # network -> name -> addresses
        networks_of: dict[str, set[str]] = {}  # container id -> its networks
        containers_at: dict[str, set[str]] = {}  # address -> container ids
        reverse: dict[str, dict[str, str]] = {}  # address -> network -> PTR target
        ordered = sorted(self._endpoints.values(), key=lambda e: _address_order(e.address))
        for endpoint in ordered:
            network = endpoint.network.lower()
            networks_of.setdefault(endpoint.container_id, set()).add(network)
            containers_at.setdefault(endpoint.address, set()).add(endpoint.container_id)
            reverse.setdefault(endpoint.address, {})[network] = (
                f"{endpoint.container_name}.{endpoint.network}.")
            on_network = names.setdefault(network, {})
            own_names = [endpoint.service, endpoint.container_name, endpoint.hostname,
                         endpoint.container_id[:12], *endpoint.aliases]
            for name in {_name_key(name) for name in own_names} - {""}:
                addresses = on_network.setdefault(name, [])
                if endpoint.address not in addresses:
                    addresses.append(endpoint.address)
        self._names = names
        self._networks_of = networks_of
        self._containers_at = containers_at
        self._reverse = reverse
        self._turns: dict[str, int] = {}  # name -> answers given, for round-robin

    # -- queries ---------------------------------------------------------------------------

    def decide(self, query: bytes, client: str, *, tcp: bool = False) -> Decision:
        """What to do with `query`, received from `client` (its IPv4 address) over UDP or TCP."""
        if len(query) < _HEADER_SIZE:
            return Drop("shorter than a DNS header")
        if query[2] & 0x80:
            return Drop("a response, not a query")
        try:
            request = DNSRecord.parse(query)
        except Exception:  # dnslib raises several types on garbage; all mean the same here
            return Answer(_formerr(query))
        if request.header.opcode != _OPCODE_QUERY:
            return self._finish(request, _reply(request, RCODE.NOTIMP), tcp)
        if len(request.questions) != 1:
            return self._finish(request, _reply(request, RCODE.FORMERR), tcp)
        containers = self._containers_at.get(client)
        if not containers:
            return self._finish(request, _reply(request, RCODE.REFUSED), tcp)
        networks = sorted(set().union(*(self._networks_of[c] for c in containers)))
        question = request.q
        if question.qclass == _CLASS_IN:
            if question.qtype == QTYPE.PTR:
                target = self._reverse_name(question.qname, networks)
                if target is not None:
                    response = _reply(request, RCODE.NOERROR)
                    response.add_answer(RR(question.qname, QTYPE.PTR, rdata=PTR(target), ttl=TTL))
                    return self._finish(request, response, tcp)
            key = _label_key(question.qname)
            linked = next((self._links[c][key] for c in sorted(containers)
                           if key in self._links.get(c, {})), None)
            addresses = self._lookup(linked or key, networks)
            if addresses:
                return self._finish(request, self._address_answer(request, key, addresses), tcp)
        nameservers = next((self._nameservers[c] for c in sorted(containers)
                            if c in self._nameservers), ())
        return Forward(query, nameservers)

    def _lookup(self, key: str, networks: list[str]) -> list[str]:
        found: list[str] = []
        for network in networks:
            found += self._names.get(network, {}).get(key, [])
        if not found:
            # `<name>.<network>` asks one network only.
            for network in networks:
                name = key.removesuffix("." + network)
                if name != key:
                    found += self._names.get(network, {}).get(name, [])
        return list(dict.fromkeys(found))  # a name on two networks of one container: once

    def _address_answer(self, request: DNSRecord, key: str, addresses: list[str]) -> DNSRecord:
        response = _reply(request, RCODE.NOERROR)
        if request.q.qtype in (QTYPE.A, QTYPE.ANY):
            turn = self._turns.get(key, 0)
            self._turns[key] = turn + 1
            start = turn % len(addresses)
            for address in addresses[start:] + addresses[:start]:
                response.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=TTL))
        return response  # other types: NODATA, the name exists but has no such record

    def _reverse_name(self, qname: DNSLabel, networks: list[str]) -> str | None:
        labels = [label.decode("ascii", "replace").lower() for label in qname.label]
        if len(labels) != 6 or tuple(labels[4:]) != _REVERSE_SUFFIX:
            return None
        if not all(label.isdigit() and len(label) <= 3 for label in labels[:4]):
            return None
        address = ".".join(str(int(label)) for label in reversed(labels[:4]))
        targets = self._reverse.get(address, {})
        return next((targets[n] for n in networks if n in targets), None)

    def _finish(self, request: DNSRecord, response: DNSRecord, tcp: bool) -> Answer:
        limit = TCP_LIMIT
        opt = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
        if opt is not None:
            # RFC 6891: a responder that understands EDNS says so in its answer.
            response.add_ar(EDNS0(udp_len=EDNS_PAYLOAD))
        if not tcp:
            limit = max(UDP_LIMIT, opt.rclass) if opt is not None else UDP_LIMIT
        wire = response.pack()
        if len(wire) > limit:
            wire = _truncated(response, limit)
        return Answer(wire)


def _truncated(response: DNSRecord, limit: int) -> bytes:
    # Keep as many answers as fit and set TC: a client that retries over TCP gets
    # them all, and one that cannot (older musl) still gets some addresses.
    answers = response.rr
    response.header.tc = 1
    response.rr = []
    base = len(response.pack())
    fit = max(0, (limit - base) // 16)  # an A record with a compressed name: 16 bytes
    while True:
        response.rr = answers[:fit]
        wire = response.pack()
        if len(wire) <= limit or fit == 0:
            return wire
        fit -= 1


def _reply(request: DNSRecord, rcode: int) -> DNSRecord:
    header = DNSHeader(id=request.header.id, qr=1, aa=1, ra=1, rd=request.header.rd,
                       opcode=request.header.opcode, rcode=rcode)
    questions: list[DNSQuestion] = list(request.questions[:1])
    return DNSRecord(header, questions=questions)


def _formerr(query: bytes) -> bytes:
    # Only the header is trusted: echo its id and opcode, nothing from the body.
    opcode = (query[2] >> 3) & 0x0F
    header = DNSHeader(id=int.from_bytes(query[:2], "big"), qr=1, ra=1, opcode=opcode,
                       rd=query[2] & 0x01, rcode=RCODE.FORMERR)
    return DNSRecord(header).pack()


def _label_key(qname: DNSLabel) -> str:
    return ".".join(label.decode("ascii", "replace") for label in qname.label).lower()


def _name_key(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _address_order(address: str) -> tuple[int, str]:
    # inet_aton, not ipaddress: the index is rebuilt at every container start and
    # removal, over every endpoint, and ipaddress parses in Python.
    try:
        return int.from_bytes(socket.inet_aton(address), "big"), address
    except OSError:
        return 0, address
