"""`down --rmi`: which images a project's services used, and removing them.

`all` means every service's image; `local` only the images built for the
project without an `image:` name (compose names them `<project>-<service>`).
An image another container still uses — another project's, typically — is
kept, with a warning, rather than untagged from under it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import trio

from orchestrator.runtime.containers.runtime import ContainerRuntime
from orchestrator.runtime.images.reference import familiar_name, normalize_reference
from orchestrator.runtime.images.store import ImageStore
from orchestrator.spec.errors import StackError

Emit = Callable[[dict[str, Any]], Awaitable[None]]
RMI_CHOICES = ("local", "all")


def images_to_remove(project: str, model: Mapping[str, Any] | None, rmi: str,
                     container_images: Iterable[str] = ()) -> list[str]:
    """The image references `down --rmi` removes, in the services' order, each once.

    Without a model (the engine lost the project's file) the containers' own
    images stand for the services' under `all`; `local` cannot tell them apart.
    """
    found: list[str] = []
    for name, service in ((model or {}).get("services") or {}).items():
        declared = (service or {}).get("image")
        if declared is None:
            found.append(f"{project}-{name}")  # compose's name for a built image
        elif rmi == "all":
            found.append(str(declared))
    if rmi == "all":
        found.extend(image for image in container_images if image)
    unique: dict[str, str] = {}
    for reference in found:
        try:
            unique.setdefault(normalize_reference(reference), reference)
        except StackError:
            continue  # not a reference an image could have been stored under
    return list(unique)


async def remove_images(store: ImageStore, runtime: ContainerRuntime, references: list[str],
                        emit: Emit) -> None:
    """Remove each image that exists, with compose's ` Image busybox:latest  Removed`.

    As docker decides: a name is only untagged while the image has others, unless a
    container was created from that very name; the image's last name goes only when
    no container uses the image.
    """
    containers = await trio.to_thread.run_sync(runtime.list)
    for reference in references:
        name = normalize_reference(reference)
        try:
            record = store.image(reference)
        except StackError:
            continue  # never pulled or built: nothing to do
        shown = familiar_name(name)
        users = sorted(c.name for c in containers if _named(c.spec.image) == name or (
            c.spec.image_id == record.manifest_digest and len(record.references) < 2))
        if users:
            await emit({"kind": "warning", "message": f"image {shown} is still used by "
                                                      f"{', '.join(users)}: kept"})
            continue
        event = {"kind": "progress", "action": "remove_image", "change": "Remove",
                 "resource": f"Image {shown}"}
        await emit({**event, "status": "working"})
        try:
            await trio.to_thread.run_sync(store.remove, reference)
        except StackError as error:
            await emit({**event, "status": "error", "message": str(error)})
            continue
        await emit({**event, "status": "done"})


def _named(image: str) -> str | None:
    try:
        return normalize_reference(image) if image else None
    except StackError:
        return None
