"""Named volumes: folders under the state root that outlive the containers using them.

Layout under `root` (the state root's `volumes/`):

    <name>/_data         the contents, bind-mounted into containers (root, 0755)
    <name>/volume.json   what `stack volume inspect` shows, shaped like Docker's
    .lock                one fcntl lock for every change to the folder
    .creating            a volume being assembled (litter after a crash, removed on reuse)
    .removing-<random>   a volume on its way out (renamed first, so it vanishes at once)

A volume appears by renaming a complete `.creating` folder to its name, so no
reader ever sees one without its volume.json. A folder that has none anyway
(edited by hand, a disk error) is skipped by `list`, repaired by `create`,
and still removable by `rm`, so it never stops the rest from working.

Only Docker's `local` driver exists here. Its bind form (`type=none, o=bind,
device=/path`) is honoured: the options are recorded and `path()` answers the
device, so containers bind the host folder; `_data` stays an empty stand-in and
removing the volume never touches the device's files. Other driver options
(nfs, tmpfs, ...) are refused when the volume is created.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.runtime.images.store_files import file_lock, fsync_dir, write_atomic
from orchestrator.spec.errors import StackError

ANONYMOUS_LABEL = "com.docker.volume.anonymous"
NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_BIND_OPTIONS = frozenset({"type", "o", "device"})


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: str  # the `_data` folder
    created_at: str  # RFC 3339, UTC
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    driver: str = "local"
    scope: str = "local"

    @property
    def path(self) -> Path:
        """What containers bind: the device of a bind-style volume, else `_data`."""
        device = self.options.get("device")
        return Path(device) if device else Path(self.mountpoint)

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    def to_json(self) -> dict[str, Any]:
        """The shape `docker volume inspect` prints, keys in its order."""
        return {
            "CreatedAt": self.created_at,
            "Driver": self.driver,
            "Labels": dict(self.labels),
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": dict(self.options),
            "Scope": self.scope,
        }


def validate_volume_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name) or len(name) > 255:
        raise StackError(
            f"invalid volume name {name!r}",
            hint="use letters, digits, '_', '.' and '-', starting with a letter or digit, "
            "at least two characters; a host folder needs an absolute path",
        )


def validate_volume(
    name: str, driver: str = "local", options: dict[str, str] | None = None
) -> None:
    """Refuse what `create` would refuse, so a caller can check before it makes anything."""
    validate_volume_name(name)
    if driver != "local":
        raise StackError(f"volume driver {driver} is not supported",
                         hint="only the 'local' driver exists")
    _check_options(name, dict(options or {}))


def labels_match(labels: dict[str, str], selector: str) -> bool:
    """`key` matches a volume that has the label, `key=value` one with that value."""
    key, equals, value = selector.partition("=")
    if not equals:
        return key in labels
    return labels.get(key) == value


class VolumeStore:
    """The volumes folder of one state root. Synchronous: async callers use trio.to_thread.

    `in_use(name)` answers the names of the containers (running or not) whose
    config mounts the volume; `remove` and `prune` never take one it names.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, in_use: Callable[[str], list[str]] | None = None
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.root.mkdir(parents=True, exist_ok=True)
        self._in_use = in_use or (lambda name: [])

    def create(
        self,
        name: str | None = None,
        *,
        labels: dict[str, str] | None = None,
        driver: str = "local",
        driver_opts: dict[str, str] | None = None,
        anonymous: bool = False,
    ) -> Volume:
        """The volume `name`, made if missing; no name makes an anonymous one with a random name.

        Like Docker, creating a volume that exists returns it as it is: labels
        and options given now are not applied to it.
        """
        if name is None:
            name, anonymous = secrets.token_hex(32), True
        options = dict(driver_opts or {})
        validate_volume(name, driver, options)
        labels = dict(labels or {})
        if anonymous:
            labels.setdefault(ANONYMOUS_LABEL, "")
        with self._locked():
            final = self.root / name
            if final.is_dir():
                existing = self._read(name)
                if existing is not None:
                    return existing
                return self._repair(name, labels, options)
            if os.path.lexists(final):
                raise StackError(f"cannot create volume {name}: {final} is in the way",
                                 hint="it is not a volume folder; move it elsewhere")
            staging = self.root / ".creating"
            _remove_tree(staging)  # litter of a create that crashed: we hold the lock
            (staging / "_data").mkdir(parents=True)
            os.chmod(staging / "_data", 0o755)
            volume = self._new_volume(name, labels, options)
            self._write(staging, volume)
            fsync_dir(staging)
            os.rename(staging, final)
            fsync_dir(self.root)
            return volume

    def get(self, name: str) -> Volume:
        volume = self._read(name)
        if volume is None:
            if (self.root / name).is_dir() and NAME_PATTERN.fullmatch(name):
                raise StackError(f"volume {name} is damaged: its volume.json is unreadable",
                                 hint=f"`stack volume create {name}` repairs it, keeping the data")
            raise StackError(f"no such volume: {name}")
        return volume

    def list(self) -> list[Volume]:
        """Every readable volume, by name."""
        found = []
        for entry in sorted(os.listdir(self.root)):
            volume = self._read(entry)
            if volume is not None:
                found.append(volume)
        return found

    def path(self, name: str) -> Path:
        """The folder containers bind for `name` (see `Volume.path`)."""
        return self.get(name).path

    def remove(self, name: str, *, force: bool = False) -> None:
        """Delete a volume and its data. As with Docker, `force` forgives a missing
        volume but never takes one a container uses."""
        doomed = self._take_out(name, missing_ok=force)
        if doomed is not None:
            _remove_tree(doomed)

    def prune(
        self,
        *,
        all_: bool = False,
        labels: Sequence[str] = (),
        without_labels: Sequence[str] = (),
    ) -> tuple[list[str], int]:
        """Remove the volumes no container uses: only anonymous ones unless `all_`
        (Docker ≥ 23). `labels` must all match, `without_labels` none.
        The names removed and the bytes their data took."""
        removed: list[str] = []
        reclaimed = 0
        for volume in self.list():
            if not (all_ or volume.anonymous):
                continue
            if not all(labels_match(volume.labels, s) for s in labels):
                continue
            if any(labels_match(volume.labels, s) for s in without_labels):
                continue
            try:
                doomed = self._take_out(volume.name, missing_ok=True)
            except StackError:  # a container started using it since we listed
                continue
            if doomed is not None:
                reclaimed += tree_size(doomed / "_data")
                _remove_tree(doomed)
                removed.append(volume.name)
        self._clean_litter()
        return removed, reclaimed

    def _take_out(self, name: str, *, missing_ok: bool) -> Path | None:
        """Rename the volume out of sight (refusing one in use): where it now is."""
        with self._locked():
            final = self.root / name
            if not NAME_PATTERN.fullmatch(name) or not final.is_dir():
                if missing_ok:
                    return None
                raise StackError(f"no such volume: {name}")
            users = self._in_use(name)
            if users:
                raise StackError(f"remove {name}: volume is in use - [{', '.join(users)}]",
                                 hint="remove those containers first")
            doomed = self.root / f".removing-{secrets.token_hex(8)}"
            os.rename(final, doomed)
            fsync_dir(self.root)
            return doomed

    def _clean_litter(self) -> None:
        """Finish removals a crash interrupted."""
        for entry in os.listdir(self.root):
            if entry.startswith(".removing-"):
                _remove_tree(self.root / entry)

    def _read(self, name: str) -> Volume | None:
        if not NAME_PATTERN.fullmatch(name):
            return None
        try:
            document = json.loads((self.root / name / "volume.json").read_bytes())
            return Volume(
                name=name,
                mountpoint=str(self.root / name / "_data"),
                created_at=str(document["CreatedAt"]),
                labels=_string_map(document.get("Labels")),
                options=_string_map(document.get("Options")),
                driver=str(document.get("Driver", "local")),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _repair(self, name: str, labels: dict[str, str], options: dict[str, str]) -> Volume:
        """Give a volume folder that lost its volume.json a new one, keeping its data."""
        data = self.root / name / "_data"
        if not data.is_dir():
            data.mkdir(mode=0o755)
        volume = self._new_volume(name, labels, options)
        self._write(self.root / name, volume)
        return volume

    def _new_volume(self, name: str, labels: dict[str, str], options: dict[str, str]) -> Volume:
        created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        return Volume(name=name, mountpoint=str(self.root / name / "_data"), created_at=created,
                      labels=labels, options=options)

    def _write(self, folder: Path, volume: Volume) -> None:
        document = {
            "Name": volume.name,
            "Driver": volume.driver,
            "Mountpoint": volume.mountpoint,
            "CreatedAt": volume.created_at,
            "Labels": volume.labels,
            "Options": volume.options,
            "Scope": volume.scope,
        }
        data = (json.dumps(document, indent=2) + "\n").encode()
        write_atomic(folder / "volume.json", data, folder)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.root / ".lock")


