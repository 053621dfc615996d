"""What a service mounts: volumes, binds, tmpfs, configs, secrets and its /etc files.

Part of turning a service into a launch spec (`service_spec.py`). Every mount
is decided here with compose's and Docker's rules, and every file the runtime
must write first (configs and secrets given as text, /etc/hosts,
/etc/hostname, /etc/resolv.conf) comes back as a `FileToWrite`, so nothing
here writes to the disk: it only reads the host files a service names.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers.launchspec import PROPAGATIONS, Mount
from orchestrator.runtime.images.image_config import ImageConfig
from orchestrator.spec.errors import StackError, format_path
from orchestrator.spec.shortsyntax import clean_path

HOSTS_DEFAULTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)
FILE_DEFAULTS = {"configs": "/", "secrets": "/run/secrets/"}  # where a relative target goes
_TMPFS_FLAGS = {
    "ro": ("read_only", True), "rw": ("read_only", False),
    "noexec": ("noexec", True), "exec": ("noexec", False),
    "nosuid": ("nosuid", True), "suid": ("nosuid", False),
    "nodev": ("nodev", True), "dev": ("nodev", False),
}  # fmt: skip
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge", "mpol")
_KERNEL_SIZE = re.compile(r"^[0-9]+[kKmMgGtTpPeE%]?$")


@dataclass(frozen=True)
class FileToWrite:
    """A file the runtime writes under the container's directory before launch."""

    path: str  # relative to the container's directory: "hosts", "files/secrets/0-db"
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class VolumeUse:
    """A volume the container mounts; the runtime creates it when it does not exist."""

    name: str
    target: str
    anonymous: bool = False


@dataclass(frozen=True)
class ServiceKeys:
    """One service's settings, and errors that point at them (`services.web.user: …`)."""

    name: str
    settings: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.settings.get(key)
        return default if value is None else value

    def error(
        self, key: str | tuple[str | int, ...], message: str, hint: str | None = None
    ) -> StackError:
        where = key if isinstance(key, tuple) else (key,)
        return StackError(message, path=("services", self.name, *where), hint=hint)


@dataclass
class MountPlan:
    mounts: list[Mount] = field(default_factory=list)
    files: list[FileToWrite] = field(default_factory=list)
    volumes: list[VolumeUse] = field(default_factory=list)
    owners: dict[str, tuple[str | int, ...]] = field(default_factory=dict)  # target -> key

    def add(self, keys: ServiceKeys, mount: Mount, where: tuple[str | int, ...]) -> None:
        """One mount per container path: a second one there is the user's mistake."""
        if mount.target in self.owners:
            first = format_path(("services", keys.name, *self.owners[mount.target]))
            raise keys.error(
                where,
                f"{mount.target} is already mounted by {first}",
                "each container path takes one mount",
            )
        self.owners[mount.target] = where
        self.mounts.append(mount)


def no_containers(reference: str) -> Sequence[Mount]:
    """The answer for `volumes_from` where no container can be looked up."""
    raise StackError(f"no container to take volumes from: {reference}")


@dataclass(frozen=True)
class MountContext:
    """What deciding the mounts needs beyond the service itself.

    `mounts_of` answers the mounts of the container a `volumes_from` entry
    names (`web` for a service's container, `container:db` for one by name),
    or raises a StackError when there is none.
    """

    container_dir: Path
    project_model: Mapping[str, Any]
    project_environment: Mapping[str, str]
    volume_path: Callable[[str], Path]
    anonymous_volumes: Mapping[str, str]  # target -> name, kept from a replaced container
    new_volume_name: Callable[[], str] = lambda: secrets.token_hex(32)
    mounts_of: Callable[[str], Sequence[Mount]] = no_containers


def plan_mounts(keys: ServiceKeys, image: ImageConfig | None, context: MountContext) -> MountPlan:
    """The service's tmpfs, volumes, configs and secrets, then what `volumes_from` shares
    and the image's VOLUMEs, each where nothing before it is mounted already."""
    plan = MountPlan()
    for index, entry in enumerate(keys.get("tmpfs", [])):
        plan.add(keys, _short_tmpfs(keys, index, str(entry)), ("tmpfs", index))
    for index, entry in enumerate(keys.get("volumes", [])):
        plan.add(keys, _volume(keys, index, entry, context, plan), ("volumes", index))
    for kind in ("configs", "secrets"):
        for index, reference in enumerate(keys.get(kind, [])):
            plan.add(keys, _file_object(keys, kind, index, reference, context, plan), (kind, index))
    # As in Docker, the service's own mounts win over the ones another container shares.
    for index, entry in enumerate(keys.get("volumes_from", [])):
        for mount in _volumes_from(keys, index, str(entry), context):
            if mount.target not in plan.owners:
                plan.add(keys, mount, ("volumes_from", index))
    # Docker gives each VOLUME of the image that nothing else covers an anonymous volume.
    for path in image.volumes if image else ():
        target = clean_path(path)
        if target not in plan.owners:
            mount = _volume_mount(keys, ("image",), target, None, {}, False, context, plan)
            plan.add(keys, mount, ("image",))
    return plan


