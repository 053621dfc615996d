"""Interop with skopeo: images cross between our code and a client nobody here wrote.

Our readers and writers are checked elsewhere against tests/support/images.py,
which we also wrote; a shared misreading of a specification would pass both.
skopeo (containers/image, what podman and buildah use) is an independent
implementation, so every image that goes through it and comes back with the
same digests shows that the formats we speak are the ones the world speaks:
- registry: skopeo pushes, we pull; we push, skopeo inspects and pulls;
- archives: skopeo reads what `save_archive` writes; we load what skopeo writes.
Digests are compared wherever the format keeps them; where skopeo must convert
(a classic docker-archive has no manifest), config digests and diff ids are.

CI installs skopeo (README's test command); without it these tests fail, not skip.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from support.images import (
    BUSYBOX,
    MULTILAYER_HIDDEN,
    MULTILAYER_VISIBLE,
    BuiltImage,
    busybox_image,
    multilayer_image,
    write_docker_archive_oci,
    write_oci_layout,
)
from support.registry import RegistryServer, run_registry

from orchestrator.runtime.images.exchange import load_archive, save_archive
from orchestrator.runtime.images.pull import pull_image
from orchestrator.runtime.images.push import push_image
from orchestrator.runtime.images.records import ImageRecord
from orchestrator.runtime.images.store import ImageStore

OPAQUE_XATTR = "trusted.overlay.opaque"


@pytest.fixture(autouse=True)
def skopeo_installed() -> None:
    if shutil.which("skopeo") is None:
        pytest.fail(
            "skopeo is not installed; these interop tests need it: apt-get install skopeo "
            "(CI installs it with README's test command)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One registry for the module; each test uses its own repository."""
    with run_registry(tmp_path_factory.mktemp("skopeo-registry")) as server:
        yield server


def skopeo(*args: str) -> bytes:
    """Run skopeo (no signature policy: these images are our own); its stdout."""
    command = ["skopeo", "--insecure-policy", *args]
    result = subprocess.run(command, capture_output=True, timeout=300)
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        pytest.fail(f"{' '.join(command)} failed:\n{stderr}", pytrace=False)
    return result.stdout


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    with path.open("rb") as stream:
        return "sha256:" + hashlib.file_digest(stream, "sha256").hexdigest()


def skopeo_source(image: BuiltImage, tmp_path: Path) -> str:
    """The image where skopeo reads it as it is: an OCI layout for an OCI manifest;
    skopeo's own `dir:` format for a Docker one (its OCI layouts take OCI types only)."""
    if image.media_type.startswith("application/vnd.oci."):
        layout = write_oci_layout(tmp_path / "layout", [image], names="tag")
        return f"oci:{layout}:latest"
    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "version").write_text("Directory Transport Version: 1.1\n")
    (directory / "manifest.json").write_bytes(image.manifest)
    for digest, blob in image.blobs().items():
        if digest != image.manifest_digest:
            (directory / digest.removeprefix("sha256:")).write_bytes(blob)
    return f"dir:{directory}"


def layout_manifest(layout: Path) -> str:
    """The digest of the only manifest an OCI layout's index.json names."""
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    return entry["digest"]


def layer_dirs(store: ImageStore, record: ImageRecord) -> list[Path]:
    """The unpacked `diff/` trees of an image, bottom first (unpack_layer finds them)."""
    paths = []
    parent: str | None = None
    for layer in record.layers:
        info = store.unpack_layer(layer.digest, layer.media_type, parent, diff_id=layer.diff_id)
        paths.append(info.path)
        parent = info.chain_id
    return paths


def overlay_read(lowers: Sequence[Path], path: str) -> bytes | None:
    """What a container sees at `path` with these lowerdirs (bottom first): the file's
    content, or None when a whiteout or an opaque directory hides it (overlayfs rules)."""
    parts = path.split("/")
    for layer in reversed(lowers):
        node = layer
        opaque = False
        for depth, part in enumerate(parts, 1):
            node = node / part
            try:
                info = node.lstat()
            except FileNotFoundError:
                break
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                return None  # a whiteout: deleted here, whatever lies below
            if depth == len(parts):
                return node.read_bytes()
            if stat.S_ISDIR(info.st_mode) and OPAQUE_XATTR in os.listxattr(node):
                opaque = True
        if opaque:
            return None
    return None


