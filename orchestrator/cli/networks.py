"""`stack network ls|inspect|create|rm|prune`: bridge networks from the command line.

Until the engine exists these commands open the network state under the state
root themselves (`STACK_ROOT`, as for volumes); the store's lock keeps them
safe next to a running engine. Output follows `docker network …`. The parser
is built for every command, so this module imports nothing heavy at the top:
the store (pyroute2) comes in when a verb runs, and trio only for the verbs
that change the host (create, rm, prune).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from orchestrator.spec.errors import StackError

from .volumes import _boolean, _key_value, _name_matches, _parse_filters, _table, state_root

if TYPE_CHECKING:
    from orchestrator.runtime.network.manager import NetworkManager
    from orchestrator.runtime.network.store import Network, NetworkStore

_LIST_FILTERS = ("dangling", "driver", "id", "label", "name", "scope")
# Docker's rule for object names; it also keeps a name from leaving the store's folder.
_NAME_PATTERN = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*"
_SHORT_ID = 12


def add_network_commands(commands: argparse._SubParsersAction) -> None:
    network = commands.add_parser("network", help="manage bridge networks")
    verbs = network.add_subparsers(dest="network_command", metavar="COMMAND")
    verbs.required = True

    listing = verbs.add_parser("ls", help="list networks")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.add_argument("-q", "--quiet", action="store_true", help="only network ids")
    listing.add_argument("--no-trunc", action="store_true", help="show whole network ids")
    listing.add_argument("--filter", dest="filters", action="append", default=[],
                         metavar="KEY=VALUE",
                         help="dangling=true, driver=, id=, label=, name=, scope=")
    inspect = verbs.add_parser("inspect", help="show networks as JSON")
    inspect.add_argument("names", nargs="+", metavar="NETWORK")
    create = verbs.add_parser("create", help="create a network")
    create.add_argument("-d", "--driver", default="bridge", help="network driver (only bridge)")
    create.add_argument("--subnet", help="subnet in CIDR form (default: one from the pools)")
    create.add_argument("--gateway", help="gateway address in the subnet")
    create.add_argument("--ip-range", help="range of the subnet that containers' addresses "
                        "come from")
    create.add_argument("--aux-address", dest="aux_addresses", action="append", default=[],
                        metavar="NAME=ADDRESS", help="keep an address of the subnet free "
                        "(repeatable)")
    create.add_argument("--internal", action="store_true", help="no traffic beyond the network")
    create.add_argument("--label", dest="labels", action="append", default=[],
                        metavar="KEY=VALUE", help="set a label (repeatable)")
    create.add_argument("-o", "--opt", dest="options", action="append", default=[],
                        metavar="KEY=VALUE", help="set a driver option (repeatable)")
    create.add_argument("name", metavar="NETWORK")
    remove = verbs.add_parser("rm", help="remove networks")
    remove.add_argument("-f", "--force", action="store_true",
                        help="do not complain about networks that do not exist")
    remove.add_argument("names", nargs="+", metavar="NETWORK")
    prune = verbs.add_parser("prune", help="remove networks no container uses")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask")


def run_network(args: argparse.Namespace) -> int:
    from pathlib import Path

    verb = args.network_command
    root = Path(state_root())
    if verb in _HOST_VERBS and os.geteuid() != 0:
        raise StackError(f"`stack network {verb}` needs root: it changes the host's links "
                         "and nftables rules", hint="run it as root")
    try:
        if verb in _HOST_VERBS:
            from orchestrator.runtime.network.manager import NetworkManager

            # No DNS server here: the engine serves names; a command keeps the host in step.
            return _HOST_VERBS[verb](NetworkManager(root), args)
        from orchestrator.runtime.network.store import NetworkStore

        return _READ_VERBS[verb](NetworkStore(root / "networks"), args)
    except PermissionError as error:
        raise StackError(f"cannot use the network state under {root}: {error.strerror}",
                         hint="run as root, or set STACK_ROOT") from None


# --- reading ------------------------------------------------------------------------------


def _list(store: NetworkStore, args: argparse.Namespace) -> int:
    import json

    filters = _parse_filters(args.filters, _LIST_FILTERS)
    dangling = {_boolean("dangling", value) for value in filters.get("dangling", [])}
    networks = [n for n in store.list() if _listed(n, filters, dangling)]
    width = None if args.no_trunc else _SHORT_ID
    if args.quiet:
        sys.stdout.write("".join(f"{n.id[:width]}\n" for n in networks))
    elif args.format == "json":
        sys.stdout.write("".join(json.dumps(_row(n, width)) + "\n" for n in networks))
    else:
        _table([("NETWORK ID", "NAME", "DRIVER", "SCOPE"),
                *((n.id[:width], n.name, "bridge", "local") for n in networks)])
    return 0


def _listed(network: Network, filters: dict[str, list[str]], dangling: set[bool]) -> bool:
    from orchestrator.runtime.volumes.store import labels_match

    # Values of one key are alternatives, except labels: a network must carry them all.
    if not all(labels_match(network.labels, selector) for selector in filters.get("label", [])):
        return False
    for key, value in (("name", network.name), ("id", network.id)):
        patterns = filters.get(key)
        if patterns and not any(_name_matches(pattern, value) for pattern in patterns):
            return False
    for key, value in (("driver", "bridge"), ("scope", "local")):
        if key in filters and value not in filters[key]:
            return False
    return not dangling or (not network.endpoints) in dangling


def _row(network: Network, width: int | None) -> dict[str, str]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(network.labels.items()))
    return {"CreatedAt": _go_time(network.created), "Driver": "bridge",
            "ID": network.id[:width], "IPv6": "false", "Internal": _go_bool(network.internal),
            "Labels": labels, "Name": network.name, "Scope": "local"}


def _go_time(created: str) -> str:
    """`2024-05-01T10:00:00Z` as Docker's Go prints a time: `2024-05-01 10:00:00 +0000 UTC`."""
    if created.endswith("Z") and "T" in created:
        return created[:-1].replace("T", " ") + " +0000 UTC"
    return created


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def _inspect(store: NetworkStore, args: argparse.Namespace) -> int:
    import json

    shown, failed = [], False
    for name in args.names:
        try:
            shown.append(_inspected(store.get(name)))
        except StackError as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
    print(json.dumps(shown, indent=4))
    return 1 if failed else 0


