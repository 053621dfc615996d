"""Bridges and veths through netlink (pyroute2): the kernel objects a network is made of.

Everything here blocks (netlink round trips) and is meant to run in a worker
thread (`trio.to_thread.run_sync`). Configuring the container's end of a veth
needs a netlink socket inside the container's network namespace: a thread
enters that namespace with setns (which changes only the calling thread),
opens its socket there and returns to the host's namespace — far cheaper than
a helper process per container.

Names are ours and recognizable (ARCHITECTURE, "Naming on the host"):
bridges `stk-<id>`, host-side veths `vstk<id>`. A name says only that some
engine made the link; its alias says which state root did (`owner.py`), and
a link is deleted only when that alias is ours — or, for a link made before
links carried one, when our own records name it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from orchestrator.runtime.containers import linux
from orchestrator.runtime.network.owner import MARK_PREFIX, Owner
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
    found = _get(ip, name)
    return found[0] if found else None


def host_index(name: str) -> int | None:
    """A host link's index from sysfs: a file read, where a netlink request through the
    library costs a millisecond or more (a container start made several)."""
    try:
        with open(f"/sys/class/net/{name}/ifindex", "rb") as file:
            return int(file.read())
    except (OSError, ValueError):
        return None


def _get(ip: IPRoute, name: str) -> tuple[int, str] | None:
    """The link's index and alias ("" without one), or None when there is no such link."""
    try:
        reply = ip.link("get", ifname=name)
    except NetlinkError:
        return None
    if not reply:
        return None
    return int(reply[0]["index"]), reply[0].get_attr("IFLA_IFALIAS") or ""


def is_ours(mark: str, owner: Owner, *, recorded: bool) -> bool:
    """Whether a link with alias `mark` is `owner`'s: marked with its id, or unmarked
    (made before links were marked, or a crash came between creating and marking)
    and named in one of its records (`recorded`). Another root's mark is never ours."""
    if mark == owner.link_alias:
        return True
    return recorded and not mark.startswith(MARK_PREFIX)


def _refuse_foreign(name: str, mark: str, owner: Owner) -> None:
    if mark.startswith(MARK_PREFIX) and mark != owner.link_alias:
        raise StackError(
            f"link {name} belongs to the engine of another state root ({mark})",
            hint="remove the network there, or give this one another bridge name",
        )


def ensure_bridge(
    name: str, gateway: str, prefixlen: int, mtu: int = 1500, *, owner: Owner
) -> None:
    """Create the bridge with its gateway address, up and marked as `owner`'s; an existing
    one is repaired (a bridge of another state root is refused)."""
    with IPRoute() as ip:
        found = _get(ip, name)
        if found is not None:
            _refuse_foreign(name, found[1], owner)
            index = found[0]
        else:
            try:
                ip.link("add", ifname=name, kind="bridge", mtu=mtu)
            except NetlinkError as error:
                raise StackError(f"cannot create bridge {name}: {error.args[-1]}") from None
            index = _index(ip, name)
            assert index is not None
        addresses = {a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=index, family=2)}
        if gateway not in addresses:
            ip.addr("add", index=index, address=gateway, prefixlen=prefixlen)
        # The kernel ignores an alias given with "add": it is set here, with "up".
        ip.link("set", index=index, state="up", IFLA_IFALIAS=owner.link_alias)
    # Published ports answer on 127.0.0.1 by DNAT to the bridge: the kernel routes
    # loopback-sourced packets out of it only when told to.
    _sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")


def delete_link(
    name: str, owner: Owner, *, recorded: bool = False, index: int | None = None
) -> bool:
    """Delete the link `name` if it is `owner`'s (see `is_ours`; `recorded`: a record of
    the owner names it) and, given `index`, still the link that had it; True when it was
    deleted. Nothing if it is gone or not ours."""
    if not os.path.exists(f"/sys/class/net/{name}"):
        return False  # the usual case for a veth: it went with its container's namespace
    with IPRoute() as ip:
        found = _get(ip, name)
        if found is None or not is_ours(found[1], owner, recorded=recorded):
            return False
        if index is not None and found[0] != index:
            return False  # made again since under the same name: not the one meant
        with contextlib.suppress(NetlinkError):
            ip.link("del", index=found[0])
        return True


def mark(name: str, owner: Owner) -> None:
    """Mark an unmarked link as `owner`'s (one its records name, made before marks)."""
    with IPRoute() as ip:
        found = _get(ip, name)
        if found is not None and not found[1].startswith(MARK_PREFIX):
            ip.link("set", index=found[0], IFLA_IFALIAS=owner.link_alias)


def link_marks() -> dict[str, str]:
    """Every link on the host, name -> alias ("" without one), in one netlink dump."""
    with IPRoute() as ip:
        return {
            link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_IFALIAS") or ""
            for link in ip.get_links()
        }


def owned_links(owner: Owner) -> list[str]:
    """The links marked as `owner`'s, whatever their names."""
    return sorted(name for name, mark in link_marks().items() if mark == owner.link_alias)


def our_links() -> list[str]:
    """Every link named like ours, of any state root (a leak check after all engines)."""
    return sorted(n for n in link_marks() if n.startswith((BRIDGE_PREFIX, VETH_PREFIX)))


def attach(
    pid: int, *, bridge: str, host_veth: str, ifname: str, address: str, prefixlen: int,
    gateway: str | None, owner: Owner, mac: str | None = None, mtu: int = 1500,
) -> None:
    """A veth from `bridge` into the network namespace of process `pid`, named `ifname`
    there, with its address; the default route via `gateway` when given. The host end
    is marked as `owner`'s."""
    master = host_index(bridge)
    if master is None:
        raise StackError(f"bridge {bridge} does not exist")
    with IPRoute() as ip:
        stale = _get(ip, host_veth) if host_index(host_veth) is not None else None
        if stale is not None:
            # Left by a crash (this container is new, the name is in its record), unless
            # another state root's: its names come from other random ids, never replaced.
            _refuse_foreign(host_veth, stale[1], owner)
            ip.link("del", index=stale[0])
        peer = {"ifname": ifname, "net_ns_pid": pid, "mtu": mtu}
        if mac:
            peer["address"] = mac
        try:
            ip.link("add", ifname=host_veth, kind="veth", mtu=mtu, peer=peer)
        except NetlinkError as error:
            raise StackError(f"cannot create {host_veth}: {error.args[-1]}") from None
        index = host_index(host_veth)
        ip.link("set", index=index, master=master, state="up", IFLA_IFALIAS=owner.link_alias)
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
