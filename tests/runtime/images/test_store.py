"""The image store on a real filesystem: blobs, layers, names, and failures leaving it intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from layer_builder import MEDIA_TYPES, compress, directory, file, tar

import orchestrator.runtime.images.store_files as store_files
import orchestrator.runtime.images.unpack as unpack_module
from orchestrator.runtime.images.digests import chain_id, sha256_digest
from orchestrator.runtime.images.reference import normalize_reference
from orchestrator.runtime.images.store import ImageStore
from orchestrator.spec.errors import StackError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPES = {
    DOCKER_MANIFEST: "application/vnd.docker.container.image.v1+json",
    OCI_MANIFEST: "application/vnd.oci.image.config.v1+json",
}


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def put_image(
    store: ImageStore,
    layers: list[bytes],
    *,
    manifest_type: str = OCI_MANIFEST,
    compression: str = "gzip",
    created: str = "2024-01-01T00:00:00Z",
    diff_ids: list[str] | None = None,
) -> str:
    """Store an image's blobs (not add it): the manifest digest."""
    descriptors = []
    for plain in layers:
        blob = compress(plain, compression)
        digest = store.put_blob(blob)
        media_type = MEDIA_TYPES[compression]
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(blob)})
    config = {
        "os": "linux",
        "architecture": "amd64",
        "created": created,
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids or [sha256_digest(plain) for plain in layers],
        },
    }
    config_blob = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {
            "mediaType": CONFIG_TYPES[manifest_type],
            "digest": store.put_blob(config_blob),
            "size": len(config_blob),
        },
        "layers": descriptors,
    }
    return store.put_blob(json.dumps(manifest).encode())


BASE = tar(directory("bin"), file("bin/sh", b"shell"), file("etc/passwd", b"root:x:0:0\n"))
TOP = tar(file("etc/.wh.passwd"), file("app", b"app"))


def tmp_litter(store: ImageStore | Path) -> list[str]:
    root = store if isinstance(store, Path) else store.root
    return sorted(p.name for p in (root / "tmp").iterdir() if p.name != "locks")


# -- blobs ----------------------------------------------------------------------------


def test_a_blob_is_stored_under_its_digest_and_read_back_verified(store):
    digest = store.put_blob(b"hello")
    assert digest == sha256_digest(b"hello")
    assert store.has_blob(digest)
    assert store.blob_path(digest).read_bytes() == b"hello"
    assert store.read_blob(digest) == b"hello"
    assert tmp_litter(store) == []


def test_a_blob_with_the_wrong_content_is_refused_and_not_stored(store):
    expected = sha256_digest(b"the real thing")
    with pytest.raises(StackError, match="wrong content"):
        store.put_blob(b"something else", expected)
    assert not store.has_blob(expected)
    assert tmp_litter(store) == []


def test_a_corrupted_blob_is_detected_when_read(store):
    digest = store.put_blob(b"precious bytes")
    path = store.blob_path(digest)
    data = bytearray(path.read_bytes())
    data[3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StackError, match=f"blob {digest} is corrupt"):
        store.read_blob(digest)
    store.put_blob(b"precious bytes")  # loading it again repairs it
    assert store.read_blob(digest) == b"precious bytes"


def test_malformed_digests_never_become_paths(store):
    for bad in ("sha256:../../etc/passwd", "md5:abc", "sha256:" + "A" * 64, "../x"):
        with pytest.raises(StackError):
            store.blob_path(bad)


def test_a_writer_left_without_commit_leaves_nothing(store):
    with pytest.raises(RuntimeError), store.blob_writer() as writer:
        writer.write(b"half a download")
        raise RuntimeError("connection lost")
    assert tmp_litter(store) == []
    assert list((store.root / "blobs/sha256").iterdir()) == []


def test_a_streamed_blob_is_committed_once_complete(store):
    expected = sha256_digest(b"abcdef")
    with store.blob_writer(expected) as writer:
        writer.write(b"abc")
        writer.write(b"def")
        assert writer.commit() == expected
    assert store.read_blob(expected) == b"abcdef"