def tree_size(path: Path) -> int:
    """Bytes of the files under `path`, each hard-linked file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, dirs, files in os.walk(path):
        for entry in (*dirs, *files):
            try:
                info = os.lstat(os.path.join(folder, entry))
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def _check_options(name: str, options: dict[str, str]) -> None:
    if not options:
        return
    hint = "only a bind of a host folder is supported: type=none, o=bind, device=/absolute/path"
    unknown = sorted(set(options) - _BIND_OPTIONS)
    if unknown:
        raise StackError(f"volume {name}: driver option {unknown[0]!r} is not supported",
                         hint=hint)
    kind = options.get("type", "")
    if kind not in ("none", ""):
        raise StackError(f"volume {name}: driver option type={kind} is not supported", hint=hint)
    flags = set(options.get("o", "").split(","))
    if not flags & {"bind", "rbind"} or flags - {"bind", "rbind"}:
        raise StackError(f"volume {name}: driver option o={options.get('o', '')} is not "
                         "supported", hint=hint)
    device = options.get("device", "")
    if not device.startswith("/"):
        raise StackError(f"volume {name}: driver option device={device} must be an absolute "
                         "path", hint=hint)


def _string_map(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError("not a mapping")
    return {str(k): str(v) for k, v in value.items()}


def _remove_tree(path: Path) -> None:
    """Delete `path`; a part already gone (another process finishing the same
    removal) is not an error."""

    def gone_is_fine(function: Callable[..., Any], name: str, info: Any) -> None:
        if not isinstance(info[1], FileNotFoundError):
            raise info[1]

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=gone_is_fine)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

