"""Reading and writing image archives: docker save (classic and docker 25+), OCI layouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from support.images import (
    BuiltImage,
    build_image,
    busybox_image,
    busybox_layer,
    file,
    layer_tar,
    multilayer_image,
    sha256,
    write_docker_archive_classic,
    write_docker_archive_oci,
    write_oci_layout,
    write_oci_layout_tar,
)

from orchestrator.runtime.images.archive import (
    ArchiveImage,
    ExportImage,
    read_archive,
    read_rootfs_tar,
    write_docker_archive,
)
from orchestrator.runtime.images.manifest import OCI_INDEX, parse_manifest
from orchestrator.spec.errors import StackError

WRITERS = {
    "docker-classic": write_docker_archive_classic,
    "docker-oci": write_docker_archive_oci,
    "oci-dir": write_oci_layout,
    "oci-tar": write_oci_layout_tar,
}


@pytest.fixture(scope="module")
def busybox() -> BuiltImage:
    return busybox_image(("busybox:latest", "busybox:1.35"), compression="plain")


@pytest.fixture(scope="module")
def multi() -> BuiltImage:
    return multilayer_image(("registry.local:5000/team/multi:v1",))


def read_all(image: ArchiveImage, digest: str) -> bytes:
    with image.open_blob(digest) as stream:
        return stream.read()


def export(images: list[ArchiveImage]) -> list[ExportImage]:
    return [ExportImage(i.references, i.manifest, i.config, i.open_blob) for i in images]


def rewrite_tar(source: Path, target: Path, change) -> Path:
    """A copy of a tar with `change(name, data) -> (name, data) | None` applied per file."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for member in old:
            data = old.extractfile(member).read() if member.isreg() else None
            if data is not None:
                changed = change(member.name, data)
                if changed is None:
                    continue
                member.name, data = changed
                member.size = len(data)
            new.addfile(member, io.BytesIO(data) if data is not None else None)
    return target


# --- every format ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", WRITERS)
def test_every_format_gives_each_image_with_its_names_config_and_layers(
    kind: str, tmp_path: Path, busybox: BuiltImage, multi: BuiltImage
) -> None:
    archive = WRITERS[kind](tmp_path / "images", [busybox, multi])
    first, second = read_archive(archive)
    assert first.references == (
        "docker.io/library/busybox:latest",
        "docker.io/library/busybox:1.35",
    )
    assert second.references == ("registry.local:5000/team/multi:v1",)
    for loaded, built in ((first, busybox), (second, multi)):
        assert loaded.config == built.config
        assert loaded.config_digest == built.config_digest
        assert len(loaded.layers) == len(built.layers)
        manifest = parse_manifest(loaded.manifest, loaded.media_type)
        assert [x.digest for x in manifest.layers] == [x.digest for x in loaded.layers]
        for layer in loaded.layers:
            assert sha256(read_all(loaded, layer.digest)) == layer.digest
        if kind != "docker-classic":
            assert loaded.manifest == built.manifest  # the manifest digest survives


def test_classic_archive_layers_are_the_stored_tars_under_their_diff_ids(
    tmp_path: Path, multi: BuiltImage
) -> None:
    archive = write_docker_archive_classic(tmp_path / "a.tar", [multi])
    (image,) = read_archive(archive)
    assert [layer.digest for layer in image.layers] == multi.diff_ids
    assert {layer.media_type for layer in image.layers} == {
        "application/vnd.docker.image.rootfs.diff.tar"
    }
    assert image.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert read_all(image, multi.diff_ids[1]) == multi.layers[1].tar


def test_classic_archive_gives_the_same_manifest_every_time(
    tmp_path: Path, busybox: BuiltImage
) -> None:
    first = write_docker_archive_classic(tmp_path / "1.tar", [busybox])
    second = write_docker_archive_classic(tmp_path / "2.tar", [busybox])
    assert read_archive(first)[0].manifest_digest == read_archive(second)[0].manifest_digest


