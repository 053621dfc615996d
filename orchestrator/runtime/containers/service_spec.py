"""A service and its image become one container's launch spec, with compose's rules.

The input is one service of the normalized model (the shape `config --format
json` prints) plus its image's config; the output is a `ContainerPlan`: the
validated `LaunchSpec` and the small files the runtime writes before launch.
Every rule here is Docker's or compose's — how an `entrypoint` override drops
the image's CMD, how a null environment value unsets the image's, which
sysctls a container may set — because a stack file must run the same here as
there. Every mistake in the service is one `StackError` naming its key.
Mounts are decided in `service_mounts.py`, privileges and limits in `service_limits.py`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchestrator.runtime.containers import defaults, service_limits
from orchestrator.runtime.containers.etc_files import hosts_file, own_host_names, resolv_conf
from orchestrator.runtime.containers.launchspec import (
    LaunchSpec,
    Mount,
    Namespaces,
    ProcessSpec,
    Rootfs,
    signal_number,
    validate_spec,
)
from orchestrator.runtime.containers.mount_plan import (
    FileToWrite,
    MountContext,
    VolumeUse,
    no_containers,
)
from orchestrator.runtime.containers.service_keys import ServiceKeys
from orchestrator.runtime.containers.service_mounts import plan_mounts, sort_mounts
from orchestrator.runtime.containers.userdb import ResolvedUser, resolve_user
from orchestrator.runtime.images.image_config import ImageConfig
from orchestrator.spec.errors import StackError
from orchestrator.spec.shortsyntax import clean_path
from orchestrator.spec.units import parse_duration

__all__ = ["ContainerPlan", "FileToWrite", "VolumeUse", "build_launch_spec"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class ContainerPlan:
    """The spec, the files to write under the container's directory, the volumes it uses."""

    spec: LaunchSpec
    files: list[FileToWrite]
    volumes: list[VolumeUse]


def build_launch_spec(
    service: Mapping[str, Any],
    image: ImageConfig | None,
    *,
    container_id: str,
    container_name: str,
    project: str,
    project_dir: str,
    service_name: str,
    number: int,
    lowers: Sequence[str],
    state_root: Path,
    volume_path: Callable[[str], Path],
    host_rootfs: str | None = None,
    project_model: Mapping[str, Any] | None = None,
    project_environment: Mapping[str, str] | None = None,
    image_id: str = "",
    config_hash: str = "",
    oneoff: bool = False,
    addresses: Sequence[str] = (),
    embedded_dns: str | None = None,
    join_network: str | None = None,
    anonymous_volumes: Mapping[str, str] | None = None,
    mounts_of: Callable[[str], Sequence[Mount]] = no_containers,
    host_etc: Path = Path("/etc"),
) -> ContainerPlan:
    """Decide everything about one container of `service`, and check it.

    `lowers` are the image's layer dirs, topmost first; `host_rootfs` (else
    the service's `x-stack.rootfs`) replaces them with one host directory.
    `project_model` holds the top-level volumes, configs and secrets;
    `project_environment` gives `environment:`-sourced secrets their value.
    `embedded_dns` is the address of our DNS server for a container on a
    bridge network. `addresses` are the container's own IPs for its
    /etc/hosts line (filled in by networking). `anonymous_volumes` (target -> name) keeps the
    anonymous volumes of the container this one replaces, as compose does.
    `mounts_of` looks up the mounts of the container a `volumes_from` entry
    names (`web` or `container:db`).
    """
    keys = ServiceKeys(service_name, service)
    config = image or _NO_IMAGE
    container_dir = Path(state_root) / "containers" / container_id

    rootfs = _rootfs(keys, lowers, host_rootfs, project_dir, state_root)
    namespaces = _namespaces(keys, join_network)
    hostname = _hostname(keys, container_id, namespaces)
    domainname = keys.get("domainname", "")
    privileged = bool(keys.get("privileged"))
    user = _user(keys, config, rootfs.lowers)
    tty = bool(keys.get("tty"))
    process = ProcessSpec(
        argv=_argv(keys, config),
        env=_environment(keys, config, hostname, user, tty),
        cwd=_working_dir(keys, config),
        uid=user.uid,
        gid=user.gid,
        additional_gids=user.additional_gids,
        capabilities=service_limits.capabilities(keys, privileged),
        no_new_privileges=service_limits.no_new_privileges(keys),
        rlimits=service_limits.rlimits(keys),
        tty=tty,
        stdin_open=bool(keys.get("stdin_open")),
    )

    context = MountContext(
        container_dir=container_dir,
        project_model=project_model or _EMPTY,
        project_environment=project_environment or _EMPTY,
        volume_path=volume_path,
        anonymous_volumes=anonymous_volumes or _EMPTY,
        mounts_of=mounts_of,
    )
    planned = plan_mounts(keys, image, context)
    # hosts, hostname and resolv.conf are bound by the launcher from the container's
    # directory, over the service's mounts, unless the service mounts that very file.
    files = _etc_files(
        keys, hostname, domainname, namespaces, addresses, host_etc, embedded_dns
    )
    files += planned.files

    log_size, log_files = service_limits.log_rotation(keys)
    spec = LaunchSpec(
        id=container_id,
        name=container_name,
        rootfs=rootfs,
        process=process,
        hostname=hostname,
        domainname=domainname,
        mounts=sort_mounts(planned.mounts),
        masked_paths=() if privileged else defaults.MASKED_PATHS,
        readonly_paths=() if privileged else defaults.READONLY_PATHS,
        namespaces=namespaces,
        resources=service_limits.resources(keys),
        sysctls=service_limits.sysctls(keys, namespaces),
        privileged=privileged,
        init=bool(keys.get("init")),
        stop_signal=_stop_signal(keys, config),
        stop_grace_period=_stop_grace_period(keys),
        shm_size=service_limits.byte_size(keys, "shm_size") or defaults.DEFAULT_SHM_SIZE,
        log_max_size=log_size, log_max_files=log_files,
        image=keys.get("image", ""),
        image_id=image_id,
        labels=_labels(keys, config, project, project_dir, number, config_hash, oneoff),
    )
    validate_spec(spec)
    return ContainerPlan(spec, files, planned.volumes)


