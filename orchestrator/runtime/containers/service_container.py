"""From a service of a stack to a created container: image, volumes, launch spec, folder.

The one place that knows which stores a container draws on. The engine calls
it for every replica it creates; it decides everything (and so can refuse
everything) before it creates anything, and it creates volumes only once the
launch spec is known to be good — and removes the ones it made if the container
cannot be created after all, so a refused container leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers.launchspec import Mount
from orchestrator.runtime.containers.runtime import Container, ContainerRuntime
from orchestrator.runtime.containers.service_spec import VolumeUse, build_launch_spec
from orchestrator.runtime.images.image_config import ImageConfig, parse_image_config
from orchestrator.runtime.images.store import ImageStore
from orchestrator.runtime.network.manager import NetworkManager
from orchestrator.runtime.network.ports import service_ports
from orchestrator.runtime.network.service_networks import service_attachments
from orchestrator.runtime.volumes import VolumeStore, validate_volume
from orchestrator.spec.errors import StackError


def create_service_container(
    runtime: ContainerRuntime,
    images: ImageStore,
    volumes: VolumeStore,
    service: Mapping[str, Any],
    *,
    project: str,
    project_dir: str,
    service_name: str,
    number: int = 1,
    name: str | None = None,
    project_model: Mapping[str, Any] | None = None,
    project_environment: Mapping[str, str] | None = None,
    config_hash: str = "",
    oneoff: bool = False,
    networks: NetworkManager | None = None,
) -> Container:
    """Create (not start) container `number` of `service`. With `networks`, its
    addresses and published ports are reserved first (the networks must exist)."""
    host_rootfs = (service.get("x-stack") or {}).get("rootfs")
    image: ImageConfig | None = None
    lowers: list[str] = []
    image_id = ""
    if not host_rootfs:
        reference = service.get("image")
        if not reference:
            raise StackError(
                f"services.{service_name}: no image to run",
                hint="set image: or x-stack: {rootfs: /}",
            )
        record = images.image(str(reference))
        image = parse_image_config(images.read_blob(record.config_digest), where=str(reference))
        lowers = images.layer_dirs(record)
        image_id = record.manifest_digest
    container_id = secrets.token_hex(32)
    name = name or service.get("container_name") or f"{project}-{service_name}-{number}"
    declared = _declared_volumes(project_model or {})
    attachments = service_attachments(service, service_name, project_model or {})
    join_network = _network_container(runtime, project, service_name, service)
    reservation = None
    if networks is not None and attachments:
        reservation = networks.reserve(
            container_id, name, attachments, service=service_name, project=project,
            hostname=str(service.get("hostname") or ""),
            ports=service_ports(service_name, service.get("ports") or ()),
            dns=[str(server) for server in service.get("dns") or ()],
            link_aliases=_link_aliases(service.get("links") or ()),
        )
    try:
        return _create(
            runtime, volumes, service, image, lowers, image_id, container_id, name, declared,
            project=project, project_dir=project_dir, service_name=service_name,
            number=number, host_rootfs=host_rootfs, project_model=project_model,
            project_environment=project_environment, config_hash=config_hash, oneoff=oneoff,
            addresses=reservation.addresses if reservation else [],
            embedded_dns=_dns_for(networks, container_id if reservation else join_network),
            join_network=join_network,
        )
    except BaseException:
        if reservation is not None and networks is not None:
            networks.release_now(container_id)
        raise


def _create(
    runtime: ContainerRuntime, volumes: VolumeStore, service: Mapping[str, Any],
    image: ImageConfig | None, lowers: list[str], image_id: str, container_id: str, name: str,
    declared: dict[str, _Declared], *, project: str, project_dir: str, service_name: str,
    number: int, host_rootfs: str | None, project_model: Mapping[str, Any] | None,
    project_environment: Mapping[str, str] | None, config_hash: str, oneoff: bool,
    addresses: list[str], embedded_dns: str | None, join_network: str | None,
) -> Container:
    plan = build_launch_spec(
        service, image,
        container_id=container_id,
        container_name=name,
        project=project, project_dir=project_dir, service_name=service_name, number=number,
        lowers=lowers, state_root=runtime.state_root,
        volume_path=lambda volume: _volume_path(volumes, volume, declared.get(volume)),
        host_rootfs=host_rootfs, project_model=project_model,
        project_environment=project_environment, image_id=image_id,
        config_hash=config_hash, oneoff=oneoff, addresses=addresses, embedded_dns=embedded_dns,
        join_network=join_network,
        mounts_of=lambda reference: _mounts_of(runtime, project, reference),
    )
    made = _make_volumes(volumes, plan.volumes, declared, project, service_name)
    metadata = {"project": project, "service": service_name, "number": number}
    try:
        return runtime.create(plan.spec, plan.files, metadata)
    except BaseException:
        _remove_volumes(volumes, made)
        raise


def _link_aliases(links: Any) -> dict[str, str]:
    """compose `links: [db:database, cache]` -> {"database": "db", "cache": "cache"}."""
    aliases = {}
    for entry in links:
        name, _, alias = str(entry).partition(":")
        aliases[alias or name] = name
    return aliases


def _dns_for(networks: NetworkManager | None, container_id: str | None) -> str | None:
    if networks is None or container_id is None:
        return None
    return networks.dns_address(container_id)


def _network_container(
    runtime: ContainerRuntime, project: str, service_name: str, service: Mapping[str, Any]
) -> str | None:
    """The id of the container whose network `network_mode: service:X|container:X` shares."""
    mode = str(service.get("network_mode") or "")
    if not mode.startswith(("service:", "container:")):
        return None
    try:
        return _referenced(runtime, project, mode.removeprefix("service:")).id
    except StackError as error:
        raise StackError(error.message, path=("services", service_name, "network_mode"),
                         hint=error.hint) from None


def _mounts_of(runtime: ContainerRuntime, project: str, reference: str) -> tuple[Mount, ...]:
    """The mounts of the container a `volumes_from` entry names."""
    return _referenced(runtime, project, reference).spec.mounts


def _referenced(runtime: ContainerRuntime, project: str, reference: str) -> Container:
    """`container:<name>`, or a service of the project, whose lowest-numbered container
    (not a one-off run) counts."""
    if reference.startswith("container:"):
        return runtime.get(reference[len("container:") :])
    replicas = [
        container
        for container in runtime.list()
        if container.metadata.get("project") == project
        and container.metadata.get("service") == reference
        and dict(container.spec.labels).get("com.docker.compose.oneoff") != "True"
    ]
    if not replicas:
        raise StackError(
            f"service {reference} has no container to take volumes from",
            hint=f"create {reference}'s containers first",
        )
    return min(replicas, key=lambda c: int(c.metadata.get("number", 0)))


@dataclass(frozen=True)
class _Declared:
    """A volume as the top-level `volumes:` declares it."""

    key: str
    external: bool = False
    driver: str = "local"
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def _declared_volumes(project_model: Mapping[str, Any]) -> dict[str, _Declared]:
    """Volume name -> its declaration."""
    found = {}
    for key, declaration in (project_model.get("volumes") or {}).items():
        declaration = declaration or {}
        found[str(declaration.get("name") or key)] = _Declared(
            key=str(key),
            external=bool(declaration.get("external")),
            driver=str(declaration.get("driver") or "local"),
            driver_opts=_strings(declaration.get("driver_opts")),
            labels=_strings(declaration.get("labels")),
        )
    return found


def _strings(mapping: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in (mapping or {}).items()}


def _volume_path(volumes: VolumeStore, name: str, declared: _Declared | None) -> Path:
    """Where a volume's data is: an existing volume's own answer; for one yet to be made
    (once the whole spec is known to be good), the device its declaration binds or the
    `_data` folder it will have — after checking that it can be made as declared."""
    try:
        return volumes.path(name)
    except StackError:
        pass
    if declared is None:
        return volumes.root / name / "_data"
    if not declared.external:
        try:
            validate_volume(name, declared.driver, declared.driver_opts)
        except StackError as error:
            raise StackError(error.message, path=("volumes", declared.key),
                             hint=error.hint) from None
    device = declared.driver_opts.get("device")
    return Path(device) if device else volumes.root / name / "_data"


def _make_volumes(
    volumes: VolumeStore,
    uses: list[VolumeUse],
    declared: Mapping[str, _Declared],
    project: str,
    service_name: str,
) -> list[str]:
    """Create the volumes the container needs that do not exist yet, as declared (driver
    options, labels, checked while planning); the names of those made. A missing
    external volume is refused before any is made."""
    missing: dict[str, tuple[VolumeUse, _Declared]] = {}
    for use in uses:
        if use.name in missing or _exists(volumes, use.name):
            continue
        declaration = declared.get(use.name) or _Declared(key="")
        if declaration.external:
            raise StackError(
                f"external volume {use.name!r} not found (mounted at {use.target})",
                path=("services", service_name, "volumes"),
                hint=f"create it first: stack volume create {use.name}",
            )
        missing[use.name] = (use, declaration)
    made: list[str] = []
    try:
        for name, (use, declaration) in missing.items():
            labels = dict(declaration.labels)
            if not use.anonymous:  # as compose labels them, so `down -v` can find them
                labels["com.docker.compose.project"] = project
                labels["com.docker.compose.volume"] = declaration.key
            volumes.create(
                name, anonymous=use.anonymous, labels=labels,
                driver=declaration.driver, driver_opts=declaration.driver_opts,
            )
            made.append(name)
    except BaseException:
        _remove_volumes(volumes, made)
        raise
    return made


def _remove_volumes(volumes: VolumeStore, names: list[str]) -> None:
    """Take back volumes made for a container that was not created after all; the
    error that stopped it is the one to report, so a failure here is not."""
    for name in names:
        with contextlib.suppress(StackError, OSError):
            volumes.remove(name, force=True)


def _exists(volumes: VolumeStore, name: str) -> bool:
    try:
        volumes.get(name)
    except StackError:
        return False
    return True


async def start_container(
    runtime: ContainerRuntime, networks: NetworkManager | None, container_id: str,
    stdio: tuple[int, int, int] | None = None,
) -> int:
    """Start a created container, plugging its networks in before its command runs; with
    `stdio`, on a client's pipes or terminal (see `ContainerRuntime.start`)."""
    if networks is None or not networks.dns_address(container_id):
        return await runtime.start(container_id, stdio=stdio)
    pid = await runtime.start(container_id, hold=True, stdio=stdio)
    try:
        await networks.plug(container_id, pid)
    except BaseException:
        await runtime.kill(container_id, "SIGKILL")
        await runtime.wait(container_id)
        raise
    await runtime.release(container_id)
    return pid