def sort_mounts(mounts: Sequence[Mount]) -> tuple[Mount, ...]:
    """Parents before children (`/a` before `/a/b`), otherwise in the order given."""
    return tuple(sorted(mounts, key=lambda m: len([p for p in m.target.split("/") if p])))


# ---- volumes, binds, tmpfs ----------------------------------------------------------------


def _volume(
    keys: ServiceKeys, index: int, entry: Any, context: MountContext, plan: MountPlan
) -> Mount:
    where = ("volumes", index)
    if not isinstance(entry, dict):
        raise keys.error(where, f"invalid volume {entry!r}", "write SOURCE:TARGET[:OPTIONS]")
    target = _target(keys, where, entry.get("target"))
    kind = entry.get("type", "volume")
    read_only = bool(entry.get("read_only"))
    if kind == "bind":
        return _bind(keys, where, entry, target, read_only)
    if kind == "volume":
        options = entry.get("volume") or {}
        return _volume_mount(
            keys, where, target, entry.get("source"), options, read_only, context, plan
        )
    if kind == "tmpfs":
        options = entry.get("tmpfs") or {}
        data = []
        if options.get("size") is not None:
            data.append(f"size={_integer(keys, (*where, 'tmpfs', 'size'), options['size'])}")
        if options.get("mode") is not None:
            data.append(f"mode={_integer(keys, (*where, 'tmpfs', 'mode'), options['mode']):o}")
        return Mount(
            target,
            kind="tmpfs",
            source="tmpfs",
            read_only=read_only,
            data=",".join(data),
            nosuid=True,
            noexec=True,
            origin="tmpfs",
        )
    raise keys.error(
        (*where, "type"), f"volume type {kind!r} is not supported", "use bind, volume or tmpfs"
    )


def _target(keys: ServiceKeys, where: tuple[str | int, ...], target: Any) -> str:
    if not isinstance(target, str) or not target.startswith("/"):
        raise keys.error(where, f"mount target {target!r} must be an absolute path")
    target = clean_path(target)
    if target == "/":
        raise keys.error(where, "a mount target cannot be '/'")
    return target


def _bind(
    keys: ServiceKeys, where: tuple[str | int, ...], entry: dict, target: str, read_only: bool
) -> Mount:
    source = entry.get("source")
    options = entry.get("bind") or {}
    if not isinstance(source, str) or not source.startswith("/"):
        raise keys.error(where, f"bind source {source!r} must be an absolute path")
    create_source = options.get("create_host_path") is True
    if not os.path.exists(source) and not create_source:
        raise keys.error(
            where,
            f"bind source path does not exist: {source}",
            "create it, or set bind.create_host_path: true",
        )
    propagation = options.get("propagation") or "rprivate"
    if propagation not in PROPAGATIONS:
        raise keys.error(
            (*where, "bind", "propagation"),
            f"invalid propagation {propagation!r}",
            "use one of " + ", ".join(PROPAGATIONS),
        )
    if options.get("recursive") not in (None, "enabled"):
        raise keys.error(
            (*where, "bind", "recursive"),
            f"bind.recursive {options['recursive']!r} is not supported",
        )
    # A bind of a file needs a file to mount over; a missing source will be a directory.
    create = "file" if os.path.exists(source) and not os.path.isdir(source) else "dir"
    return Mount(
        target,
        source=source,
        read_only=read_only,
        propagation=propagation,
        create=create,
        nodev=False,
        create_source=create_source,
        origin="bind",
    )


