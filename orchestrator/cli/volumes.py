"""`stack volume ls|inspect|create|rm|prune`: named volumes from the command line.

Until the engine exists these commands open the volume store under the state
root (`STACK_ROOT`, default /var/lib/stack) themselves; its lock keeps them
safe next to a running engine. Output follows `docker volume …`. The parser
is built for every command, so this module imports only argparse and the
error type at the top; the store and the rest come in when a volume verb runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from orchestrator.spec.errors import StackError

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.runtime.volumes.store import Volume, VolumeStore

    _InUse = Callable[[str], list[str]]

DEFAULT_ROOT = "/var/lib/stack"
_LIST_FILTERS = ("dangling", "driver", "label", "name")
_PRUNE_FILTERS = ("all", "label", "label!")


def add_volume_commands(commands: argparse._SubParsersAction) -> None:
    volume = commands.add_parser("volume", help="manage named volumes")
    verbs = volume.add_subparsers(dest="volume_command", metavar="COMMAND")
    verbs.required = True

    listing = verbs.add_parser("ls", help="list volumes")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.add_argument("-q", "--quiet", action="store_true", help="only volume names")
    listing.add_argument("--filter", dest="filters", action="append", default=[],
                         metavar="KEY=VALUE", help="dangling=true, driver=, label=, name=")
    inspect = verbs.add_parser("inspect", help="show volumes as JSON")
    inspect.add_argument("names", nargs="+", metavar="VOLUME")
    create = verbs.add_parser("create", help="create a volume")
    create.add_argument("-d", "--driver", default="local", help="volume driver (only local)")
    create.add_argument("--label", dest="labels", action="append", default=[],
                        metavar="KEY=VALUE", help="set a label (repeatable)")
    create.add_argument("-o", "--opt", dest="options", action="append", default=[],
                        metavar="KEY=VALUE", help="set a driver option (repeatable)")
    create.add_argument("name", nargs="?", metavar="VOLUME",
                        help="name (default: a random one, making an anonymous volume)")
    remove = verbs.add_parser("rm", help="remove volumes")
    remove.add_argument("-f", "--force", action="store_true",
                        help="do not complain about volumes that do not exist")
    remove.add_argument("names", nargs="+", metavar="VOLUME")
    prune = verbs.add_parser("prune", help="remove volumes no container uses")
    prune.add_argument("-a", "--all", action="store_true",
                       help="named volumes too, not only anonymous ones")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask")
    prune.add_argument("--filter", dest="filters", action="append", default=[],
                       metavar="KEY=VALUE", help="label=, label!=")


def state_root() -> str:
    return os.environ.get("STACK_ROOT") or DEFAULT_ROOT


def run_volume(args: argparse.Namespace) -> int:
    from orchestrator.runtime.volumes.in_use import volumes_in_use
    from orchestrator.runtime.volumes.store import VolumeStore

    root = state_root()
    usage: dict[str, list[str]] | None = None

    def in_use(name: str) -> list[str]:
        # Read once per command: one `prune` asks about every volume.
        nonlocal usage
        if usage is None:
            usage = volumes_in_use(root)
        return usage.get(name, [])

    store = VolumeStore(os.path.join(root, "volumes"), in_use=in_use)
    return _VERBS[args.volume_command](store, args, in_use)


def _list(store: VolumeStore, args: argparse.Namespace, in_use: _InUse) -> int:
    import json

    filters = _parse_filters(args.filters, _LIST_FILTERS)
    dangling = {_boolean("dangling", value) for value in filters.get("dangling", [])}
    volumes = [v for v in store.list() if _listed(v, filters, dangling, in_use)]
    if args.quiet:
        sys.stdout.write("".join(f"{v.name}\n" for v in volumes))
    elif args.format == "json":
        sys.stdout.write("".join(json.dumps(_row(v)) + "\n" for v in volumes))
    else:
        _table([("DRIVER", "VOLUME NAME"), *((v.driver, v.name) for v in volumes)])
    return 0


def _listed(
    volume: Volume, filters: dict[str, list[str]], dangling: set[bool], in_use: _InUse
) -> bool:
    from orchestrator.runtime.volumes.store import labels_match

    if not all(labels_match(volume.labels, selector) for selector in filters.get("label", [])):
        return False
    names = filters.get("name")
    if names and not any(_name_matches(pattern, volume.name) for pattern in names):
        return False
    drivers = filters.get("driver")
    if drivers and volume.driver not in drivers:
        return False
    return not dangling or (not in_use(volume.name)) in dangling


def _name_matches(pattern: str, name: str) -> bool:
    """Docker matches `name=` as a regular expression found anywhere in the name."""
    import re

    try:
        return re.search(pattern, name) is not None
    except re.error:
        raise StackError(f"invalid name filter {pattern!r}: not a regular expression") from None


def _row(volume: Volume) -> dict[str, str]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(volume.labels.items()))
    return {"Driver": volume.driver, "Labels": labels, "Links": "N/A",
            "Mountpoint": volume.mountpoint, "Name": volume.name, "Scope": volume.scope,
            "Size": "N/A"}


def _table(rows: list[tuple[str, ...]]) -> None:
    """Columns as docker's tab writer lays them out: at least 10 wide, 3 spaces apart."""
    widths = [max(10, *(len(cell) + 3 for cell in column)) for column in zip(*rows, strict=True)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        print("".join(cells) + row[-1])


def _inspect(store: VolumeStore, args: argparse.Namespace, in_use: _InUse) -> int:
    import json

    shown, failed = [], False
    for name in args.names:
        try:
            shown.append(store.get(name).to_json())
        except StackError as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
    print(json.dumps(shown, indent=4))
    return 1 if failed else 0


def _create(store: VolumeStore, args: argparse.Namespace, in_use: _InUse) -> int:
    labels = dict(_key_value(item, "--label") for item in args.labels)
    options = dict(_key_value(item, "--opt") for item in args.options)
    volume = store.create(args.name, labels=labels, driver=args.driver, driver_opts=options)
    print(volume.name)
    return 0


def _remove(store: VolumeStore, args: argparse.Namespace, in_use: _InUse) -> int:
    failed = False
    for name in args.names:
        try:
            store.remove(name, force=args.force)
        except StackError as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
        else:
            print(name)
    return 1 if failed else 0


def _prune(store: VolumeStore, args: argparse.Namespace, in_use: _InUse) -> int:
    filters = _parse_filters(args.filters, _PRUNE_FILTERS)
    everything = args.all or any(_boolean("all", v) for v in filters.get("all", []))
    if not args.force and sys.stdin.isatty() and not _confirm(everything):
        return 0
    removed, reclaimed = store.prune(all_=everything, labels=filters.get("label", []),
                                     without_labels=filters.get("label!", []))
    if removed:
        print("Deleted Volumes:")
        print("".join(f"{name}\n" for name in removed))
    print(f"Total reclaimed space: {_human_size(reclaimed)}")
    return 0


def _confirm(everything: bool) -> bool:
    which = "all local volumes" if everything else "anonymous local volumes"
    print(f"WARNING! This will remove {which} not used by at least one container.")
    try:
        answer = input("Are you sure you want to continue? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


_VERBS = {"ls": _list, "inspect": _inspect, "create": _create, "rm": _remove, "prune": _prune}


def _parse_filters(items: list[str], known: tuple[str, ...]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for item in items:
        key, equals, value = item.partition("=")
        # `label!=x` splits as `label!` and `x`, which is how it is looked up.
        if not equals or not key:
            raise StackError(f"bad format of filter {item!r}", hint="expected KEY=VALUE")
        if key not in known:
            raise StackError(f"invalid filter {key!r}", hint="use one of " + ", ".join(known))
        filters.setdefault(key, []).append(value)
    return filters


def _boolean(key: str, value: str) -> bool:
    text = value.lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise StackError(f"invalid filter '{key}={value}'", hint="use true or false")


def _key_value(item: str, option: str) -> tuple[str, str]:
    key, _, value = item.partition("=")
    if not key:
        raise StackError(f"{option} {item!r}: expected KEY=VALUE")
    return key, value


def _human_size(size: int) -> str:
    """Sizes as docker prints them: decimal units, three significant digits."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")