def test_classic_archive_follows_docker_symlinks_for_repeated_layers(tmp_path: Path) -> None:
    same = layer_tar([file("note", b"twice\n")])
    image = build_image([busybox_layer(), same, same], references=["twice:1"])
    archive = write_docker_archive_classic(tmp_path / "a.tar", [image])
    with tarfile.open(archive) as tar:
        assert any(m.issym() for m in tar)
    (loaded,) = read_archive(archive)
    assert read_all(loaded, loaded.layers[2].digest) == same


def test_several_images_sharing_layers_read_from_one_archive(tmp_path: Path) -> None:
    images = [
        busybox_image([f"app{i}:latest"], manifest_format=fmt)
        for i, fmt in enumerate(["oci", "docker", "oci"])
    ]
    images.append(multilayer_image(["multi:latest"]))
    loaded = read_archive(write_docker_archive_oci(tmp_path / "a.tar", images))
    # app0 and app2 are the same image: one image with both names.
    assert [image.manifest_digest for image in loaded] == [
        images[0].manifest_digest, images[1].manifest_digest, images[3].manifest_digest
    ]
    assert loaded[0].references == (
        "docker.io/library/app0:latest", "docker.io/library/app2:latest"
    )
    assert loaded[0].layers[0].digest == loaded[2].layers[0].digest


def test_untagged_image_loads_without_a_name(tmp_path: Path) -> None:
    image = busybox_image([])
    (loaded,) = read_archive(write_docker_archive_oci(tmp_path / "a.tar", [image]))
    assert loaded.references == ()


def test_oci_layout_with_bare_tag_names_loads_untagged(tmp_path: Path, multi: BuiltImage) -> None:
    (loaded,) = read_archive(write_oci_layout(tmp_path / "layout", [multi], names="tag"))
    assert loaded.references == ()
    (named,) = read_archive(write_oci_layout(tmp_path / "full", [multi], names="full"))
    assert named.references == ("registry.local:5000/team/multi:v1",)


def test_gzip_and_zstd_layers_keep_their_blobs_and_media_types(
    tmp_path: Path, multi: BuiltImage
) -> None:
    (loaded,) = read_archive(write_oci_layout_tar(tmp_path / "a.tar", [multi]))
    assert [layer.media_type for layer in loaded.layers] == [
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.v1.tar",
    ]
    assert [read_all(loaded, x.digest) for x in loaded.layers] == [x.blob for x in multi.layers]


def test_multi_platform_index_gives_the_image_for_the_wanted_platform(tmp_path: Path) -> None:
    from orchestrator.runtime.images.platform import Platform

    amd64 = busybox_image([], architecture="amd64")
    arm64 = busybox_image([], architecture="arm64", compression="zstd")
    layout = write_oci_layout(tmp_path / "layout", [amd64, arm64])
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": image.media_type, "digest": image.manifest_digest,
             "size": len(image.manifest), "platform": {"os": "linux", "architecture": arch}}
            for image, arch in ((amd64, "amd64"), (arm64, "arm64"))
        ],
    }
    index_bytes = json.dumps(index).encode()
    (layout / "blobs/sha256" / hashlib.sha256(index_bytes).hexdigest()).write_bytes(index_bytes)
    top = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_INDEX, "digest": sha256(index_bytes), "size": len(index_bytes),
            "annotations": {"io.containerd.image.name": "docker.io/library/multiarch:1"},
        }],
    }
    (layout / "index.json").write_text(json.dumps(top))
    (image,) = read_archive(layout, platform=Platform("linux", "arm64"))
    assert image.manifest_digest == arm64.manifest_digest
    assert image.references == ("docker.io/library/multiarch:1",)
    with pytest.raises(StackError, match=r"no image for linux/s390x in this index"):
        read_archive(layout, platform=Platform("linux", "s390x"))


# --- streams --------------------------------------------------------------------------------


