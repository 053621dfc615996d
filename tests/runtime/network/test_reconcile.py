"""After a crash, the next engine makes the host match the records again."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from orchestrator.runtime.network import links
from orchestrator.runtime.network.manager import Attachment, NetworkManager

pytestmark = pytest.mark.trio


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


async def test_reconcile_drops_dead_endpoints_and_stray_links_and_restores_the_bridge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("STACK_ADDRESS_POOLS", "10.214.0.0/16:24")
    manager = NetworkManager(tmp_path)
    name = f"rc{secrets.token_hex(3)}_default"
    network = await manager.create(name)
    stray = "vstk" + secrets.token_hex(5)
    try:
        dead = secrets.token_hex(32)
        manager.reserve(dead, "gone-1", [Attachment(name)])
        subprocess.run(["ip", "link", "add", stray, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "del", network.bridge], check=True)  # as if half torn down

        await manager.reconcile(running=set())

        assert manager.get(name).endpoints == {}
        assert links.our_links() == [network.bridge]
        assert "table ip stack" in nft_tables()
    finally:
        subprocess.run(["ip", "link", "del", stray], capture_output=True)
        await manager.release(dead)
        await manager.remove(name)
    assert links.our_links() == []
    assert "table ip stack" not in nft_tables()


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
    assert links.our_links() == []
