"""Pulling images into the store: from a real `docker-registry`, and from servers that misbehave.

Every failure must be one error line and leave the store exactly as it was
(compared file by file, tmp/ aside), and the same store must pull afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from support.images import (
    MULTILAYER_VISIBLE,
    BuiltImage,
    build_image,
    busybox_image,
    busybox_layer,
    file,
    layer_tar,
    multilayer_image,
)
from support.registry import RegistryServer, Reply, Request, ScriptedServer, run_registry

import orchestrator.runtime.images.pull as pull_module
from orchestrator.runtime.images.manifest import OCI_INDEX, Descriptor, build_index
from orchestrator.runtime.images.platform import Platform
from orchestrator.runtime.images.progress import ProgressEvent
from orchestrator.runtime.images.pull import pull_image
from orchestrator.runtime.images.registry import Credentials, RegistryClient, save_credentials
from orchestrator.runtime.images.store import ImageStore
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.usefixtures("quick_retries")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def upload(host: str, repository: str, tag: str, image: BuiltImage) -> None:
    """Put an image into a registry with the client alone (not the code under test)."""
    async with RegistryClient(host) as client:
        for digest, blob in image.blobs().items():
            if digest != image.manifest_digest:
                await client.upload_blob(repository, digest, len(blob), blob)
        await client.put_manifest(repository, tag, image.manifest, image.media_type)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every file of a store but tmp/: type, mode, size, content hash or link target."""
    found: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] == "tmp":
            continue
        info = path.lstat()
        content: object = None
        if stat.S_ISREG(info.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            content = os.readlink(path)
        found[str(relative)] = (info.st_mode, info.st_size, info.st_uid, content)
    return found


class FakeRegistry:
    """A registry API served by `ScriptedServer` from memory, counting blob downloads.

    `spoil` maps a blob digest to the reply to send instead of it; `delay`
    holds every blob answer back, so concurrent pulls overlap for certain.
    """

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.blob_gets: Counter[str] = Counter()
        self.spoil: dict[str, Reply] = {}
        self.manifest_headers: dict[str, str] = {}
        self.delay = 0.0
        self._lock = threading.Lock()

    def add(self, repository: str, tag: str, image: BuiltImage) -> None:
        entry = (image.manifest, image.media_type)
        self.manifests[(repository, tag)] = entry
        self.manifests[(repository, image.manifest_digest)] = entry
        self.blobs.update(image.blobs())

    def __call__(self, request: Request) -> Reply:
        path = urlsplit(request.path).path
        if path == "/v2/":
            return Reply(200)
        unknown = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
        if match := re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path):
            found = self.manifests.get((match.group(1), match.group(2)))
            if found is None:
                return Reply(404, {"Content-Type": "application/json"}, unknown)
            data, media_type = found
            headers = {"Content-Type": media_type, "Docker-Content-Digest": sha256(data)}
            return Reply(200, {**headers, **self.manifest_headers}, data)
        if match := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path):
            digest = match.group(2)
            with self._lock:
                self.blob_gets[digest] += request.method == "GET"
            time.sleep(self.delay)
            if digest in self.spoil:
                return self.spoil[digest]
            blob = self.blobs.get(digest)
            if blob is None:
                return Reply(404, body=b'{"errors":[{"code":"BLOB_UNKNOWN","message":"?"}]}')
            headers = {"Content-Type": "application/octet-stream"}
            return Reply(200, headers, blob)
        return Reply(404)


@pytest.fixture
def fake() -> Iterator[tuple[FakeRegistry, str]]:
    registry = FakeRegistry()
    with ScriptedServer(registry) as server:
        yield registry, server.host


# --- pulling ------------------------------------------------------------------------------


