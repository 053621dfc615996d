"""What a service mounts, in which order, and which mount wins where two meet.

Part of turning a service into a launch spec (`service_spec.py`). Every mount
is decided with compose's and Docker's rules: `volume_mounts.py` turns
volumes, binds and tmpfs into mounts, `configs_and_secrets.py` configs and
secrets, and this module puts them together in one `MountPlan` (from
`mount_plan.py`). Every file the runtime must write first comes back as a
`FileToWrite`, so nothing here writes to the disk: it only reads the host
files a service names.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.runtime.containers.configs_and_secrets import config_or_secret
from orchestrator.runtime.containers.launchspec import Mount
from orchestrator.runtime.containers.mount_plan import MountContext, MountPlan
from orchestrator.runtime.containers.service_keys import ServiceKeys
from orchestrator.runtime.containers.volume_mounts import (
    tmpfs_entry,
    volume_entry,
    volume_mount,
    volumes_from,
)
from orchestrator.runtime.images.image_config import ImageConfig
from orchestrator.spec.shortsyntax import clean_path


def plan_mounts(keys: ServiceKeys, image: ImageConfig | None, context: MountContext) -> MountPlan:
    """The service's tmpfs, volumes, configs and secrets, then what `volumes_from` shares
    and the image's VOLUMEs, each where nothing before it is mounted already."""
    plan = MountPlan()
    for index, entry in enumerate(keys.get("tmpfs", [])):
        plan.add(keys, tmpfs_entry(keys, index, str(entry)), ("tmpfs", index))
    for index, entry in enumerate(keys.get("volumes", [])):
        plan.add(keys, volume_entry(keys, index, entry, context, plan), ("volumes", index))
    for kind in ("configs", "secrets"):
        for index, reference in enumerate(keys.get(kind, [])):
            mount = config_or_secret(keys, kind, index, reference, context, plan)
            plan.add(keys, mount, (kind, index))
    # As in Docker, the service's own mounts win over the ones another container shares.
    for index, entry in enumerate(keys.get("volumes_from", [])):
        for mount in volumes_from(keys, index, str(entry), context):
            if mount.target not in plan.owners:
                plan.add(keys, mount, ("volumes_from", index))
    # Docker gives each VOLUME of the image that nothing else covers an anonymous volume.
    for path in image.volumes if image else ():
        target = clean_path(path)
        if target not in plan.owners:
            mount = volume_mount(keys, ("image",), target, None, {}, False, context, plan)
            plan.add(keys, mount, ("image",))
    return plan


def sort_mounts(mounts: Sequence[Mount]) -> tuple[Mount, ...]:
    """Parents before children (`/a` before `/a/b`), otherwise in the order given."""
    return tuple(sorted(mounts, key=lambda m: len([p for p in m.target.split("/") if p])))
