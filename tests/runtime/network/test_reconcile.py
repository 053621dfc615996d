"""After a crash, the next engine makes the host match the records again — its own part of
the host: links and tables of other state roots are never touched."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
from support.host_network import nft_tables, root_leftovers

from orchestrator.runtime.network import links
from orchestrator.runtime.network.manager import Attachment, NetworkManager
from orchestrator.runtime.network.nft_rules import LEGACY_TABLE
from orchestrator.runtime.network.owner import Owner

pytestmark = pytest.mark.trio


def add_link(name: str, alias: str = "") -> None:
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    if alias:
        subprocess.run(["ip", "link", "set", name, "alias", alias], check=True)


async def test_reconcile_drops_dead_endpoints_and_stray_links_and_restores_the_bridge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("STACK_ADDRESS_POOLS", "10.214.0.0/16:24")
    manager = NetworkManager(tmp_path)
    name = f"rc{secrets.token_hex(3)}_default"
    network = await manager.create(name)
    stray = "vstk" + secrets.token_hex(5)  # ours: marked with our id, named by no record
    dead = secrets.token_hex(32)
    try:
        [endpoint] = manager.reserve(dead, "gone-1", [Attachment(name)]).endpoints
        add_link(stray, manager.owner.link_alias)
        add_link(endpoint.veth)  # unmarked, as a crash between creating and marking leaves it
        subprocess.run(["ip", "link", "del", network.bridge], check=True)  # as if half torn down

        await manager.reconcile(running=set())

        assert manager.get(name).endpoints == {}
        assert links.owned_links(manager.owner) == [network.bridge]
        assert endpoint.veth not in links.our_links()
        assert f"table ip {manager.owner.table}" in nft_tables()
    finally:
        for name_left in (stray, endpoint.veth):
            subprocess.run(["ip", "link", "del", name_left], capture_output=True)
        await manager.release(dead)
        await manager.remove(name)
    assert root_leftovers(tmp_path) == []


async def test_reconcile_leaves_links_it_cannot_prove_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Another root's marked link, and an unmarked one no record of ours names (an older
    engine's, or another root's between creating and marking it), are not ours to delete."""
    monkeypatch.setenv("STACK_ADDRESS_POOLS", "10.216.0.0/16:24")
    manager = NetworkManager(tmp_path / "ours")
    name = f"rs{secrets.token_hex(3)}_default"
    theirs = "vstk" + secrets.token_hex(5)
    unmarked = "stk-" + secrets.token_hex(5)
    try:
        await manager.create(name)
        add_link(theirs, Owner.of(tmp_path / "theirs").link_alias)
        add_link(unmarked)

        await manager.reconcile(running=set())

        assert {theirs, unmarked} <= set(links.our_links())
    finally:
        for stray in (theirs, unmarked):
            subprocess.run(["ip", "link", "del", stray], capture_output=True)
        for network in manager.list():
            await manager.remove(network.name)
    assert root_leftovers(tmp_path / "ours") == []


async def test_reconcile_removes_the_shared_table_of_older_versions_only_when_it_is_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("STACK_ADDRESS_POOLS", "10.219.0.0/16:24")
    manager = NetworkManager(tmp_path)
    name = f"lg{secrets.token_hex(3)}_default"
    foreign = "stk-" + secrets.token_hex(5)

    def legacy_table(*bridges: str) -> None:
        elements = ", ".join(f'"{b}"' for b in bridges)
        text = (f"table ip {LEGACY_TABLE} {{ set bridges {{ type ifname; "
                f"elements = {{ {elements} }}; }}; }}")
        subprocess.run(["nft", "-f", "-"], input=text, text=True, check=True)

    def delete_legacy_table() -> None:
        subprocess.run(["nft", "delete", "table", "ip", LEGACY_TABLE], capture_output=True)

    if f"table ip {LEGACY_TABLE}" in nft_tables():
        pytest.skip("an older engine's table is on this host: it is not this test's")
    try:
        network = await manager.create(name)
        add_link(foreign)  # a bridge of some other engine, still on the host
        legacy_table(network.bridge, foreign)
        await manager.reconcile(running=set())
        assert f"table ip {LEGACY_TABLE}" in nft_tables(), "it serves a bridge not ours"

        delete_legacy_table()
        legacy_table(network.bridge, "stk-" + secrets.token_hex(5))  # ours, and one gone
        await manager.reconcile(running=set())
        assert f"table ip {LEGACY_TABLE}" not in nft_tables()
    finally:
        delete_legacy_table()
        subprocess.run(["ip", "link", "del", foreign], capture_output=True)
        await manager.remove(name)
    assert root_leftovers(tmp_path) == []


async def test_network_with_containers_is_not_removed(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("STACK_ADDRESS_POOLS", "10.215.0.0/16:24")
    manager = NetworkManager(tmp_path)
    name = f"rm{secrets.token_hex(3)}_default"
    await manager.create(name)
    holder = secrets.token_hex(32)
    try:
        manager.reserve(holder, "proj-web-1", [Attachment(name)])
        with pytest.raises(Exception, match=r"has active endpoints \(proj-web-1\)"):
            await manager.remove(name)
    finally:
        await manager.release(holder)
        await manager.remove(name)
    assert root_leftovers(tmp_path) == []
