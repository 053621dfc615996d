"""Bridges and veths through netlink (pyroute2): the kernel objects a network is made of.

Everything here blocks (netlink round trips) and is meant to run in a worker
thread (`trio.to_thread.run_sync`). Configuring the container's end of a veth
needs a netlink socket inside the container's network namespace: a thread
enters that namespace with setns (which changes only the calling thread),
opens its socket there and returns to the host's namespace — far cheaper than
a helper process per container.

Names are ours and recognizable (ARCHITECTURE, "Naming on the host"):
bridges `stk-<id>`, host-side veths `vstk<id>`; nothing else is ever deleted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from orchestrator.runtime.containers import linux
from orchestrator.spec.errors import StackError

BRIDGE_PREFIX = "stk-"
VETH_PREFIX = "vstk"


def bridge_name(network_id: str) -> str:
    return BRIDGE_PREFIX + network_id[:11]


def veth_name(container_id: str, network_id: str) -> str:
    """The host end of one container's link to one network (15 characters at most)."""
    return VETH_PREFIX + container_id[:7] + network_id[:4]


def _index(ip: IPRoute, name: str) -> int | None:
    """The link's index, by one netlink request (a lookup by name would dump them all)."""
    try:
        reply = ip.link("get", ifname=name)
    except NetlinkError:
        return None
    return int(reply[0]["index"]) if reply else None


def ensure_bridge(name: str, gateway: str, prefixlen: int, mtu: int = 1500) -> None:
    """Create the bridge with its gateway address, up; nothing if it is there already."""
    with IPRoute() as ip:
        index = _index(ip, name)
        if index is None:
            try:
                ip.link("add", ifname=name, kind="bridge", mtu=mtu)
            except NetlinkError as error:
                raise StackError(f"cannot create bridge {name}: {error.args[-1]}") from None
            index = _index(ip, name)
            assert index is not None
        addresses = {a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=index, family=2)}
        if gateway not in addresses:
            ip.addr("add", index=index, address=gateway, prefixlen=prefixlen)
        ip.link("set", index=index, state="up")
    # Published ports answer on 127.0.0.1 by DNAT to the bridge: the kernel routes
    # loopback-sourced packets out of it only when told to.
    _sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")


def delete_link(name: str, *, recorded: bool = False) -> None:
    """Delete one of our links (bridge or veth); nothing if it is gone. A name without
    our prefixes is deleted only when a network record of ours names it (`recorded`)."""
    if not recorded and not name.startswith((BRIDGE_PREFIX, VETH_PREFIX)):
        raise ValueError(f"refusing to delete {name}: not one of ours")
    with IPRoute() as ip:
        index = _index(ip, name)
        if index is not None:
            with contextlib.suppress(NetlinkError):
                ip.link("del", index=index)


def our_links() -> list[str]:
    with IPRoute() as ip:
        names = [link.get_attr("IFLA_IFNAME") for link in ip.get_links()]
    return sorted(n for n in names if n.startswith((BRIDGE_PREFIX, VETH_PREFIX)))


def attach(
    pid: int, *, bridge: str, host_veth: str, ifname: str, address: str, prefixlen: int,
    gateway: str | None, mac: str | None = None, mtu: int = 1500,
) -> None:
    """A veth from `bridge` into the network namespace of process `pid`, named `ifname`
    there, with its address; the default route via `gateway` when given."""
    with IPRoute() as ip:
        master = _index(ip, bridge)
        if master is None:
            raise StackError(f"bridge {bridge} does not exist")
        if _index(ip, host_veth) is not None:
            ip.link("del", ifname=host_veth)  # left by a crash: this container is new
        peer = {"ifname": ifname, "net_ns_pid": pid, "mtu": mtu}
        if mac:
            peer["address"] = mac
        try:
            ip.link("add", ifname=host_veth, kind="veth", mtu=mtu, peer=peer)
        except NetlinkError as error:
            raise StackError(f"cannot create {host_veth}: {error.args[-1]}") from None
        index = _index(ip, host_veth)
        ip.link("set", index=index, master=master, state="up")
    # Hairpin: a container reaching its own published port through the host address
    # gets its packet back out of the port it came in by.
    _sysctl_path(f"/sys/class/net/{host_veth}/brport/hairpin_mode", "1")
    with _in_netns(pid), IPRoute() as inner:
        device = _index(inner, ifname)
        inner.addr("add", index=device, address=address, prefixlen=prefixlen)
        inner.link("set", index=device, state="up")
        inner.link("set", index=1, state="up")  # lo is always the first link of a namespace
        if gateway:
            inner.route("replace", dst="0.0.0.0/0", gateway=gateway)


def loopback_up(pid: int) -> None:
    """A container on no network still has a working `lo` (network_mode: none)."""
    with _in_netns(pid), IPRoute() as inner:
        inner.link("set", index=1, state="up")


@contextlib.contextmanager
def _in_netns(pid: int) -> Iterator[None]:
    """This thread in the network namespace of `pid`, and back afterwards."""
    host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(host)
        raise StackError(f"process {pid} is gone: cannot configure its network") from None
    try:
        linux.setns(target, linux.CLONE_NEWNET)
        yield
    finally:
        os.close(target)
        linux.setns(host, linux.CLONE_NEWNET)
        os.close(host)


def enable_forwarding() -> None:
    _sysctl("net/ipv4/ip_forward", "1")


def _sysctl(key: str, value: str) -> None:
    _sysctl_path(f"/proc/sys/{key}", value)


def _sysctl_path(path: str, value: str) -> None:
    with open(path, "w") as file:
        file.write(value)