def assert_multilayer_unpacked(store: ImageStore, record: ImageRecord) -> None:
    """busybox in the bottom layer; layer 3's whiteout and opaque dir in overlay format."""
    lowers = layer_dirs(store, record)
    assert (lowers[0] / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.readlink(lowers[0] / "bin" / "sh") == "busybox"
    gone = (lowers[2] / "data" / "gone.txt").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(lowers[2] / "opq", OPAQUE_XATTR) == b"y"
    assert not any(name.startswith(".wh.") for lower in lowers for _, _, names in
                   os.walk(lower) for name in names)
    for path, content in MULTILAYER_VISIBLE.items():
        assert overlay_read(lowers, path) == content, path
    for path in MULTILAYER_HIDDEN:
        assert overlay_read(lowers, path) is None, path


def assert_same_blobs(store: ImageStore, directory: Path, names: dict[str, str]) -> None:
    """Every blob skopeo wrote (file name -> digest) is byte for byte the one we store."""
    assert names
    for name, digest in names.items():
        assert file_digest(directory / name) == digest, name
        assert (directory / name).read_bytes() == store.blob_path(digest).read_bytes(), name


# --- registry ----------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(
    "image",
    [
        pytest.param(multilayer_image(), id="oci-gzip-zstd-plain"),
        pytest.param(multilayer_image(compression="gzip", manifest_format="docker"),
                     id="docker-schema2-gzip"),
    ],
)
async def test_image_skopeo_pushed_is_pulled_with_same_digest_and_files(
    image: BuiltImage, registry: RegistryServer, tmp_path: Path
) -> None:
    reference = f"{registry.host}/from-skopeo/{image.manifest_digest[7:19]}:v1"
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false",
           skopeo_source(image, tmp_path), f"docker://{reference}")

    store = ImageStore(tmp_path / "store")
    record = await pull_image(store, reference)

    assert record.manifest_digest == image.manifest_digest
    assert record.config_digest == image.config_digest
    assert [layer.digest for layer in record.layers] == [layer.digest for layer in image.layers]
    assert [layer.diff_id for layer in record.layers] == image.diff_ids
    assert store.read_blob(record.manifest_digest) == image.manifest
    assert reference in record.references
    assert_multilayer_unpacked(store, record)


@pytest.mark.trio
@pytest.mark.parametrize(
    "image",
    [
        pytest.param(multilayer_image(references=("pushed/multi:v1",)), id="oci"),
        pytest.param(
            multilayer_image(references=("pushed/multi:v1",), compression="gzip",
                             manifest_format="docker"),
            id="docker-schema2",
        ),
    ],
)
async def test_image_we_push_is_read_back_by_skopeo(
    image: BuiltImage, registry: RegistryServer, tmp_path: Path
) -> None:
    store = ImageStore(tmp_path / "store")
    (record,) = load_archive(store, write_docker_archive_oci(tmp_path / "in.tar", [image]))
    destination = f"{registry.host}/to-skopeo/{image.manifest_digest[7:19]}:v1"

    pushed = await push_image(store, "pushed/multi:v1", destination=destination)

    assert pushed == record.manifest_digest
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{destination}")
    assert raw == store.read_blob(record.manifest_digest) == image.manifest
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{destination}"))
    assert inspected["Digest"] == record.manifest_digest
    assert inspected["Layers"] == [layer.digest for layer in record.layers]
    assert inspected["Env"] == image_env(image)

    # skopeo's own download verifies every blob against the manifest we pushed.
    copied = tmp_path / "copied"
    if image.media_type.startswith("application/vnd.oci."):
        skopeo("copy", "--preserve-digests", "--src-tls-verify=false",
               f"docker://{destination}", f"oci:{copied}:v1")
        assert layout_manifest(copied) == record.manifest_digest
        names = {p.name: "sha256:" + p.name for p in (copied / "blobs" / "sha256").iterdir()}
        assert_same_blobs(store, copied / "blobs" / "sha256", names)
        assert len(names) == len(record.layers) + 2
    else:  # OCI layouts hold OCI manifests; `dir:` keeps a docker manifest as it is
        skopeo("copy", "--preserve-digests", "--src-tls-verify=false",
               f"docker://{destination}", f"dir:{copied}")
        assert (copied / "manifest.json").read_bytes() == image.manifest
        names = {p.name: "sha256:" + p.name for p in copied.iterdir()
                 if p.name not in ("manifest.json", "version")}
        assert_same_blobs(store, copied, names)
        assert len(names) == len(record.layers) + 1