@pytest.mark.trio
async def test_pull_by_tag_stores_the_image_with_its_digests_and_unpacked_layers(
    registry: RegistryServer, store: ImageStore
) -> None:
    image = multilayer_image()
    await upload(registry.host, "team/multi", "1.0", image)
    events: list[ProgressEvent] = []

    record = await pull_image(store, f"{registry.host}/team/multi:1.0", progress=events.append)

    assert record.manifest_digest == image.manifest_digest
    assert record.config_digest == image.config_digest
    assert [layer.digest for layer in record.layers] == [layer.digest for layer in image.layers]
    assert record.references == [f"{registry.host}/team/multi:1.0"]
    top = store.unpack_layer(record.layers[-1].digest, record.layers[-1].media_type,
                             record.layers[-2].chain_id)
    assert (top.path / "data/keep.txt").read_bytes() == MULTILAYER_VISIBLE["data/keep.txt"]
    statuses = {(event.layer, event.status) for event in events}
    assert ("manifest", "resolving") in statuses and ("manifest", "pull complete") in statuses
    for layer in image.layers:
        short = layer.digest[7:19]
        assert {(short, "downloading"), (short, "extracting"), (short, "pull complete")} <= statuses
    assert all(event.image == f"{registry.host}/team/multi:1.0" for event in events)


@pytest.mark.trio
async def test_pull_by_digest_records_the_digest_reference(
    registry: RegistryServer, store: ImageStore
) -> None:
    image = busybox_image()
    await upload(registry.host, "team/busybox", "latest", image)
    reference = f"{registry.host}/team/busybox@{image.manifest_digest}"

    record = await pull_image(store, reference)

    assert record.references == [reference]
    assert store.resolve(reference) == image.manifest_digest


@pytest.mark.trio
async def test_index_gives_linux_amd64_by_default_and_arm64_when_asked(
    registry: RegistryServer, tmp_path: Path
) -> None:
    images = {arch: busybox_image(architecture=arch) for arch in ("amd64", "arm64")}
    entries = []
    for arch, image in images.items():
        await upload(registry.host, "team/multiarch", image.manifest_digest, image)
        entries.append(Descriptor(image.media_type, image.manifest_digest, len(image.manifest),
                                  Platform("linux", arch)))
    index = build_index(entries)
    async with RegistryClient(registry.host) as client:
        await client.put_manifest("team/multiarch", "1", index, OCI_INDEX)
    reference = f"{registry.host}/team/multiarch:1"

    pinned = f"{registry.host}/team/multiarch@{sha256(index)}"
    with ImageStore(tmp_path / "a") as first, ImageStore(tmp_path / "b") as second:
        amd64 = await pull_image(first, reference)
        # The index the tag led to is remembered: a file pinning it needs no registry.
        found_locally = first.resolve(pinned)
        arm64 = await pull_image(second, reference, platform="linux/arm64")
        by_index_digest = await pull_image(first, pinned)

    assert amd64.manifest_digest == images["amd64"].manifest_digest
    assert amd64.config["architecture"] == "amd64"
    assert arm64.manifest_digest == images["arm64"].manifest_digest
    assert arm64.config["architecture"] == "arm64"
    assert found_locally == amd64.manifest_digest
    assert by_index_digest.manifest_digest == amd64.manifest_digest
    assert pinned in by_index_digest.references


@pytest.mark.trio
async def test_only_the_missing_layers_are_downloaded(
    fake: tuple[FakeRegistry, str], store: ImageStore
) -> None:
    registry, host = fake
    base, multi = busybox_image(), multilayer_image()
    assert base.layers[0].digest == multi.layers[0].digest
    registry.add("app/base", "1", base)
    registry.add("app/multi", "1", multi)
    await pull_image(store, f"{host}/app/base:1")
    events: list[ProgressEvent] = []

    await pull_image(store, f"{host}/app/multi:1", progress=events.append)

    assert registry.blob_gets[base.layers[0].digest] == 1
    assert all(registry.blob_gets[layer.digest] == 1 for layer in multi.layers[1:])
    shared = base.layers[0].digest[7:19]
    assert ProgressEvent(f"{host}/app/multi:1", shared, "already exists") in events


