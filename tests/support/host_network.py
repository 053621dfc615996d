"""The host as network tests see it: what a state root still has there, the host's address,
a free port, a page fetched through a published port.

Other test sessions, benchmarks and engines may share the host, each with a
state root of its own: a leak check looks only at the links and nftables
table marked as the roots it made, never at another root's bridges.
"""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
import trio

from orchestrator.runtime.network import links
from orchestrator.runtime.network.owner import Owner

# A web server on 8080 behind a published port, for the tests of ports across state roots.
HTTP_SERVICE = """
    services:
      web:
        image: busybox
        ports: ["{ports}"]
        command: >-
          sh -c 'mkdir -p /www && echo published > /www/index.html &&
          httpd -f -p 8080 -h /www'
"""

def nft_tables() -> list[str]:
    listing = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    return listing.stdout.splitlines()


def root_leftovers(root: Path) -> list[str]:
    """The links marked as `root`'s and its nftables table, as `link <name>`/`table ip <t>`."""
    owner = Owner.of(root)
    found = [f"link {name}" for name in links.owned_links(owner)]
    return found + [t for t in nft_tables() if t == f"table ip {owner.table}"]


def state_roots_under(base: Path) -> list[Path]:
    """Every state root a session made under its temporary folder: a folder holding
    `networks/` (what a network manager makes first), at most three levels down."""
    found = []
    for pattern in ("networks", "*/networks", "*/*/networks", "*/*/*/networks"):
        found += [path.parent for path in base.glob(pattern) if path.is_dir()]
    return sorted(found)


def session_leftovers(base: Path) -> dict[str, list[str]]:
    """The leftovers of every state root under `base`, for the roots that have some."""
    found = {str(root): root_leftovers(root) for root in state_roots_under(base)}
    return {root: things for root, things in found.items() if things}


def host_address() -> str:
    """An address of this host that is not loopback (no packet is sent to find it)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        name, address = line.split()[1], line.split()[3].split("/")[0]
        if not name.startswith(("stk-", "docker", "vstk")):
            return address
    pytest.skip("this host has no global IPv4 address")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def fetch(url: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()

    with trio.fail_after(10):
        while True:
            try:
                return await trio.to_thread.run_sync(get)
            except OSError:
                await trio.sleep(0.1)