def test_temp_files_of_a_crashed_process_are_removed_when_the_store_is_next_opened(tmp_path):
    root = tmp_path / "images"
    crash = (
        "import os, sys\n"
        "from orchestrator.runtime.images.store import ImageStore\n"
        "writer = ImageStore(sys.argv[1]).blob_writer()\n"
        "writer.write(b'partial')\n"
        "os.makedirs(os.path.join(sys.argv[1], 'tmp', 'layer-x', 'diff'))\n"
        "os._exit(9)\n"
    )
    result = subprocess.run([sys.executable, "-c", crash, str(root)], cwd=Path.cwd())
    assert result.returncode == 9
    assert len(tmp_litter(root)) == 2
    store = ImageStore(root)
    assert tmp_litter(store) == []


def test_opening_a_second_store_does_not_remove_the_first_ones_writes(tmp_path):
    first = ImageStore(tmp_path / "images")
    with first.blob_writer() as writer:
        writer.write(b"in progress")
        ImageStore(tmp_path / "images").close()
        digest = writer.commit()
    assert first.read_blob(digest) == b"in progress"


def test_the_index_is_unchanged_when_writing_it_fails(store, monkeypatch):
    digest = store.add_image(put_image(store, [BASE]), ["busybox"]).manifest_digest
    before = (store.root / "index.json").read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_files.os, "replace", no_space)
    with pytest.raises(OSError):
        store.tag("other:1", digest)
    monkeypatch.undo()
    assert (store.root / "index.json").read_bytes() == before
    assert tmp_litter(store) == []
    assert store.resolve("other:1") is None
    assert store.resolve("busybox") == digest


# -- layers ---------------------------------------------------------------------------


def test_a_layer_is_unpacked_under_its_chain_id_with_its_metadata(store):
    blob = store.put_blob(compress(BASE, "zstd"))
    info = store.unpack_layer(blob, MEDIA_TYPES["zstd"], None)
    assert info.diff_id == sha256_digest(BASE) == info.chain_id
    assert info.path == store.root / "layers" / info.chain_id[7:] / "diff"
    assert (info.path / "bin/sh").read_bytes() == b"shell"
    meta = json.loads((info.path.parent / "layer.json").read_text())
    assert meta["diff_id"] == info.diff_id and meta["parent"] is None and meta["size"] == 16
    top = store.unpack_layer(store.put_blob(TOP), MEDIA_TYPES["plain"], info.chain_id)
    assert top.chain_id == chain_id(info.chain_id, sha256_digest(TOP))
    assert store.unpack_layer(blob, MEDIA_TYPES["zstd"], None) == info


def test_a_layer_unpacks_before_the_layer_below_it(store):
    """Only the chain id depends on the parent, so an image's layers unpack side by side."""
    base_chain = sha256_digest(BASE)
    top = store.unpack_layer(
        store.put_blob(TOP), MEDIA_TYPES["plain"], base_chain, diff_id=sha256_digest(TOP)
    )
    assert top.chain_id == chain_id(base_chain, sha256_digest(TOP))
    assert store.has_layer(top.chain_id) and not store.has_layer(base_chain)


def test_concurrent_unpacks_of_one_layer_unpack_it_once(store, monkeypatch):
    blob = store.put_blob(compress(BASE, "gzip"))
    calls = []
    real = unpack_module.unpack_layer_tar

    def slow_unpack(*args, **options):
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return real(*args, **options)

    monkeypatch.setattr(unpack_module, "unpack_layer_tar", slow_unpack)
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(store.unpack_layer(blob, MEDIA_TYPES["gzip"], None))
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 3 and len(set(results)) == 1


