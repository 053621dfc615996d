"""Containers on real bridges, with our DNS server answering on the gateways.

Every test gets a project of its own; afterwards its containers, endpoints and
networks are removed, and no bridge, veth or nftables table of the session's
state root may be left on the host (other roots' engines may share the host).

Every test runs twice: alone, and beside a running Docker engine, whose
FORWARD policy DROP (set as dockerd sets it on a fresh host) would drop our
traffic if we did not open our bridges in its DOCKER-USER chain.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from support.containers import ServiceRunner
from support.dockerd import running_dockerd, sh
from support.host_network import root_leftovers

from orchestrator.runtime.network.dns_answer import DnsAnswerer
from orchestrator.runtime.network.dns_server import DnsServer
from orchestrator.runtime.network.manager import NetworkManager


@pytest.fixture(
    scope="module",
    params=["alone", pytest.param("beside-dockerd", marks=pytest.mark.slow)],
)
def host(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "alone":
        yield "alone"
        return
    with running_dockerd():
        policy = "DROP" if "-P FORWARD DROP" in sh("iptables", "-S", "FORWARD") else "ACCEPT"
        sh("iptables", "-P", "FORWARD", "DROP")
        try:
            yield "beside-dockerd"
        finally:
            sh("iptables", "-P", "FORWARD", policy)


@pytest.fixture
async def netrunner(
    container_root: Path, tmp_path: Path, nursery: trio.Nursery, host: str
) -> AsyncIterator[ServiceRunner]:
    answerer = DnsAnswerer()
    dns = DnsServer(answerer, upstreams=[])  # no upstream: unknown names fail at once
    await nursery.start(dns.run)
    manager = NetworkManager(container_root, answerer, dns)
    runner = ServiceRunner(container_root, tmp_path, project=f"n{secrets.token_hex(3)}",
                           networks=manager)
    try:
        yield runner
    finally:
        await runner.remove_all()
        for network in manager.list():
            await manager.remove(network.name)
        nursery.cancel_scope.cancel()
    assert root_leftovers(container_root) == []