@pytest.mark.trio
async def test_two_concurrent_pulls_of_one_image_download_each_blob_once(
    fake: tuple[FakeRegistry, str], store: ImageStore
) -> None:
    registry, host = fake
    image = multilayer_image()
    registry.add("app/multi", "1", image)
    registry.delay = 0.2
    records = []

    async def pull() -> None:
        records.append(await pull_image(store, f"{host}/app/multi:1"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pull)
        nursery.start_soon(pull)

    assert [r.manifest_digest for r in records] == [image.manifest_digest] * 2
    blobs = [image.config_digest, *(layer.digest for layer in image.layers)]
    assert {digest: registry.blob_gets[digest] for digest in blobs} == dict.fromkeys(blobs, 1)
    assert pull_module._IN_FLIGHT == {}


@pytest.mark.trio
async def test_credentials_come_from_the_docker_config(tmp_path: Path, store: ImageStore) -> None:
    image = busybox_image()
    config_dir = tmp_path / "docker"
    with run_registry(tmp_path, htpasswd={"alice": "wonderland"}) as server:
        async with RegistryClient(server.host, credentials=Credentials("alice", "wonderland")) as c:
            for digest, blob in image.blobs().items():
                if digest != image.manifest_digest:
                    await c.upload_blob("private/app", digest, len(blob), blob)
            await c.put_manifest("private/app", "1", image.manifest, image.media_type)
        reference = f"{server.host}/private/app:1"
        save_credentials(server.host, Credentials("alice", "wrong"), config_dir / "config.json")
        before = snapshot(store.root)

        with pytest.raises(StackError) as error:
            await pull_image(store, reference, docker_config=str(config_dir))
        assert_one_line(error.value, f"authentication failed for {server.host}")
        assert snapshot(store.root) == before

        config_file = config_dir / "config.json"
        save_credentials(server.host, Credentials("alice", "wonderland"), config_file)
        record = await pull_image(store, reference, docker_config=str(config_file))
    assert record.manifest_digest == image.manifest_digest


# --- failures -----------------------------------------------------------------------------


def assert_one_line(error: BaseException, expected: str) -> None:
    assert isinstance(error, StackError)
    message = str(error)
    assert "\n" not in message
    assert expected in message, message


def other_layer() -> bytes:
    return layer_tar([file("srv/app.txt", b"an application layer\n")])


def escaping_layer() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"owned\n"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def with_wrong_diff_id(image: BuiltImage) -> BuiltImage:
    config = json.loads(image.config)
    config["rootfs"]["diff_ids"][-1] = sha256(b"not this layer")
    config_bytes = json.dumps(config).encode()
    manifest = json.loads(image.manifest)
    manifest["config"].update(digest=sha256(config_bytes), size=len(config_bytes))
    return BuiltImage(image.references, image.layers, config_bytes,
                      json.dumps(manifest).encode(), image.media_type)


def spoil_case(name: str, image: BuiltImage, registry: FakeRegistry) -> str:
    """Make `registry` misbehave for `image` as case `name` says; the error expected."""
    last = image.layers[-1]
    if name == "corrupt blob":
        registry.spoil[last.digest] = Reply(200, body=b"x" * len(last.blob))
        return f"blob {last.digest} from"
    if name == "truncated download":
        registry.spoil[last.digest] = Reply(200, body=last.blob, send_only=len(last.blob) // 2)
        return "truncated after"
    if name == "announced digest differs":
        registry.manifest_headers["Docker-Content-Digest"] = sha256(b"another manifest")
        return "registry announced digest"
    if name == "unknown media type":
        registry.manifest_headers["Content-Type"] = "application/vnd.example.artifact+json"
        return "unsupported media type 'application/vnd.example.artifact+json'"
    raise AssertionError(name)


@pytest.mark.trio
@pytest.mark.parametrize(
    "case", ["corrupt blob", "truncated download", "announced digest differs", "unknown media type"]
)
async def test_a_misbehaving_registry_leaves_the_store_unchanged_and_usable(
    case: str, fake: tuple[FakeRegistry, str], store: ImageStore
) -> None:
    registry, host = fake
    registry.add("app/base", "1", busybox_image())
    await pull_image(store, f"{host}/app/base:1")
    image = build_image([busybox_layer(), other_layer(), layer_tar([file("x", b"top\n")])])
    registry.add("app/three", "1", image)
    expected = spoil_case(case, image, registry)
    before = snapshot(store.root)

    with pytest.raises(StackError) as error:
        await pull_image(store, f"{host}/app/three:1")

    assert_one_line(error.value, expected)
    assert snapshot(store.root) == before
    registry.spoil.clear()
    registry.manifest_headers.clear()
    record = await pull_image(store, f"{host}/app/three:1")
    assert record.manifest_digest == image.manifest_digest


@pytest.mark.trio
@pytest.mark.parametrize("case", ["escaping tar", "wrong diff id"])
async def test_a_bad_image_is_refused_and_takes_back_its_blobs_and_layers(
    case: str, fake: tuple[FakeRegistry, str], store: ImageStore
) -> None:
    registry, host = fake
    good = busybox_image()
    registry.add("app/base", "1", good)
    await pull_image(store, f"{host}/app/base:1")
    if case == "escaping tar":
        bad = build_image([busybox_layer(), other_layer(), escaping_layer()])
        expected = "../../escaped.txt"
    else:
        bad = with_wrong_diff_id(build_image([busybox_layer(), other_layer()]))
        expected = "but the image config says"
    registry.add("app/bad", "1", bad)
    before = snapshot(store.root)

    with pytest.raises(StackError) as error:
        await pull_image(store, f"{host}/app/bad:1")

    assert_one_line(error.value, expected)
    assert snapshot(store.root) == before
    assert not (store.root.parent / "escaped.txt").exists()
    assert (await pull_image(store, f"{host}/app/base:1")).manifest_digest == good.manifest_digest


@pytest.mark.trio
async def test_an_unknown_image_is_a_manifest_unknown_line(
    fake: tuple[FakeRegistry, str], store: ImageStore
) -> None:
    _, host = fake
    before = snapshot(store.root)
    with pytest.raises(StackError) as error:
        await pull_image(store, f"{host}/app/nothing:2.0")
    assert_one_line(error.value, f"manifest unknown: {host}/app/nothing:2.0")
    assert snapshot(store.root) == before


@pytest.mark.trio
async def test_a_registry_that_goes_away_mid_pull_leaves_the_store_unchanged(
    tmp_path: Path, registry: RegistryServer, store: ImageStore
) -> None:
    base = busybox_image()
    await upload(registry.host, "team/base", "1", base)
    await pull_image(store, f"{registry.host}/team/base:1")
    big = layer_tar([file("blob.bin", os.urandom(32 * 1024 * 1024))])
    image = build_image([busybox_layer(), other_layer(), big], compression="plain")
    before = snapshot(store.root)

    with run_registry(tmp_path) as doomed:
        await upload(doomed.host, "team/big", "1", image)

        def stop_midway(event: ProgressEvent) -> None:
            midway = event.status == "downloading" and event.current > 2 * 1024 * 1024
            if midway and doomed.process.poll() is None:
                doomed.process.kill()
                doomed.process.wait()

        with pytest.raises(StackError) as error:
            await pull_image(store, f"{doomed.host}/team/big:1", progress=stop_midway)

    # Layers download in parallel: the big one is cut short, and one that had not
    # started yet may find nobody listening; whichever fails first is reported.
    assert_one_line(error.value, "")
    assert re.search(r"truncated|cannot connect", str(error.value)), str(error.value)
    assert snapshot(store.root) == before
    await upload(registry.host, "team/big", "1", image)
    record = await pull_image(store, f"{registry.host}/team/big:1")
    assert record.manifest_digest == image.manifest_digest


# --- the store's part ----------------------------------------------------------------------


@pytest.mark.trio
async def test_discard_unused_keeps_what_an_image_needs(
    fake: tuple[FakeRegistry, str], store: ImageStore
) -> None:
    registry, host = fake
    image = multilayer_image()
    registry.add("app/multi", "1", image)
    record = await pull_image(store, f"{host}/app/multi:1")
    stray = store.put_blob(b"no image uses this")
    chains = [layer.chain_id for layer in record.layers]

    store.discard_unused([stray, record.config_digest], chains)

    assert not store.has_blob(stray)
    assert store.has_blob(record.config_digest)
    assert all(store.has_layer(chain) for chain in chains)
    store.remove(f"{host}/app/multi:1")
    store.discard_unused([layer.digest for layer in record.layers], chains)
    assert not any(store.has_layer(chain) for chain in chains)
    assert not any(store.has_blob(layer.digest) for layer in record.layers)
