"""Which containers use which volumes, read from the containers' own configs.

A container records its launch spec in `containers/<id>/config.json`; a named
volume appears there as a bind mount whose `source` is the volume's folder
(its `_data`, or the device of a bind-style volume). Reading those files,
rather than keeping a second list in the volume store, means the answer can
never drift from what the containers will really mount. A config that is
missing or unreadable (a container half created or half removed) counts as
using nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from orchestrator.runtime.volumes.store import NAME_PATTERN, VolumeStore


def volumes_in_use(state_root: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Volume name -> names of the containers (running or not) that mount it, sorted."""
    root = Path(os.path.abspath(state_root))
    volumes = root / "volumes"
    owners = _sources(volumes)
    users: dict[str, set[str]] = {}
    try:
        containers = sorted(os.listdir(root / "containers"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for container_id in containers:
        config = _read_config(root / "containers" / container_id / "config.json")
        if config is None:
            continue
        name = config.get("name")
        container = name if isinstance(name, str) and name else container_id
        spec = config.get("spec")
        mounts = spec.get("mounts") if isinstance(spec, dict) else None
        for mount in mounts or ():
            source = mount.get("source") if isinstance(mount, dict) else None
            if not isinstance(source, str):
                continue
            volume = owners.get(os.path.normpath(source)) or _volume_of_data(volumes, source)
            if volume is not None:
                users.setdefault(volume, set()).add(container)
    return {volume: sorted(names) for volume, names in sorted(users.items())}


def _sources(volumes: Path) -> dict[str, str]:
    """The folder each readable volume gives containers -> its name."""
    if not volumes.is_dir():
        return {}
    return {os.path.normpath(v.path): v.name for v in VolumeStore(volumes).list()}


def _volume_of_data(volumes: Path, source: str) -> str | None:
    """`<volumes>/<name>/_data` -> name, even for a volume whose volume.json is damaged."""
    data = Path(os.path.normpath(source))
    if data.name == "_data" and data.parent.parent == volumes:
        name = data.parent.name
        return name if NAME_PATTERN.fullmatch(name) else None
    return None


def _read_config(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
