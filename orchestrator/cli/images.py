"""`stack image …`: the local image store from the command line.

Until the engine exists these commands open the store under the state root
(`STACK_ROOT`, default /var/lib/stack) themselves; the store's own locks keep
them safe next to each other. Output follows `docker image …`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime

from orchestrator.runtime.images.records import ImageRecord
from orchestrator.runtime.images.reference import familiar_name, short_id
from orchestrator.runtime.images.store import ImageStore

DEFAULT_ROOT = "/var/lib/stack"


def state_root() -> str:
    return os.environ.get("STACK_ROOT") or DEFAULT_ROOT


def run_image(args: argparse.Namespace) -> int:
    verb = args.image_command
    with ImageStore(os.path.join(state_root(), "images"), in_use=_used_by_containers) as store:
        return _VERBS[verb](store, args)


def _used_by_containers(digest: str) -> bool:
    from pathlib import Path

    from orchestrator.runtime.containers.state import images_in_use

    return digest in images_in_use(Path(state_root()) / "containers")


def _list(store: ImageStore, args: argparse.Namespace) -> int:
    rows = []
    for record in sorted(store.images(), key=lambda r: r.created, reverse=True):
        for reference in record.references or [None]:
            rows.append(_row(record, reference))
    if args.quiet:
        seen = dict.fromkeys(row["ID"] for row in rows)
        sys.stdout.write("".join(f"{image_id}\n" for image_id in seen))
    elif args.format == "json":
        sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
    else:
        _table(rows, ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"),
               ("Repository", "Tag", "ID", "CreatedSince", "Size"))
    return 0


def _row(record: ImageRecord, reference: str | None) -> dict[str, str]:
    repository, tag = "<none>", "<none>"
    if reference is not None:
        familiar = familiar_name(reference)
        if "@" in familiar:
            repository = familiar.split("@", 1)[0]
        else:
            repository, _, tag = familiar.rpartition(":")
    return {
        "Repository": repository,
        "Tag": tag,
        "ID": short_id(record.config_digest),
        "CreatedAt": record.created,
        "CreatedSince": _since(record.created),
        "Size": _human_size(record.size),
    }


def _table(rows: list[dict[str, str]], headers: tuple[str, ...], keys: tuple[str, ...]) -> None:
    columns = list(zip(headers, keys, strict=True))
    widths = [max([len(header), *(len(row[key]) for row in rows)]) for header, key in columns]

    def line(cells: list[str]) -> str:
        return "   ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    lines = [line(list(headers)).rstrip()]
    lines.extend(line([row[key] for key in keys]).rstrip() for row in rows)
    sys.stdout.write("\n".join(lines) + "\n")


def _load(store: ImageStore, args: argparse.Namespace) -> int:
    from orchestrator.runtime.images.exchange import load_archive

    source = sys.stdin.buffer if args.input == "-" else args.input
    for record in load_archive(store, source):
        if record.references:
            for reference in record.references:
                print(f"Loaded image: {familiar_name(reference)}")
        else:
            print(f"Loaded image ID: {record.config_digest}")
    return 0


def _save(store: ImageStore, args: argparse.Namespace) -> int:
    from orchestrator.runtime.images.exchange import save_archive

    out = sys.stdout.buffer if args.output == "-" else args.output
    save_archive(store, args.images, out)
    return 0


def _import(store: ImageStore, args: argparse.Namespace) -> int:
    from orchestrator.runtime.images.exchange import import_rootfs

    source = sys.stdin.buffer if args.rootfs == "-" else args.rootfs
    print(import_rootfs(store, source, args.reference).config_digest)
    return 0


def _inspect(store: ImageStore, args: argparse.Namespace) -> int:
    shown = []
    for name in args.images:
        record = store.image(name)
        manifest = json.loads(store.read_blob(record.manifest_digest))
        shown.append({
            "Id": record.config_digest,
            "RepoTags": [familiar_name(r) for r in record.references],
            "ManifestDigest": record.manifest_digest,
            "Created": record.created,
            "Size": record.size,
            "Architecture": record.config.get("architecture"),
            "Os": record.config.get("os"),
            "Config": record.config.get("config") or {},
            "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in record.layers]},
            "Manifest": manifest,
        })
    print(json.dumps(shown, indent=4))
    return 0


def _remove(store: ImageStore, args: argparse.Namespace) -> int:
    for name in args.images:
        for line in store.remove(name, force=args.force):
            print(line)
    return 0


def _tag(store: ImageStore, args: argparse.Namespace) -> int:
    from orchestrator.runtime.images.reference import normalize_reference

    store.tag(normalize_reference(args.target), store.image(args.source).manifest_digest)
    return 0


def _prune(store: ImageStore, args: argparse.Namespace) -> int:
    result = store.prune()
    for digest in result.blobs:
        print(f"deleted: {digest}")
    print(f"Total reclaimed space: {_human_size(result.reclaimed)}")
    return 0


_VERBS = {
    "ls": _list, "load": _load, "save": _save, "import": _import, "inspect": _inspect,
    "rm": _remove, "tag": _tag, "prune": _prune,
}


def _human_size(size: int) -> str:
    """Sizes as docker prints them: decimal units, three significant digits."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _since(created: str) -> str:
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return "N/A"
    seconds = (datetime.now(UTC) - then).total_seconds()
    for unit, length in (("year", 31536000), ("month", 2592000), ("week", 604800),
                         ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "Less than a minute ago"