def _volume_mount(
    keys: ServiceKeys,
    where: tuple[str | int, ...],
    target: str,
    source: Any,
    options: Mapping[str, Any],
    read_only: bool,
    context: MountContext,
    plan: MountPlan,
) -> Mount:
    """A named or anonymous volume: a bind of its data folder, filled from the image once."""
    if source:
        declared_volumes = context.project_model.get("volumes") or {}
        if source not in declared_volumes:
            raise keys.error(
                where, f"undefined volume {source!r}", "declare it under the top-level volumes:"
            )
        name = (declared_volumes[source] or {}).get("name") or source
        plan.volumes.append(VolumeUse(name, target))
    else:
        name = context.anonymous_volumes.get(target) or context.new_volume_name()
        plan.volumes.append(VolumeUse(name, target, anonymous=True))
    path = Path(context.volume_path(name))
    subpath = options.get("subpath")
    if subpath:
        parts = clean_path(str(subpath)).split("/")
        if str(subpath).startswith("/") or ".." in parts:
            raise keys.error(
                (*where, "volume", "subpath"),
                f"volume subpath {subpath!r} must stay inside the volume",
            )
        path = path / "/".join(parts)
    # Docker copies the image's files into an empty volume, never into a subpath.
    copy_up = not options.get("nocopy") and not subpath
    return Mount(
        target, source=str(path), read_only=read_only, nodev=False, copy_up=copy_up,
        origin="volume",
    )


def _short_tmpfs(keys: ServiceKeys, index: int, entry: str) -> Mount:
    """`/run` or `/tmp:size=64m,mode=1777,exec`: noexec, nosuid, nodev unless said otherwise."""
    where = ("tmpfs", index)
    target_text, _, option_text = entry.partition(":")
    target = _target(keys, where, target_text)
    flags = {"read_only": False, "noexec": True, "nosuid": True, "nodev": True}
    data = []
    for option in filter(None, option_text.split(",")):
        name, sep, value = option.partition("=")
        if not sep and name in _TMPFS_FLAGS:
            flag, setting = _TMPFS_FLAGS[name]
            flags[flag] = setting
        elif sep and name in _TMPFS_DATA:
            if name == "size" and not _KERNEL_SIZE.match(value):
                raise keys.error(where, f"invalid tmpfs size {value!r}", "write e.g. 64m or 50%")
            if name == "mode" and not re.fullmatch(r"[0-7]{1,4}", value):
                raise keys.error(where, f"invalid tmpfs mode {value!r}", "write it in octal: 1777")
            data.append(option)
        else:
            raise keys.error(
                where, f"unknown tmpfs option {option!r}", "use size=, mode=, ro, exec, suid or dev"
            )
    return Mount(
        target, kind="tmpfs", source="tmpfs", data=",".join(data), origin="tmpfs", **flags
    )


def _volumes_from(
    keys: ServiceKeys, index: int, entry: str, context: MountContext
) -> list[Mount]:
    """The volumes and binds of the container `entry` names (`web`, `web:ro`,
    `container:db`, `container:db:rw`); a mode makes them all read-only or writable,
    no mode keeps each one's own. Its tmpfs, configs and secrets stay its own."""
    where = ("volumes_from", index)
    if entry.startswith("container:"):
        name, _, mode = entry[len("container:") :].partition(":")
        reference = f"container:{name}"
    else:
        reference, _, mode = entry.partition(":")
    if mode not in ("", "ro", "rw"):
        raise keys.error(where, f"invalid volumes_from mode {mode!r} in {entry!r}", "use ro or rw")
    try:
        mounts = context.mounts_of(reference)
    except StackError as error:
        raise keys.error(where, error.message, error.hint) from None
    shared = [m for m in mounts if m.origin in ("volume", "bind")]
    if mode:
        shared = [dataclasses.replace(m, read_only=mode == "ro") for m in shared]
    return shared