_NO_IMAGE = ImageConfig(os="linux", architecture="")


# ---- root, namespaces, names ----------------------------------------------------------------


def _rootfs(
    keys: ServiceKeys,
    lowers: Sequence[str],
    host_rootfs: str | None,
    project_dir: str,
    state_root: Path,
) -> Rootfs:
    read_only = bool(keys.get("read_only"))
    if host_rootfs is None:
        extension = keys.get("x-stack", {})
        host_rootfs = extension.get("rootfs") if isinstance(extension, Mapping) else None
    if host_rootfs is None:
        return Rootfs(lowers=tuple(str(layer) for layer in lowers), read_only=read_only)
    path = clean_path(os.path.join(project_dir, str(host_rootfs)))
    if not os.path.isdir(path):
        raise keys.error(("x-stack", "rootfs"), f"rootfs {path} is not a directory")
    masked = defaults.host_rootfs_masks(path, state_root)
    return Rootfs(lowers=(path,), read_only=read_only, masked=masked)


def _namespaces(keys: ServiceKeys, join_network: str | None = None) -> Namespaces:
    network = keys.get("network_mode", "")
    if network in ("", "bridge", "none", "default"):
        net = "new"
    elif network == "host":
        net = "host"
    elif network.startswith(("service:", "container:")) and join_network:
        net = f"container:{join_network}"  # the keeper finds its namespace at each start
    else:
        raise _not_supported(keys, "network_mode", network)
    ipc = keys.get("ipc", "")
    if ipc not in ("", "private", "shareable", "host"):
        raise _not_supported(keys, "ipc", ipc)
    pid = keys.get("pid", "")
    if pid not in ("", "host"):
        raise _not_supported(keys, "pid", pid)
    uts = keys.get("uts", "")
    if uts not in ("", "host"):
        raise _not_supported(keys, "uts", uts)
    # On the host's network a container answers to the host's name, as in
    # Docker; sharing the host's UTS namespace gives it that without a copy,
    # unless the service names itself.
    names_itself = keys.get("hostname") or keys.get("domainname")
    share_uts = uts == "host" or (net == "host" and not names_itself)
    return Namespaces(
        net=net,
        ipc="host" if ipc == "host" else "new",
        pid="host" if pid == "host" else "new",
        uts="host" if share_uts else "new",
    )


def _not_supported(keys: ServiceKeys, key: str, value: Any) -> StackError:
    return keys.error(key, f"{key} {value!r} is not supported yet")


def _hostname(keys: ServiceKeys, container_id: str, namespaces: Namespaces) -> str:
    hostname = keys.get("hostname", "")
    on_host = namespaces.uts == "host" or namespaces.net == "host"
    if not hostname:
        return socket.gethostname() if on_host else container_id[:12]
    if namespaces.uts == "host":
        raise keys.error("hostname", f"hostname {hostname!r} cannot be set with uts: host")
    if len(hostname) > 64:  # the kernel's limit for a UTS name
        raise keys.error("hostname", f"hostname {hostname!r} is longer than 64 characters")
    return str(hostname)


def _labels(
    keys: ServiceKeys,
    config: ImageConfig,
    project: str,
    project_dir: str,
    number: int,
    config_hash: str,
    oneoff: bool,
) -> tuple[tuple[str, str], ...]:
    """The image's labels, the service's over them, compose's own over both."""
    labels = {**config.labels, **{k: str(v) for k, v in keys.get("labels", {}).items()}}
    labels.update(
        {
            "com.docker.compose.project": project,
            "com.docker.compose.service": keys.name,
            "com.docker.compose.container-number": str(number),
            "com.docker.compose.oneoff": "True" if oneoff else "False",
            "com.docker.compose.project.working_dir": project_dir,
        }
    )
    if config_hash:
        labels["com.docker.compose.config-hash"] = config_hash
    return tuple(sorted(labels.items()))


# ---- the process ----------------------------------------------------------------------------


