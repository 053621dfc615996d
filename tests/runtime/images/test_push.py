"""Pushing images from the store to a real `docker-registry`, and reading them back."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.images import BuiltImage, busybox_image, multilayer_image
from support.registry import RegistryServer, run_token_registry

from orchestrator.runtime.images.progress import ProgressEvent
from orchestrator.runtime.images.pull import pull_image
from orchestrator.runtime.images.push import push_image
from orchestrator.runtime.images.registry import Credentials, RegistryClient, save_credentials
from orchestrator.runtime.images.store import ImageStore
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.usefixtures("quick_retries")


def add_to_store(store: ImageStore, image: BuiltImage, *references: str) -> None:
    for digest, blob in image.blobs().items():
        store.put_blob(blob, digest)
    store.add_image(image.manifest_digest, references)


def statuses(events: list[ProgressEvent]) -> dict[str, str]:
    """The last status of every blob."""
    return {event.layer: event.status for event in events}


@pytest.mark.trio
@pytest.mark.parametrize("manifest_format", ["oci", "docker"])
async def test_push_then_pull_into_another_store_keeps_every_digest(
    manifest_format: str, registry: RegistryServer, tmp_path: Path
) -> None:
    image = multilayer_image(manifest_format=manifest_format)
    reference = f"{registry.host}/round/{manifest_format}:1.0"
    events: list[ProgressEvent] = []
    with ImageStore(tmp_path / "one") as one, ImageStore(tmp_path / "two") as two:
        add_to_store(one, image, reference)
        pushed = await push_image(one, reference, progress=events.append)
        pulled = await pull_image(two, reference)
        original = one.image(reference)
        copied_blobs = {d: two.read_blob(d) for d in (pulled.manifest_digest, pulled.config_digest)}

    assert pushed == image.manifest_digest == pulled.manifest_digest
    assert pulled.config_digest == original.config_digest
    assert pulled.layers == original.layers
    assert copied_blobs == {
        image.manifest_digest: image.manifest,
        image.config_digest: image.config,
    }
    assert set(statuses(events).values()) == {"pushed"}
    assert {event.layer for event in events} == {
        digest[7:19] for digest in [image.config_digest, *(la.digest for la in image.layers)]
    }
    async with RegistryClient(registry.host) as client:
        received = bytearray()
        await client.download_blob(f"round/{manifest_format}", image.layers[1].digest,
                                   received.extend)
    assert bytes(received) == image.layers[1].blob


@pytest.mark.trio
async def test_blobs_the_registry_has_are_not_sent_again(
    registry: RegistryServer, store: ImageStore
) -> None:
    image = busybox_image()
    reference = f"{registry.host}/again/busybox:1"
    add_to_store(store, image, reference)
    await push_image(store, reference)
    events: list[ProgressEvent] = []

    digest = await push_image(store, reference, progress=events.append)

    assert digest == image.manifest_digest
    assert set(statuses(events).values()) == {"layer already exists"}
    assert not any(event.status == "pushing" for event in events)


@pytest.mark.trio
async def test_blobs_are_mounted_from_the_repository_the_image_came_from(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = multilayer_image()
    source = f"{registry.host}/mount/source:1"
    with ImageStore(tmp_path / "one") as one, ImageStore(tmp_path / "two") as two:
        add_to_store(one, image, source)
        await push_image(one, source)
        await pull_image(two, source)
        events: list[ProgressEvent] = []
        digest = await push_image(
            two, source, destination=f"{registry.host}/mount/copy:2", progress=events.append
        )

    assert digest == image.manifest_digest
    assert set(statuses(events).values()) == {"mounted"}
    async with RegistryClient(registry.host) as client:
        fetched = await client.get_manifest("mount/copy", "2")
    assert fetched.digest == image.manifest_digest


@pytest.mark.trio
async def test_an_image_named_by_id_needs_a_destination(
    registry: RegistryServer, store: ImageStore
) -> None:
    image = busybox_image()
    add_to_store(store, image)
    image_id = image.config_digest[7:19]

    with pytest.raises(StackError, match=f"image {image_id} has no name to push it under"):
        await push_image(store, image_id)
    digest = await push_image(store, image_id, destination=f"{registry.host}/byid/app")

    async with RegistryClient(registry.host) as client:
        assert (await client.get_manifest("byid/app", "latest")).digest == digest


@pytest.mark.trio
async def test_a_corrupt_blob_in_the_store_is_never_published(
    registry: RegistryServer, store: ImageStore
) -> None:
    image = multilayer_image()
    reference = f"{registry.host}/corrupt/app:1"
    add_to_store(store, image, reference)
    damaged = image.layers[1]
    path = store.blob_path(damaged.digest)
    path.write_bytes(b"\0" * len(damaged.blob))

    with pytest.raises(StackError) as error:
        await push_image(store, reference, max_concurrent_uploads=1)

    message = str(error.value)
    assert "\n" not in message
    assert f"blob {damaged.digest} is corrupt" in message
    async with RegistryClient(registry.host) as client:
        assert not await client.blob_exists("corrupt/app", damaged.digest)
        with pytest.raises(StackError, match="not found"):
            await client.get_manifest("corrupt/app", "1")


@pytest.mark.trio
async def test_push_with_bearer_tokens_uses_the_stored_login(
    tmp_path: Path, store: ImageStore
) -> None:
    image = busybox_image()
    config = tmp_path / "docker" / "config.json"
    with run_token_registry(tmp_path, {"alice": "wonderland"}) as server:
        reference = f"{server.host}/alice/app:1"
        add_to_store(store, image, reference)
        save_credentials(server.host, Credentials("alice", "nope"), config)
        with pytest.raises(StackError, match=f"authentication failed for {server.host}"):
            await push_image(store, reference, docker_config=str(config))

        save_credentials(server.host, Credentials("alice", "wonderland"), config)
        digest = await push_image(store, reference, docker_config=str(config.parent))
        with ImageStore(tmp_path / "other") as other:
            pulled = await pull_image(other, reference, docker_config=str(config))

    assert digest == pulled.manifest_digest == image.manifest_digest