def image_env(image: BuiltImage) -> list[str]:
    return json.loads(image.config)["config"]["Env"]


# --- archives ----------------------------------------------------------------------------


def test_archive_we_save_is_read_by_skopeo(tmp_path: Path) -> None:
    image = multilayer_image(references=("127.0.0.1:5000/saved/multi:v1",), compression="gzip")
    store = ImageStore(tmp_path / "store")
    load_archive(store, write_docker_archive_oci(tmp_path / "in.tar", [image]))
    archive = tmp_path / "saved.tar"
    save_archive(store, ["127.0.0.1:5000/saved/multi:v1"], archive)

    # As docker-archive (manifest.json): skopeo finds the image by the tag we wrote,
    # keeps our config byte for byte, and the layers it reads have our diff ids.
    classic = tmp_path / "classic"
    skopeo("copy", f"docker-archive:{archive}:127.0.0.1:5000/saved/multi:v1", f"dir:{classic}")
    manifest = json.loads((classic / "manifest.json").read_text())
    assert manifest["config"]["digest"] == image.config_digest
    assert (classic / image.config_digest[7:]).read_bytes() == image.config
    read_diff_ids = [
        sha256(maybe_gunzip((classic / layer["digest"][7:]).read_bytes()))
        for layer in manifest["layers"]
    ]
    assert read_diff_ids == image.diff_ids

    # As an OCI archive (the same file's index.json): the manifest digest is kept.
    layout = tmp_path / "layout"
    skopeo("copy", "--preserve-digests", f"oci-archive:{archive}", f"oci:{layout}:v1")
    assert layout_manifest(layout) == image.manifest_digest
    names = {p.name: "sha256:" + p.name for p in (layout / "blobs" / "sha256").iterdir()}
    assert_same_blobs(store, layout / "blobs" / "sha256", names)


def maybe_gunzip(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def test_docker_archive_skopeo_writes_loads_with_same_config_and_layers(tmp_path: Path) -> None:
    image = multilayer_image(compression="gzip")
    layout = write_oci_layout(tmp_path / "layout", [image], names="tag")
    archive = tmp_path / "skopeo.tar"
    skopeo("copy", f"oci:{layout}:latest", f"docker-archive:{archive}:skopeo/made:v2")

    store = ImageStore(tmp_path / "store")
    (record,) = load_archive(store, archive)

    # A classic docker-archive has no manifest (ours is made on load), but the
    # image's identity, its config and layer contents, survives the trip.
    assert record.config_digest == image.config_digest
    assert [layer.diff_id for layer in record.layers] == image.diff_ids
    assert record.references == ["docker.io/skopeo/made:v2"]
    assert_multilayer_unpacked(store, record)


def test_oci_archive_skopeo_writes_loads_with_same_manifest_digest(tmp_path: Path) -> None:
    image = busybox_image(compression="zstd")
    layout = write_oci_layout(tmp_path / "layout", [image], names="tag")
    archive = tmp_path / "skopeo-oci.tar"
    skopeo("copy", "--preserve-digests", f"oci:{layout}:latest", f"oci-archive:{archive}:v3")

    store = ImageStore(tmp_path / "store")
    (record,) = load_archive(store, archive)

    assert record.manifest_digest == image.manifest_digest
    assert store.read_blob(record.manifest_digest) == image.manifest
    (lower,) = layer_dirs(store, record)
    assert (lower / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