def _argv(keys: ServiceKeys, config: ImageConfig) -> tuple[str, ...]:
    """Docker's merge: a non-empty entrypoint drops the image's CMD; `entrypoint: []`
    drops the image's ENTRYPOINT but keeps its CMD; an empty command is no command."""
    entrypoint = keys.settings.get("entrypoint")
    command = keys.settings.get("command")
    if entrypoint:
        argv = [*entrypoint, *(command or ())]
    else:
        image_entrypoint = config.entrypoint if entrypoint is None else ()
        argv = [*(image_entrypoint or ()), *(command or config.cmd or ())]
    if not argv:
        raise keys.error(
            (), "no command specified", "set command: or entrypoint:, or use an image with a CMD"
        )
    return tuple(str(word) for word in argv)


def _environment(
    keys: ServiceKeys, config: ImageConfig, hostname: str, user: ResolvedUser, tty: bool
) -> tuple[str, ...]:
    """Docker's defaults, the image's Env over them, the service's over that.

    A service variable with no value (null: not set where compose ran)
    unsets the variable, the image's too, as in Docker. HOME comes from the
    user's passwd entry when nothing else set it.
    """
    env: dict[str, str] = {"PATH": defaults.DEFAULT_PATH, "HOSTNAME": hostname}
    if tty:
        env["TERM"] = "xterm"
    for entry in config.env:
        key, sep, value = entry.partition("=")
        if sep:
            env[key] = value
        else:
            env.pop(key, None)
    for key, value in keys.get("environment", {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    env.setdefault("HOME", user.home)
    return tuple(f"{key}={value}" for key, value in env.items())


def _working_dir(keys: ServiceKeys, config: ImageConfig) -> str:
    if keys.get("working_dir"):
        key, value = "working_dir", keys.get("working_dir")
    else:
        key, value = "image", config.working_dir or "/"
    if not str(value).startswith("/"):
        raise keys.error(
            key, f"the working directory {value!r} is invalid, it needs to be an absolute path"
        )
    return clean_path(str(value))


def _user(keys: ServiceKeys, config: ImageConfig, lowers: Sequence[str]) -> ResolvedUser:
    from_image = not keys.get("user")
    spec = config.user if from_image else str(keys.get("user"))
    group_add = [str(group) for group in keys.get("group_add", [])]
    try:
        return resolve_user(spec, group_add, lowers)
    except StackError as error:
        where = tuple(error.path or ("user",))
        if from_image and where == ("user",):
            where = ("image",)
        raise keys.error(where, error.message, error.hint) from None


def _stop_signal(keys: ServiceKeys, config: ImageConfig) -> str:
    key = "stop_signal" if keys.get("stop_signal") else "image"
    name = keys.get("stop_signal") or config.stop_signal or defaults.DEFAULT_STOP_SIGNAL
    try:
        signal_number(str(name))
    except StackError as error:
        raise keys.error(key, f"invalid stop signal {name!r}", error.hint) from None
    return str(name)


def _stop_grace_period(keys: ServiceKeys) -> float:
    text = keys.get("stop_grace_period")
    if text is None:
        return defaults.DEFAULT_STOP_GRACE_PERIOD
    try:
        nanoseconds = parse_duration(str(text))
    except ValueError as error:
        raise keys.error("stop_grace_period", str(error), "write a duration like 10s") from None
    if nanoseconds < 0:
        raise keys.error("stop_grace_period", f"stop_grace_period {text!r} is negative")
    return nanoseconds / 1e9


# ---- /etc files -------------------------------------------------------------------------


def _etc_files(
    keys: ServiceKeys,
    hostname: str,
    domainname: str,
    namespaces: Namespaces,
    addresses: Iterable[str],
    host_etc: Path,
    embedded_dns: str | None = None,
) -> list[FileToWrite]:
    """hosts, hostname and resolv.conf for the container's directory.

    On the host's network they start from the host's own files, as Docker's
    do. Otherwise /etc/hosts gets its own line once networking gives the
    container `addresses`. On a bridge network the only nameserver is our
    DNS server (`embedded_dns`); the service's `dns:` servers become that
    server's upstreams for this container, as with Docker's embedded DNS.
    """
    extra = []
    for index, entry in enumerate(keys.get("extra_hosts", [])):
        name, _, address = str(entry).partition("=")
        if address == "host-gateway":
            raise keys.error(
                ("extra_hosts", index),
                "host-gateway is not supported yet",
                "write the host's address instead",
            )
        extra.append((name, address))
    on_host = namespaces.net == "host"
    base = _read_text(host_etc / "hosts") if on_host else None
    names = own_host_names(hostname, domainname)
    hosts = hosts_file(extra, [(address, names) for address in addresses], base)
    resolv = resolv_conf(
        _read_text(host_etc / "resolv.conf") or "",
        nameservers=[embedded_dns] if embedded_dns else [str(s) for s in keys.get("dns", [])],
        search=[str(domain) for domain in keys.get("dns_search", [])],
        options=[str(option) for option in keys.get("dns_opt", [])],
        keep_loopback=on_host,
    )
    return [
        FileToWrite("hosts", hosts),
        FileToWrite("hostname", f"{hostname}\n".encode()),
        FileToWrite("resolv.conf", resolv),
    ]


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