def test_archive_piped_on_stdin_is_spooled_and_read(tmp_path: Path, multi: BuiltImage) -> None:
    archive = write_docker_archive_oci(tmp_path / "a.tar", [multi])
    with subprocess.Popen(["cat", str(archive)], stdout=subprocess.PIPE) as cat:
        (loaded,) = read_archive(cat.stdout, spool_dir=tmp_path)
    assert loaded.manifest_digest == multi.manifest_digest
    assert read_all(loaded, multi.layers[1].digest) == multi.layers[1].blob
    assert list(tmp_path.iterdir()) == [archive]  # the spooled copy has no name


def test_open_file_and_gzip_compressed_archive_load(tmp_path: Path, multi: BuiltImage) -> None:
    archive = write_docker_archive_classic(tmp_path / "a.tar", [multi])
    with open(archive, "rb") as stream:
        assert read_archive(stream)[0].layers[0].digest == multi.diff_ids[0]
    packed = tmp_path / "a.tar.gz"
    packed.write_bytes(gzip.compress(archive.read_bytes()))
    (loaded,) = read_archive(packed)
    assert read_all(loaded, multi.diff_ids[2]) == multi.layers[2].tar


# --- save -----------------------------------------------------------------------------------


def test_saved_archive_reads_back_with_every_digest(
    tmp_path: Path, busybox: BuiltImage, multi: BuiltImage
) -> None:
    images = [busybox, multi]
    saved = tmp_path / "saved.tar"
    write_docker_archive(saved, [ExportImage(i.references, i.manifest, i.config, i.open_blob)
                                 for i in images])
    loaded = read_archive(saved)
    assert [i.manifest_digest for i in loaded] == [i.manifest_digest for i in images]
    assert loaded[0].references == (
        "docker.io/library/busybox:latest",
        "docker.io/library/busybox:1.35",
    )
    again = tmp_path / "again.tar"
    write_docker_archive(again, export(loaded))
    assert again.read_bytes() == saved.read_bytes()


def test_saved_archive_has_what_classic_docker_load_reads(
    tmp_path: Path, busybox: BuiltImage, multi: BuiltImage
) -> None:
    saved = tmp_path / "saved.tar"
    write_docker_archive(saved, [ExportImage(i.references, i.manifest, i.config, i.open_blob)
                                 for i in (busybox, multi)])
    with tarfile.open(saved) as tar:
        entries = json.load(tar.extractfile("manifest.json"))
        repositories = json.load(tar.extractfile("repositories"))
        layout = json.load(tar.extractfile("oci-layout"))
        names = set(tar.getnames())
    assert entries[0]["RepoTags"] == ["busybox:latest", "busybox:1.35"]
    assert entries[1]["RepoTags"] == ["registry.local:5000/team/multi:v1"]
    assert entries[1]["Layers"] == [f"blobs/sha256/{x.digest[7:]}" for x in multi.layers]
    assert entries[1]["Config"] == f"blobs/sha256/{multi.config_digest[7:]}"
    assert set(repositories) == {"busybox", "registry.local:5000/team/multi"}
    assert layout == {"imageLayoutVersion": "1.0.0"}
    assert {name for e in entries for name in [e["Config"], *e["Layers"]]} <= names
    # Without index.json it is a classic archive, and still loads.
    classic = rewrite_tar(saved, tmp_path / "c.tar",
                          lambda n, d: None if n == "index.json" else (n, d))
    assert [i.config_digest for i in read_archive(classic)] == [
        busybox.config_digest, multi.config_digest
    ]


def test_saving_a_corrupt_layer_fails_and_leaves_no_file(
    tmp_path: Path, busybox: BuiltImage
) -> None:
    def corrupt(digest: str) -> io.BytesIO:
        data = bytearray(busybox.blobs()[digest])
        data[1000] ^= 1
        return io.BytesIO(bytes(data))

    target = tmp_path / "out.tar"
    with pytest.raises(StackError, match=r"does not match its digest"):
        write_docker_archive(target, [ExportImage(["b:1"], busybox.manifest, busybox.config,
                                                  corrupt)])
    assert list(tmp_path.iterdir()) == []