def test_concurrent_unpacks_in_two_processes_unpack_once(tmp_path):
    root = tmp_path / "images"
    blob = ImageStore(root).put_blob(compress(BASE, "gzip"))
    log = tmp_path / "unpacks.log"
    script = (
        "import sys, time\n"
        "import orchestrator.runtime.images.unpack as u\n"
        "from orchestrator.runtime.images.store import ImageStore\n"
        "real = u.unpack_layer_tar\n"
        "def slow(*a, **o):\n"
        "    open(sys.argv[2], 'a').write('unpack\\n'); time.sleep(0.5); return real(*a, **o)\n"
        "u.unpack_layer_tar = slow\n"
        f"print(ImageStore(sys.argv[1]).unpack_layer({blob!r}, {MEDIA_TYPES['gzip']!r}, None))\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(root), str(log)], cwd=Path.cwd(),
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate()[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert outputs[0] == outputs[1] and "LayerInfo" in outputs[0]
    assert log.read_text() == "unpack\n"


def test_a_corrupt_layer_blob_is_refused_and_leaves_no_layer(store):
    blob = store.put_blob(compress(BASE, "gzip"))
    path = store.blob_path(blob)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x01  # in the gzip trailer: the tar itself still reads
    path.write_bytes(bytes(data))
    with pytest.raises(StackError, match=blob):
        store.unpack_layer(blob, MEDIA_TYPES["gzip"], None)
    assert list((store.root / "layers").iterdir()) == []
    assert tmp_litter(store) == []


def test_a_malicious_layer_leaves_the_store_unchanged(store):
    blob = store.put_blob(tar(file("../../escape", b"x")))
    with pytest.raises(StackError, match="'../../escape'"):
        store.unpack_layer(blob, MEDIA_TYPES["plain"], None)
    assert list((store.root / "layers").iterdir()) == []
    assert tmp_litter(store) == []
    assert not (store.root / "escape").exists() and not (store.root.parent / "escape").exists()


# -- images ---------------------------------------------------------------------------


@pytest.mark.parametrize("manifest_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_an_added_image_has_its_layers_unpacked_and_its_names(store, manifest_type):
    manifest = put_image(store, [BASE, TOP], manifest_type=manifest_type)
    record = store.add_image(manifest, ["busybox", "example.com/team/app:v1"])
    assert record.manifest_digest == manifest
    assert record.references == ["docker.io/library/busybox:latest", "example.com/team/app:v1"]
    assert record.config["config"]["Cmd"] == ["sh"]
    assert record.created == "2024-01-01T00:00:00Z"
    assert [layer.diff_id for layer in record.layers] == [sha256_digest(BASE), sha256_digest(TOP)]
    assert record.size == len(b"shell") + len(b"root:x:0:0\n") + len(b"app")
    top = store.root / "layers" / record.layers[1].chain_id[7:] / "diff"
    assert os.major(os.lstat(top / "etc/passwd").st_rdev) == 0  # the whiteout, overlay style
    assert store.images() == [record]


def test_names_resolve_by_reference_digest_and_short_id(store):
    record = store.add_image(put_image(store, [BASE]), ["busybox:1.36"])
    digest = record.manifest_digest
    assert store.resolve("busybox:1.36") == digest
    assert store.resolve("docker.io/library/busybox:1.36") == digest
    assert store.resolve(f"busybox@{digest}") == digest
    assert store.resolve(digest) == digest
    assert store.resolve(record.config_digest[7:19]) == digest  # the id `stack images` shows
    assert store.resolve(digest[7:20]) == digest
    assert store.resolve("busybox") is None
    assert store.resolve("nothing-here") is None
    with pytest.raises(StackError, match="no such image: redis"):
        store.image("redis")


def test_tag_and_untag(store):
    digest = store.add_image(put_image(store, [BASE])).manifest_digest
    assert store.image(digest).references == []
    store.tag("mine:2", digest)
    assert store.image("mine:2").references == [normalize_reference("mine:2")]
    store.untag("mine:2")
    assert store.resolve("mine:2") is None
    assert store.image(digest).references == []  # untagged, not removed
    with pytest.raises(StackError, match="no such image reference"):
        store.untag("mine:2")
    with pytest.raises(StackError, match="no such image"):
        store.tag("x", sha256_digest(b"unknown"))


def test_remove_untags_first_then_deletes(store):
    digest = store.add_image(put_image(store, [BASE]), ["a", "b"]).manifest_digest
    assert store.remove("a") == ["Untagged: a:latest"]
    assert store.resolve(digest) == digest
    assert store.remove("b") == ["Untagged: b:latest", f"Deleted: {digest}"]
    assert store.images() == []
    with pytest.raises(StackError, match="no such image"):
        store.remove("b")


def test_remove_refuses_an_image_a_container_uses(tmp_path):
    used: set[str] = set()
    store = ImageStore(tmp_path / "images", in_use=used.__contains__)
    digest = store.add_image(put_image(store, [BASE]), ["web"]).manifest_digest
    used.add(digest)
    with pytest.raises(StackError, match="used by a container"):
        store.remove("web")
    assert store.remove("web", force=True) == ["Untagged: web:latest"]
    assert store.resolve(digest) == digest  # kept for the container
    assert store.prune().layers == []


def test_prune_deletes_only_what_no_image_uses(store):
    shared = store.add_image(put_image(store, [BASE, TOP]), ["two"])
    only_base = store.add_image(put_image(store, [BASE], created="2025-01-01T00:00:00Z"), ["one"])
    assert len(list((store.root / "layers").iterdir())) == 2  # the base layer is shared
    stray = store.put_blob(b"left over from an abandoned pull")
    result = store.prune()
    assert result.blobs == [stray] and result.layers == []
    store.remove("two")
    result = store.prune()
    assert sorted(result.blobs) == sorted(
        [shared.manifest_digest, shared.config_digest, shared.layers[1].digest]
    )
    assert result.layers == [shared.layers[1].chain_id]
    assert result.reclaimed > 0
    assert [r.manifest_digest for r in store.images()] == [only_base.manifest_digest]
    assert store.add_image(only_base.manifest_digest).layers == only_base.layers
    assert tmp_litter(store) == []


def test_add_image_needs_every_blob_and_changes_nothing_when_one_is_missing(store):
    manifest = put_image(store, [BASE, TOP])
    record = json.loads(store.read_blob(manifest))
    store.blob_path(record["layers"][1]["digest"]).unlink()
    with pytest.raises(StackError, match="not in the image store"):
        store.add_image(manifest, ["x"])
    assert store.images() == [] and store.resolve("x") is None
    assert list((store.root / "layers").iterdir()) == []


def test_add_image_refuses_layers_that_do_not_match_the_config(store):
    manifest = put_image(store, [BASE], diff_ids=[sha256_digest(b"another layer")])
    with pytest.raises(StackError, match="the image config says"):
        store.add_image(manifest, ["x"])
    assert store.images() == []


def test_add_image_refuses_an_index_and_a_reference_to_another_digest(store):
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": []}
    with pytest.raises(StackError, match="multi-platform index"):
        store.add_image(store.put_blob(json.dumps(index).encode()))
    manifest = put_image(store, [BASE])
    with pytest.raises(StackError, match="another manifest"):
        store.add_image(manifest, [f"x@{sha256_digest(b'other')}"])


def test_an_image_chosen_from_an_index_is_found_by_the_index_digest(store):
    manifest = put_image(store, [BASE])
    index = sha256_digest(b"a multi-platform index naming that manifest")
    store.add_image(manifest, ["app:1"], index_digest=index)
    assert store.resolve(f"app@{index}") == manifest
    assert store.resolve(index) == manifest
    store.tag(f"app@{index}", manifest)
    with pytest.raises(StackError, match="names another manifest"):
        store.tag(f"app@{sha256_digest(b'some other index')}", manifest)


def test_the_last_pull_of_a_reference_is_remembered(store):
    assert store.last_pull("app:1") is None
    store.record_pull("app:1", 1_700_000_000.0)
    assert store.last_pull("docker.io/library/app:1") == 1_700_000_000.0