def _inspected(network: Network) -> dict[str, Any]:
    """The network in the shape of `docker network inspect` (IPv4 only, bridge driver)."""
    config: dict[str, Any] = {"Subnet": network.subnet, "Gateway": network.gateway}
    if network.ip_range:
        config["IPRange"] = network.ip_range
    if network.aux_addresses:
        config["AuxiliaryAddresses"] = dict(network.aux_addresses)
    containers = {
        endpoint.container_id: {
            "Name": endpoint.container_name,
            "MacAddress": endpoint.mac,
            "IPv4Address": f"{endpoint.address}/{network.prefixlen}",
            "IPv6Address": "",
        }
        for endpoint in sorted(network.endpoints.values(), key=lambda e: e.container_name)
    }
    return {
        "Name": network.name, "Id": network.id, "Created": network.created,
        "Scope": "local", "Driver": "bridge", "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [config]},
        "Internal": network.internal, "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": containers,
        "Options": dict(network.options), "Labels": dict(network.labels),
    }


_READ_VERBS = {"ls": _list, "inspect": _inspect}


# --- changing the host ----------------------------------------------------------------------


def _create(manager: NetworkManager, args: argparse.Namespace) -> int:
    import contextlib
    import re

    import trio

    from orchestrator.runtime.network.store import BRIDGE_NAME_OPTION

    name = args.name
    if not re.fullmatch(_NAME_PATTERN, name):
        raise StackError(f"invalid network name {name!r}",
                         hint="use letters, digits, '_', '.' and '-', starting with a "
                         "letter or digit")
    labels = dict(_key_value(item, "--label") for item in args.labels)
    options = dict(_key_value(item, "--opt") for item in args.options)
    bridge = options.get(BRIDGE_NAME_OPTION)
    if bridge and os.path.exists(f"/sys/class/net/{bridge}"):
        # Removing the network deletes its bridge: it must never be a link we did not make.
        raise StackError(f"network {name}: the host already has an interface named {bridge}",
                         hint=f"choose another {BRIDGE_NAME_OPTION}")
    if manager.store.find(name) is not None:
        raise StackError(f"network with name {name} already exists",
                         hint="choose another name, or remove it with `stack network rm`")

    async def create() -> Network:
        try:
            return await manager.create(
                name, ipam_config=_ipam_config(args), internal=args.internal, labels=labels,
                driver=args.driver, driver_opts=options,
            )
        except BaseException:
            # Recorded but not set up (a netlink or nft failure): take back what exists,
            # so that a failed create leaves nothing behind, as Docker's does.
            if manager.store.find(name) is not None:
                with trio.CancelScope(shield=True), contextlib.suppress(StackError, OSError):
                    await manager.remove(name)
            raise

    print(trio.run(create).id)
    return 0


def _ipam_config(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    aux = dict(_key_value(item, "--aux-address") for item in args.aux_addresses)
    if not args.subnet:
        given = [flag for flag, value in (("--gateway", args.gateway),
                                          ("--ip-range", args.ip_range),
                                          ("--aux-address", aux)) if value]
        if given:
            raise StackError(f"{', '.join(given)} given without --subnet",
                             hint="add the --subnet they belong to")
        return None
    entry: dict[str, Any] = {"subnet": args.subnet}
    if args.gateway:
        entry["gateway"] = args.gateway
    if args.ip_range:
        entry["ip_range"] = args.ip_range
    if aux:
        entry["aux_addresses"] = aux
    return [entry]


def _remove(manager: NetworkManager, args: argparse.Namespace) -> int:
    import trio

    failed = False

    async def remove_each() -> None:
        nonlocal failed
        for name in args.names:
            try:
                manager.get(name)
            except StackError as error:
                if not args.force:
                    print(f"error: {error}", file=sys.stderr)
                    failed = True
                continue
            try:
                await manager.remove(name)
            except StackError as error:
                print(f"error: {error}", file=sys.stderr)
                failed = True
            else:
                print(name)

    trio.run(remove_each)
    return 1 if failed else 0


def _prune(manager: NetworkManager, args: argparse.Namespace) -> int:
    import trio

    if not args.force and sys.stdin.isatty() and not _confirm():
        return 0
    removed = trio.run(manager.prune)
    if removed:
        print("Deleted Networks:")
        print("".join(f"{name}\n" for name in removed))
    return 0


def _confirm() -> bool:
    print("WARNING! This will remove all custom networks not used by at least one container.")
    try:
        answer = input("Are you sure you want to continue? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


_HOST_VERBS = {"create": _create, "rm": _remove, "prune": _prune}
