"""Two state roots on one host (two engines, a test session beside a developer's engine):
each one's reconcile and removals leave the other's bridge, veths, table and ports alone."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from support.containers import ServiceRunner
from support.host_network import (
    HTTP_SERVICE,
    fetch,
    free_port,
    host_address,
    nft_tables,
    root_leftovers,
)

from orchestrator.runtime.containers.state import container_ids
from orchestrator.runtime.network import links
from orchestrator.runtime.network.manager import NetworkManager
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.trio


@pytest.fixture
async def neighbour(
    container_root: Path, tmp_path: Path, netrunner: ServiceRunner
) -> AsyncIterator[ServiceRunner]:
    """Services whose networks belong to a second state root (its own network records,
    so its own owner id), beside `netrunner`'s."""
    root = tmp_path / "neighbour-root"
    project_dir = tmp_path / "neighbour"
    project_dir.mkdir()
    manager = NetworkManager(root)
    runner = ServiceRunner(container_root, project_dir, project=f"o{secrets.token_hex(3)}",
                           networks=manager)
    try:
        yield runner
    finally:
        # Only its own containers: the others are netrunner's, in the same container root.
        for container_id in set(runner.created) & set(container_ids(runner.runtime.root)):
            await runner.runtime.remove(container_id, force=True)
            await manager.release(container_id)
        for network in manager.list():
            await manager.remove(network.name)
    assert root_leftovers(root) == []


def on_host(runner: ServiceRunner) -> list[str]:
    """The bridges and veths `runner`'s state root has on the host, and its table."""
    assert runner.networks is not None
    owner = runner.networks.owner
    table = [t for t in nft_tables() if t == f"table ip {owner.table}"]
    return links.owned_links(owner) + table


async def fetch_from_a_container(runner: ServiceRunner, service: str, url: str) -> str:
    """What a container of `runner`'s project, of `service`, gets from `url` ("blocked"
    when nothing). `timeout`, as busybox's `wget -T` crashes."""
    client = f"""
    services:
      {service}:
        image: busybox
        command: >-
          sh -c 'for i in 1 2 3; do timeout 1 wget -qO- {url} && exit 0; sleep 0.2; done;
          echo blocked'
    """
    return (await runner.run(client, service)).stdout


async def test_two_state_roots_keep_their_own_bridges_tables_and_ports(
    netrunner: ServiceRunner, neighbour: ServiceRunner
):
    assert netrunner.networks is not None and neighbour.networks is not None
    ours, theirs = free_port(), free_port()
    web = await netrunner.start(HTTP_SERVICE.format(ports=f"{ours}:8080"), "web")
    other = await neighbour.start(HTTP_SERVICE.format(ports=f"{theirs}:8080"), "web")
    assert netrunner.networks.owner != neighbour.networks.owner
    ours_on_host, theirs_on_host = on_host(netrunner), on_host(neighbour)
    # A bridge, a veth and a table each, none shared.
    assert len(ours_on_host) == len(theirs_on_host) == 3
    assert set(ours_on_host).isdisjoint(theirs_on_host)
    network = netrunner.networks.get(f"{netrunner.project}_default")
    other_network = neighbour.networks.get(f"{neighbour.project}_default")
    assert network.subnet != other_network.subnet, "a subnet in use on the host is taken"

    # Each engine restarting reconciles its own root only.
    await neighbour.networks.reconcile({other.id})
    await netrunner.networks.reconcile({web.id})
    assert (on_host(netrunner), on_host(neighbour)) == (ours_on_host, theirs_on_host)
    for port in (ours, theirs):
        assert await fetch(f"http://127.0.0.1:{port}/") == "published\n"
        assert await fetch(f"http://{host_address()}:{port}/") == "published\n"

    # Across roots, networks stay isolated; a published port is public to both.
    direct = f"http://{network.endpoints[web.id].address}:8080/"
    assert await fetch_from_a_container(neighbour, "direct", direct) == "blocked\n"
    url = f"http://{host_address()}:{ours}/"
    assert await fetch_from_a_container(neighbour, "published", url) == "published\n"

    # The neighbour going away entirely takes its part only.
    for container_id in neighbour.created:
        await neighbour.runtime.remove(container_id, force=True)
        await neighbour.networks.release(container_id)
    await neighbour.networks.remove(other_network.name)
    assert on_host(neighbour) == []
    assert on_host(netrunner) == ours_on_host
    with trio.fail_after(10):
        assert await fetch(f"http://127.0.0.1:{ours}/") == "published\n"
        assert await fetch(f"http://{host_address()}:{ours}/") == "published\n"



async def test_a_port_another_state_root_publishes_is_one_error_naming_its_container(
    netrunner: ServiceRunner, neighbour: ServiceRunner
):
    port = free_port()
    other = await neighbour.start(HTTP_SERVICE.format(ports=f"{port}:8080"), "web")
    before = container_ids(netrunner.runtime.root)
    with pytest.raises(StackError) as raised:
        await netrunner.start(HTTP_SERVICE.format(ports=f"{port}:8080"), "web")
    message = str(raised.value)
    holder = neighbour.runtime.get(other.id).name
    assert (f"tcp port {port} is already in use by container {holder} "
            "of another state root on this host") in message
    assert "\n" not in message
    assert container_ids(netrunner.runtime.root) == before
    assert await fetch(f"http://127.0.0.1:{port}/") == "published\n"  # still the neighbour's

    # Once the neighbour lets it go, it is ours to publish.
    await neighbour.runtime.remove(other.id, force=True)
    assert neighbour.networks is not None
    await neighbour.networks.release(other.id)
    await netrunner.start(HTTP_SERVICE.format(ports=f"{port}:8080"), "web")
    with trio.fail_after(10):
        assert await fetch(f"http://127.0.0.1:{port}/") == "published\n"


async def test_network_names_come_from_the_records_without_reading_them(
    netrunner: ServiceRunner,
):
    assert netrunner.networks is not None
    await netrunner.create_networks("""
        services:
          app: {image: busybox, networks: [front, back]}
        networks:
          front: {}
          back: {internal: true}
    """)
    names = netrunner.networks.names()
    assert names == sorted(network.name for network in netrunner.networks.list())
    assert {f"{netrunner.project}_front", f"{netrunner.project}_back"} <= set(names)
