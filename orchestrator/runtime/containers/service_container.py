"""From a service of a stack to a created container: image, volumes, launch spec, folder.

The one place that knows which stores a container draws on. The engine calls
it for every replica it creates; it decides everything (and so can refuse
everything) before it creates anything, and it creates volumes only once the
launch spec is known to be good.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers.runtime import Container, ContainerRuntime
from orchestrator.runtime.containers.service_spec import build_launch_spec
from orchestrator.runtime.images.image_config import ImageConfig, parse_image_config
from orchestrator.runtime.images.store import ImageStore
from orchestrator.runtime.volumes import VolumeStore
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
) -> Container:
    """Create (not start) container `number` of `service`."""
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
    plan = build_launch_spec(
        service, image,
        container_id=container_id,
        container_name=name,
        project=project, project_dir=project_dir, service_name=service_name, number=number,
        lowers=lowers, state_root=runtime.state_root,
        volume_path=lambda volume: _volume_path(volumes, volume),
        host_rootfs=host_rootfs, project_model=project_model,
        project_environment=project_environment, image_id=image_id,
        config_hash=config_hash, oneoff=oneoff,
    )
    for use in plan.volumes:
        volumes.create(use.name, anonymous=use.anonymous)
    metadata = {"project": project, "service": service_name, "number": number}
    return runtime.create(plan.spec, plan.files, metadata)


def _volume_path(volumes: VolumeStore, name: str) -> Path:
    """Where a volume's data is: a bind-style volume's device, else its `_data` folder
    (the volume itself is created once the whole spec is known to be good)."""
    try:
        return volumes.path(name)
    except StackError:
        return volumes.root / name / "_data"