# --- import ---------------------------------------------------------------------------------


def test_imported_rootfs_becomes_a_one_layer_image(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar.gz"
    rootfs.write_bytes(gzip.compress(busybox_layer()))
    image = read_rootfs_tar(rootfs, container_config={"Cmd": ["sh"]})
    config = json.loads(image.config)
    assert config["rootfs"]["diff_ids"] == [sha256(busybox_layer())]
    assert config["config"] == {"Cmd": ["sh"]}
    assert config["os"] == "linux"
    (layer,) = image.layers
    assert read_all(image, layer.digest) == busybox_layer()
    assert parse_manifest(image.manifest).config.digest == image.config_digest


def test_importing_something_that_is_not_a_tar_says_so(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"hello, not a tar" * 100)
    with pytest.raises(StackError, match=r"junk.tar: not a readable tar archive"):
        read_rootfs_tar(junk)


# --- malformed archives ---------------------------------------------------------------------


def test_archive_without_manifest_or_index_is_not_an_image_archive(tmp_path: Path) -> None:
    plain = tmp_path / "rootfs.tar"
    plain.write_bytes(busybox_layer())
    with pytest.raises(StackError, match=r"rootfs.tar: not an image archive"):
        read_archive(plain)


def test_missing_layer_named_by_manifest_json(tmp_path: Path, busybox: BuiltImage) -> None:
    archive = write_docker_archive_classic(tmp_path / "a.tar", [busybox])
    broken = rewrite_tar(archive, tmp_path / "b.tar",
                         lambda n, d: None if n.endswith("layer.tar") else (n, d))
    with pytest.raises(StackError, match=r"b.tar: .*/layer.tar: missing from the archive "
                                         r"\(named by manifest.json\[0\].Layers\[0\]\)"):
        read_archive(broken)


def test_tampered_layer_is_caught_while_it_streams(tmp_path: Path, busybox: BuiltImage) -> None:
    archive = write_docker_archive_classic(tmp_path / "a.tar", [busybox])

    def flip(name: str, data: bytes) -> tuple[str, bytes]:
        return name, (data[:600] + b"X" + data[601:]) if name.endswith("layer.tar") else data

    (image,) = read_archive(rewrite_tar(archive, tmp_path / "b.tar", flip))
    with pytest.raises(StackError, match=r"layer.tar: layer \(its config's diff id\) does not "
                                         r"match its digest sha256:"):
        read_all(image, image.layers[0].digest)


def test_tampered_blob_in_oci_layout(tmp_path: Path, multi: BuiltImage) -> None:
    layout = write_oci_layout(tmp_path / "layout", [multi])
    blob = layout / "blobs/sha256" / multi.layers[1].digest[7:]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    (image,) = read_archive(layout)
    with pytest.raises(StackError, match=r"layer does not match its digest"):
        read_all(image, multi.layers[1].digest)


def test_tampered_config_in_classic_archive(tmp_path: Path, busybox: BuiltImage) -> None:
    archive = write_docker_archive_classic(tmp_path / "a.tar", [busybox])

    def edit(name: str, data: bytes) -> tuple[str, bytes]:
        return name, data.replace(b'"sh"', b'"ls"') if name.endswith(".json") else data

    with pytest.raises(StackError, match=r"\.json: config does not match its digest"):
        read_archive(rewrite_tar(archive, tmp_path / "b.tar", edit))


def test_missing_blob_in_oci_layout(tmp_path: Path, multi: BuiltImage) -> None:
    layout = write_oci_layout(tmp_path / "layout", [multi])
    (layout / "blobs/sha256" / multi.layers[2].digest[7:]).unlink()
    with pytest.raises(StackError, match=rf"layer {multi.layers[2].digest} is missing from"):
        read_archive(layout)


def test_entry_climbing_out_of_the_archive_is_refused(tmp_path: Path, busybox: BuiltImage) -> None:
    archive = write_docker_archive_oci(tmp_path / "a.tar", [busybox])
    evil = rewrite_tar(archive, tmp_path / "evil.tar",
                       lambda n, d: ("../../etc/cron.d/x", d) if n == "repositories" else (n, d))
    with pytest.raises(StackError, match=r"evil.tar: ../../etc/cron.d/x: entry name points "
                                         r"outside the archive"):
        read_archive(evil)


def test_manifest_json_naming_a_file_outside_is_refused(
    tmp_path: Path, busybox: BuiltImage
) -> None:
    archive = write_docker_archive_classic(tmp_path / "a.tar", [busybox])

    def point_out(name: str, data: bytes) -> tuple[str, bytes]:
        if name == "manifest.json":
            entries = json.loads(data)
            entries[0]["Layers"][0] = "../../../etc/shadow"
            data = json.dumps(entries).encode()
        return name, data

    with pytest.raises(StackError, match=r"../../../etc/shadow: manifest.json\[0\].Layers\[0\] "
                                         r"points outside the archive"):
        read_archive(rewrite_tar(archive, tmp_path / "b.tar", point_out))


def test_garbage_index_json_names_the_file(tmp_path: Path, multi: BuiltImage) -> None:
    layout = write_oci_layout(tmp_path / "layout", [multi])
    (layout / "index.json").write_text("{not json")
    with pytest.raises(StackError, match=r"layout: index.json: .*not valid JSON"):
        read_archive(layout)


def test_truncated_archive_fails_in_one_line(tmp_path: Path, busybox: BuiltImage) -> None:
    archive = write_docker_archive_classic(tmp_path / "a.tar", [busybox])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[:50_000])
    with pytest.raises(StackError, match=r"cut.tar: ") as caught:
        images = read_archive(cut)
        read_all(images[0], images[0].layers[0].digest)
    assert "\n" not in str(caught.value)


