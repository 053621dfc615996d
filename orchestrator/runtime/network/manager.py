"""Networks for containers: create and remove them, attach containers, keep the host in step.

The order of a container's life on its networks:
  reserve  (before the container is created) addresses and host ports are chosen
           and recorded, so its /etc/hosts can name its own address and a port
           conflict is reported before anything exists;
  plug     (the container's process exists, held before exec) one veth per network
           into its network namespace, its address, the default route;
  release  (stopped or removed) its endpoints are dropped; its veths went with its
           network namespace already.
After each change the nftables table and the DNS records are rebuilt from the
stored state, whole: the same state always gives the same host.

Engines of other state roots may share the host: what a manager makes carries
its root's owner id (`owner.py`) and it changes or removes nothing else.

Blocking work (netlink, `nft`, the store's lock) runs in worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from orchestrator.runtime.images.store_files import write_atomic
from orchestrator.runtime.network import links, nftables
from orchestrator.runtime.network.dns_answer import DnsAnswerer
from orchestrator.runtime.network.dns_server import DnsServer
from orchestrator.runtime.network.ipam import AddressBook
from orchestrator.runtime.network.nft_rules import render_ruleset
from orchestrator.runtime.network.owner import Owner
from orchestrator.runtime.network.ports import PublishedPort, choose_host_ports
from orchestrator.runtime.network.stale_links import StaleLinks
from orchestrator.runtime.network.store import Endpoint, Network, NetworkStore
from orchestrator.spec.errors import StackError

_LIMIT = trio.CapacityLimiter(4)


@dataclass(frozen=True)
class Attachment:
    """How a container joins one network (a service's `networks:` entry)."""

    network: str
    aliases: tuple[str, ...] = ()
    ipv4_address: str = ""
    mac_address: str = ""
    priority: int = 0


@dataclass
class Reservation:
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [e.address for e in self.endpoints]

    @property
    def ports(self) -> list[dict[str, Any]]:
        return [p for e in self.endpoints for p in e.ports]


class NetworkManager:
    def __init__(
        self, state_root: Path, answerer: DnsAnswerer | None = None,
        dns: DnsServer | None = None,
    ):
        self.store = NetworkStore(state_root / "networks")
        self.owner = Owner.of(state_root)
        self.answerer = answerer or DnsAnswerer()
        self.dns = dns  # serving on every network's gateway, when the caller runs one
        self.stale_links = StaleLinks(self.owner)

    async def serve_dns(self) -> None:
        """Make the DNS server listen on the gateways of exactly the stored networks."""
        if self.dns is None:
            return
        wanted = {n.gateway for n in self.list()}
        for address in sorted(self.dns.addresses - wanted):
            await self.dns.stop_listening(address)
        for address in sorted(wanted - self.dns.addresses):
            await self.dns.listen_on(address)

    # --- networks -------------------------------------------------------------------------

    async def create(self, name: str, **options: Any) -> Network:
        """The network `name`, created (bridge, rules) unless it exists; then it is repaired."""
        network = await trio.to_thread.run_sync(self._create, name, options, limiter=_LIMIT)
        await self.serve_dns()
        return network

    def _create(self, name: str, options: Mapping[str, Any]) -> Network:
        with self.store.locked():
            network = self.store.find(name)
            if network is None:
                network = self.store.plan(name, **options)
                self.store.save(network)
            links.ensure_bridge(network.bridge, network.gateway, network.prefixlen, network.mtu,
                                owner=self.owner)
            if not network.internal:
                links.enable_forwarding()
            self._sync_host()
        return network

    async def remove(self, name: str) -> None:
        await trio.to_thread.run_sync(self._remove, name, limiter=_LIMIT)
        await self.serve_dns()

    def _remove(self, name: str) -> None:
        with self.store.locked():
            network = self.store.get(name)
            if network.endpoints:
                users = ", ".join(sorted(e.container_name for e in network.endpoints.values()))
                raise StackError(
                    f"network {network.name} has active endpoints ({users})",
                    hint="stop or remove those containers first",
                )
            links.delete_link(network.bridge, self.owner, recorded=True)
            self.store.delete(network.name)
            self._sync_host()

    def list(self) -> list[Network]:
        return self.store.list()

    def names(self) -> list[str]:
        return self.store.names()

    def get(self, name: str) -> Network:
        return self.store.get(name)

    async def prune(self) -> list[str]:
        removed = []
        for network in self.list():
            if not network.endpoints:
                await self.remove(network.name)
                removed.append(network.name)
        return removed

    # --- containers -----------------------------------------------------------------------

    def reserve(
        self, container_id: str, container_name: str, attachments: Sequence[Attachment],
        service: str = "", project: str = "", hostname: str = "",
        ports: Sequence[PublishedPort] = (), dns: Sequence[str] = (),
        link_aliases: Mapping[str, str] | None = None,
    ) -> Reservation:
        """Addresses on every network and the host ports, recorded; nothing on the host but
        the rules for them. Blocking (the store's lock, `nft`): callers run it in a thread
        when they have an event loop."""
        ordered = sorted(attachments, key=lambda a: (-a.priority, a.network))
        with self.store.locked():
            networks = [self.store.get(a.network) for a in ordered]
            taken = {
                (p["protocol"], p["host_ip"], p["host_port"]): e.container_name
                for n in self.store.list() for e in n.endpoints.values() for p in e.ports
                if e.container_id != container_id
            }
            # Ports go with the first network (the one with the default route), as Docker
            # publishes through the container's primary address.
            published = [] if not networks or networks[0].internal else list(ports)
            if published:
                for key, holder in nftables.ports_of_other_roots(self.owner).items():
                    taken.setdefault(key, f"{holder} of another state root on this host")
            chosen = choose_host_ports(service or container_name, published, taken)
            reservation = Reservation()
            for index, (attachment, network) in enumerate(zip(ordered, networks, strict=True)):
                book = AddressBook(network.name, network.addressing(), {
                    e.address: e.container_name for e in network.endpoints.values()
                    if e.container_id != container_id
                })
                if attachment.ipv4_address:
                    address = book.reserve(attachment.ipv4_address, container_name)
                else:
                    address = book.allocate(container_name)
                endpoint = Endpoint(
                    network=network.name, container_id=container_id,
                    container_name=container_name, address=str(address), service=service,
                    project=project, hostname=hostname, aliases=list(attachment.aliases),
                    veth=links.veth_name(container_id, network.id),
                    mac=attachment.mac_address, priority=attachment.priority,
                    ports=[_port_json(p) for p in chosen] if index == 0 else [],
                    dns=list(dns), links=dict(link_aliases or {}),
                )
                network.endpoints[container_id] = endpoint
                reservation.endpoints.append(endpoint)
            for network in networks:
                self.store.save(network)
            self._sync_host()
        return reservation

    async def plug(self, container_id: str, pid: int) -> None:
        """The container's veths, in the order of its networks (the first has the route)."""
        await trio.to_thread.run_sync(self._plug, container_id, pid, limiter=_LIMIT)

    def _plug(self, container_id: str, pid: int) -> None:
        endpoints = self._endpoints_of(container_id)
        if not endpoints:
            return
        for index, (network, endpoint) in enumerate(endpoints):
            gateway = network.gateway if index == 0 and not network.internal else None
            links.attach(
                pid, bridge=network.bridge, host_veth=endpoint.veth, ifname=f"eth{index}",
                address=endpoint.address, prefixlen=network.prefixlen, gateway=gateway,
                owner=self.owner, mac=endpoint.mac or None, mtu=network.mtu,
            )

    async def release(self, container_id: str, *, defer_links: bool = False) -> None:
        await trio.to_thread.run_sync(
            partial(self.release_now, container_id, defer_links=defer_links), limiter=_LIMIT
        )

    def release_now(self, container_id: str, *, defer_links: bool = False) -> None:
        """The container's addresses and ports, given back. Its host veths usually go
        with its namespace; the rest are deleted now, or with `defer_links` a moment
        later (see stale_links.py), where the caller need not wait for the kernel."""
        with self.store.locked():
            released = False
            for network in self.store.list():
                endpoint = network.endpoints.pop(container_id, None)
                if endpoint is not None:
                    if defer_links:
                        self.stale_links.note(endpoint.veth)
                    else:
                        links.delete_link(endpoint.veth, self.owner, recorded=True)
                    self.store.save(network)
                    released = True
            if released:  # a container on no network (`network_mode: none`) changes nothing
                self._sync_host()

    def _endpoints_of(self, container_id: str) -> list[tuple[Network, Endpoint]]:
        found = [(n, n.endpoints[container_id]) for n in self.store.list()
                 if container_id in n.endpoints]
        return sorted(found, key=lambda pair: (-pair[1].priority, pair[0].name))

    def dns_address(self, container_id: str) -> str | None:
        endpoints = self._endpoints_of(container_id)
        return endpoints[0][0].gateway if endpoints else None

    # --- the host, rebuilt from state -----------------------------------------------------

    async def sync_host(self) -> None:
        await trio.to_thread.run_sync(self._locked_sync, limiter=_LIMIT)

    def _locked_sync(self) -> None:
        with self.store.locked():
            self._sync_host()

    def _sync_host(self, *, force: bool = False) -> None:
        """nftables, Docker's FORWARD accepts and DNS records, from the stored networks.

        Most changes (a container without published ports coming or going) leave
        the ruleset as it was: what was last applied is kept beside the records
        (`.applied`) with the kernel's ruleset generation after applying it, and
        `nft` runs again only when the text differs or anything changed the
        host's rules since (another engine, Docker) — one `nft` run is most of a
        container's network setup time. `force` (an engine starting) applies.
        """
        networks = self.store.list()
        endpoints = [e for n in networks for e in n.endpoints.values()]
        self.answerer.set_endpoints(endpoints)
        for endpoint in endpoints:
            if endpoint.dns:
                self.answerer.set_container_dns(endpoint.container_id, endpoint.dns)
            if endpoint.links:
                self.answerer.set_container_links(endpoint.container_id, endpoint.links)
        applied = self.store.root / ".applied"
        if not networks:
            nftables.remove_table(self.owner.table)
            nftables.remove_forward_accepts(self.owner)
            applied.unlink(missing_ok=True)
            return
        ports = [p | {"network": e.network, "container_address": e.address,
                      "container_name": e.container_name}
                 for e in endpoints for p in e.ports]
        ruleset = render_ruleset([n.to_json() for n in networks], ports, table=self.owner.table)
        bridges = sorted(n.bridge for n in networks)
        state = ruleset + "\n# bridges: " + " ".join(bridges) + "\n"
        try:
            recorded = applied.read_text()
        except OSError:
            recorded = ""
        generation = nftables.generation()
        if not force and generation is not None and recorded == f"{state}# {generation}\n":
            return
        nftables.apply_ruleset(self.owner.table, ruleset)
        nftables.ensure_forward_accepts(bridges, self.owner)
        write_atomic(applied, f"{state}# {nftables.generation()}\n".encode(), self.store.root)

    async def reconcile(self, running: set[str]) -> None:
        """After a crash: endpoints of containers not in `running` (those that exist) are
        dropped, every network's bridge exists, links of this root that no network
        knows are deleted. Other roots' links, tables and rules are left alone."""
        await trio.to_thread.run_sync(self._reconcile, running, limiter=_LIMIT)

    def _reconcile(self, running: set[str]) -> None:
        with self.store.locked():
            known: set[str] = set()
            recorded: set[str] = set()  # names our records give, kept or not
            for network in self.store.list():
                recorded.update(e.veth for e in network.endpoints.values())
                stale = [cid for cid in network.endpoints if cid not in running]
                for container_id in stale:
                    del network.endpoints[container_id]
                if stale:
                    self.store.save(network)
                links.ensure_bridge(network.bridge, network.gateway, network.prefixlen,
                                    network.mtu, owner=self.owner)
                known.add(network.bridge)
                known.update(e.veth for e in network.endpoints.values())
            for name, mark in links.link_marks().items():
                if name in known:
                    if not mark:
                        links.mark(name, self.owner)  # a veth made before links were marked
                elif links.is_ours(mark, self.owner, recorded=name in recorded):
                    links.delete_link(name, self.owner, recorded=name in recorded)
            nftables.remove_legacy_table(known)
            self._sync_host(force=True)


def _port_json(port: PublishedPort) -> dict[str, Any]:
    return {"container_port": port.container_port, "protocol": port.protocol,
            "host_port": port.host_port, "host_ip": port.host_ip}

