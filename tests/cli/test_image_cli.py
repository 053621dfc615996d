"""`stack image load/save/import/ls/inspect/tag/rm/prune` as a user runs them."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from support.images import (
    busybox_image,
    multilayer_image,
    write_docker_archive_classic,
    write_docker_archive_oci,
    write_oci_layout,
)
from support.stack_cli import STACK_COMMAND

from orchestrator.runtime.containers.runtime import ContainerRuntime
from orchestrator.runtime.containers.service_container import create_service_container
from orchestrator.runtime.images.store import ImageStore
from orchestrator.runtime.volumes import VolumeStore


def stack(root: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STACK_ROOT": str(root)}
    result = subprocess.run([*STACK_COMMAND, *args], env=env, input=stdin, capture_output=True,
                            timeout=120)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def store_files(root: Path) -> set[str]:
    """Every file the store keeps, but its scratch space."""
    images = root / "images"
    return {
        str(path.relative_to(images))
        for path in images.rglob("*")
        if path.is_file() and "tmp" not in path.relative_to(images).parts[:1]
    }


@pytest.mark.parametrize("write", [write_docker_archive_classic, write_docker_archive_oci])
def test_loaded_image_is_listed_and_inspectable(write, tmp_path: Path) -> None:
    image = busybox_image(["busybox:1.36"])
    archive = write(tmp_path / "busybox.tar", [image])
    loaded = stack(tmp_path / "root", "image", "load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == "Loaded image: busybox:1.36\n"

    listed = stack(tmp_path / "root", "image", "ls")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert row.split()[:3] == ["busybox", "1.36", image.config_digest[7:19]]
    assert stack(tmp_path / "root", "image", "ls", "-q").stdout == image.config_digest[7:19] + "\n"

    inspected = json.loads(stack(tmp_path / "root", "image", "inspect", "busybox:1.36").stdout)
    assert inspected[0]["Id"] == image.config_digest
    assert inspected[0]["RepoTags"] == ["busybox:1.36"]
    assert inspected[0]["Config"]["Cmd"] == ["sh"]
    assert inspected[0]["RootFS"]["Layers"] == image.diff_ids


def test_save_then_load_elsewhere_keeps_every_digest(tmp_path: Path) -> None:
    image = multilayer_image()
    layout = write_oci_layout(tmp_path / "layout", [image])
    assert stack(tmp_path / "a", "image", "load", "-i", str(layout)).returncode == 0
    name = image.references[0]
    saved = stack(tmp_path / "a", "image", "save", "-o", str(tmp_path / "out.tar"), name)
    assert saved.returncode == 0, saved.stderr
    with (tmp_path / "out.tar").open("rb") as archive:
        reloaded = stack(tmp_path / "b", "image", "load", stdin=archive.read())
    assert reloaded.returncode == 0, reloaded.stderr
    first = json.loads(stack(tmp_path / "a", "image", "inspect", name).stdout)[0]
    second = json.loads(stack(tmp_path / "b", "image", "inspect", name).stdout)[0]
    assert (second["Id"], second["ManifestDigest"]) == (first["Id"], first["ManifestDigest"])
    assert second["ManifestDigest"] == image.manifest_digest


def test_import_makes_a_one_layer_image_from_a_rootfs_tar(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    result = stack(tmp_path / "root", "image", "import", str(rootfs), "example/hello:v1")
    assert result.returncode == 0, result.stderr
    image_id = result.stdout.strip()
    inspected = json.loads(stack(tmp_path / "root", "image", "inspect", "example/hello:v1").stdout)
    assert inspected[0]["Id"] == image_id
    assert len(inspected[0]["RootFS"]["Layers"]) == 1


def test_tag_rm_and_prune(tmp_path: Path) -> None:
    root = tmp_path / "root"
    archive = write_docker_archive_oci(tmp_path / "bb.tar", [busybox_image(["busybox:latest"])])
    assert stack(root, "image", "load", "-i", str(archive)).returncode == 0
    assert stack(root, "image", "tag", "busybox", "registry.local/tools/bb:1").returncode == 0
    names = {line.split()[0] for line in stack(root, "image", "ls").stdout.splitlines()[1:]}
    assert names == {"busybox", "registry.local/tools/bb"}

    assert stack(root, "image", "rm", "busybox").stdout == "Untagged: busybox:latest\n"
    removed = stack(root, "image", "rm", "registry.local/tools/bb:1")
    assert removed.stdout.splitlines()[0] == "Untagged: registry.local/tools/bb:1"
    assert removed.stdout.splitlines()[1].startswith("Deleted: sha256:")
    pruned = stack(root, "image", "prune")
    assert pruned.returncode == 0 and "Total reclaimed space" in pruned.stdout
    assert not any(name.startswith(("blobs/", "layers/")) for name in store_files(root))


def test_unknown_image_and_bad_archive_are_one_line_errors_that_change_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    good = write_docker_archive_oci(tmp_path / "good.tar", [busybox_image()])
    assert stack(root, "image", "load", "-i", str(good)).returncode == 0
    before = store_files(root)

    missing = stack(root, "image", "inspect", "nope:1")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "error: no such image: nope:1 (see `stack image ls`)"
    ]

    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../../escape")
        info.size = 0
        tar.addfile(info)
    broken = stack(root, "image", "load", "-i", str(bad))
    assert broken.returncode == 1
    assert len(broken.stderr.strip().splitlines()) == 1 and "bad.tar" in broken.stderr
    assert store_files(root) == before


def test_rm_refuses_an_image_a_container_was_created_from(tmp_path: Path) -> None:
    root = tmp_path / "root"
    archive = write_docker_archive_oci(tmp_path / "bb.tar", [busybox_image(["busybox:latest"])])
    assert stack(root, "image", "load", "-i", str(archive)).returncode == 0
    runtime = ContainerRuntime(root)
    with ImageStore(root / "images") as images:
        container = create_service_container(
            runtime, images, VolumeStore(root / "volumes"),
            {"image": "busybox", "command": ["true"], "entrypoint": None},
            project="p", project_dir=str(tmp_path), service_name="app",
        )

    refused = stack(root, "image", "rm", "busybox")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: image busybox is used by a container (remove the container first, "
        "or force with -f)"
    )
    assert stack(root, "image", "ls", "-q").stdout.strip() != ""
    forced = stack(root, "image", "rm", "-f", "busybox")
    assert forced.stdout == "Untagged: busybox:latest\n"
    assert stack(root, "image", "prune").returncode == 0
    assert any(name.startswith("layers/") for name in store_files(root))  # still needed
    shutil.rmtree(root / "containers" / container.id)


def test_load_reads_an_archive_from_a_named_pipe(tmp_path: Path) -> None:
    archive = write_docker_archive_oci(tmp_path / "bb.tar", [busybox_image(["busybox:fifo"])])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat {archive} > {fifo}"])
    loaded = stack(tmp_path / "root", "image", "load", "-i", str(fifo))
    writer.wait(30)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == "Loaded image: busybox:fifo\n"