def test_missing_file_fails_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"nowhere.tar: cannot open the archive"):
        read_archive(tmp_path / "nowhere.tar")


# --- into the store -------------------------------------------------------------------------


def load_into_store(store, images: list[ArchiveImage]) -> list[str]:
    """What `stack image load` does: copy every blob in, verified, then record the images."""
    for image in images:
        for layer in image.layers:
            if store.has_blob(layer.digest):
                continue
            with image.open_blob(layer.digest) as stream, store.blob_writer(layer.digest) as out:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
                out.commit()
        store.put_blob(image.config, image.config_digest)
        store.put_blob(image.manifest, image.manifest_digest)
        store.add_image(image.manifest_digest, image.references)
    return [image.manifest_digest for image in images]


@pytest.mark.parametrize("kind", WRITERS)
def test_loaded_images_are_in_the_store_with_their_files(
    kind: str, tmp_path: Path, multi: BuiltImage
) -> None:
    store_module = pytest.importorskip("orchestrator.runtime.images.store")
    store = store_module.ImageStore(tmp_path / "store")
    archive = WRITERS[kind](tmp_path / "archive", [multi])
    (digest,) = load_into_store(store, read_archive(archive))
    record = store.image("registry.local:5000/team/multi:v1")
    assert record.manifest_digest == digest
    top = Path(store.unpack_layer(record.layers[-1].digest, record.layers[-1].media_type,
                                  record.layers[-2].chain_id).path)
    assert (top / "opq" / "new.txt").read_bytes() == b"only this survives in opq\n"


def test_tampered_archive_leaves_the_store_unchanged(tmp_path: Path, multi: BuiltImage) -> None:
    store_module = pytest.importorskip("orchestrator.runtime.images.store")
    store = store_module.ImageStore(tmp_path / "store")
    layout = write_oci_layout(tmp_path / "layout", [multi])
    blob = layout / "blobs/sha256" / multi.layers[0].digest[7:]
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(StackError, match=r"does not match its digest"):
        load_into_store(store, read_archive(layout))
    assert store.images() == []
    assert not store.has_blob(multi.layers[0].digest)
    assert list((tmp_path / "store" / "tmp").glob("blob-*")) == []