def _integer(keys: ServiceKeys, where: tuple[str | int, ...], value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise keys.error(where, f"expected a number, not {value!r}") from None
    if number < 0:
        raise keys.error(where, f"must not be negative, not {number}")
    return number


# ---- configs and secrets ----------------------------------------------------------------


def _file_object(
    keys: ServiceKeys, kind: str, index: int, reference: Any, context: MountContext, plan: MountPlan
) -> Mount:
    """One config or secret: a bind of its file, or a file written from its text.

    As compose does, a `file:` source is bound as it is (later edits show);
    text from `content:` or `environment:` is written with uid, gid and mode.
    Unlike compose, which ignores them there, uid/gid/mode on a file source
    are honoured by writing a copy.
    """
    where = (kind, index)
    singular = kind[:-1]
    if isinstance(reference, str):
        reference = {"source": reference}
    source = reference.get("source") if isinstance(reference, dict) else None
    declared = (context.project_model.get(kind) or {}).get(source) if source else None
    if not isinstance(declared, dict):
        raise keys.error(
            where, f"undefined {singular} {source!r}", f"declare it under the top-level {kind}:"
        )
    if declared.get("external"):
        raise keys.error(
            where,
            f"external {kind} are not supported ({source})",
            "give it a file:, environment: or content:",
        )
    for option in ("driver", "template_driver"):
        if declared.get(option):
            raise keys.error(where, f"{kind}.{source}.{option} is not supported")
    target = reference.get("target") or source
    if not target.startswith("/"):
        target = FILE_DEFAULTS[kind] + target
    target = _target(keys, (*where, "target"), target)
    owner_given = any(reference.get(key) is not None for key in ("uid", "gid", "mode"))
    uid = _integer(keys, (*where, "uid"), reference.get("uid") or 0)
    gid = _integer(keys, (*where, "gid"), reference.get("gid") or 0)
    mode = _file_mode(keys, (*where, "mode"), reference.get("mode"))

    if declared.get("environment"):
        variable = declared["environment"]
        if variable not in context.project_environment:
            raise keys.error(
                where,
                f"environment variable {variable} required by {singular} {source} is not set",
                f"set {variable}, or use a file:",
            )
        content = context.project_environment[variable].encode()
    elif declared.get("file"):
        host_file = str(declared["file"])
        if not os.path.exists(host_file):
            raise keys.error(where, f"{singular} {source}: file {host_file} does not exist")
        if not owner_given or not os.path.isfile(host_file):
            create = "dir" if os.path.isdir(host_file) else "file"
            return Mount(
                target, source=host_file, read_only=True, create=create, origin=singular
            )
        content = Path(host_file).read_bytes()
    else:
        content = str(declared.get("content") or "").encode()
    relative = f"files/{kind}/{index}-{source}"
    plan.files.append(FileToWrite(relative, content, mode, uid, gid))
    return Mount(
        target, source=str(context.container_dir / relative), read_only=True, create="file",
        origin=singular,
    )


def _file_mode(keys: ServiceKeys, where: tuple[str | int, ...], mode: Any) -> int:
    if mode is None:
        return 0o444
    try:
        number = int(mode, 8) if isinstance(mode, str) else int(mode)
    except ValueError:
        raise keys.error(where, f"invalid file mode {mode!r}", "write it in octal: 0440") from None
    if not 0 <= number <= 0o7777:
        raise keys.error(where, f"invalid file mode {mode!r}", "write it in octal: 0440")
    return number


# ---- /etc/hosts, /etc/hostname, /etc/resolv.conf ------------------------------------------


def hosts_file(
    extra_hosts: Sequence[tuple[str, str]],
    own: Sequence[tuple[str, str]] = (),
    base: str | None = None,
) -> bytes:
    """/etc/hosts as Docker writes it: loopback and IPv6 names, extra hosts, then our own.

    `own` is the container's addresses with the names they answer to (its
    networks fill it in); `base` replaces the default lines (the host's own
    file, for a container on the host's network).
    """
    lines = [base.rstrip("\n")] if base is not None else [f"{a}\t{n}" for a, n in HOSTS_DEFAULTS]
    lines += [f"{address}\t{name}" for name, address in extra_hosts]
    lines += [f"{address}\t{names}" for address, names in own]
    return ("\n".join(line for line in lines if line) + "\n").encode()


def own_host_names(hostname: str, domainname: str) -> str:
    """The names a container's own /etc/hosts line gives: `fqdn short` or just `hostname`."""
    fqdn = f"{hostname}.{domainname}" if domainname else hostname
    short = fqdn.split(".", 1)[0]
    return f"{fqdn} {short}" if short != fqdn else fqdn


def resolv_conf(
    host_text: str,
    *,
    nameservers: Sequence[str] = (),
    search: Sequence[str] = (),
    options: Sequence[str] = (),
    keep_loopback: bool = False,
) -> bytes:
    """The container's resolv.conf: the host's, minus loopback servers it cannot reach.

    A service's `dns`, `dns_search` and `dns_opt` each replace the host's.
    """
    host_servers: list[str] = []
    host_search: list[str] = []
    host_options: list[str] = []
    for line in host_text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            host_servers.append(words[1])
        elif words[0] in ("search", "domain"):
            host_search = words[1:]  # the last of them wins, as in the resolver
        elif words[0] == "options":
            host_options += words[1:]
    if not keep_loopback:
        host_servers = [s for s in host_servers if not _is_loopback(s)]
    lines = [f"nameserver {server}" for server in nameservers or host_servers]
    if search or host_search:
        lines.append("search " + " ".join(search or host_search))
    if options or host_options:
        lines.append("options " + " ".join(options or host_options))
    return "".join(line + "\n" for line in lines).encode()


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
