"""The image store on a filesystem that really fills up: a tmpfs of a few
megabytes, mounted for the test. Unpacking a layer that does not fit is one
line naming the entry, and leaves the store as it was, and usable."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from layer_builder import MEDIA_TYPES, compress, file, tar
from support.images import multilayer_image, write_docker_archive_classic
from support.stack_cli import STACK_COMMAND

from orchestrator.runtime.images.store import ImageStore
from orchestrator.spec.errors import StackError

MB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB filesystem, unmounted afterwards however the test ends."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "stack-test-full",
                    str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)


def fill(path: Path) -> None:
    """Write into `path` until the disk is full."""
    with path.open("wb", buffering=0) as padding:
        try:
            while True:
                padding.write(bytes(64 * 1024))
        except OSError as error:
            assert error.errno == errno.ENOSPC


def listing(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*")
                  if "locks" not in path.parts)


@pytest.mark.parametrize("compression", ["plain", "gzip"])
def test_a_layer_too_big_for_the_disk_fails_in_one_line_and_changes_nothing(
    small_disk, compression
):
    store = ImageStore(small_disk / "images")
    # Plain: a 3 MB blob that needs 3 MB more unpacked (large files go by direct
    # I/O there). gzip: a small blob of zeros that needs 8 MB unpacked.
    content = os.urandom(3 * MB) if compression == "plain" else bytes(8 * MB)
    big = store.put_blob(compress(tar(file("data/big", content)), compression))
    small = store.put_blob(compress(tar(file("hello", b"hi")), compression))
    before = listing(store.root)
    with pytest.raises(StackError) as caught:
        store.unpack_layer(big, MEDIA_TYPES[compression], None)
    message = str(caught.value)
    assert "'data/big'" in message and "No space left on device" in message
    assert "\n" not in message
    assert listing(store.root) == before  # no half layer, no temporary files
    # Still usable: what fits unpacks, and the big blob is still there, whole.
    info = store.unpack_layer(small, MEDIA_TYPES[compression], None)
    assert (info.path / "hello").read_bytes() == b"hi"
    assert store.read_blob(big) == compress(tar(file("data/big", content)), compression)


def test_a_blob_too_big_for_the_disk_is_one_line_and_not_stored(small_disk):
    store = ImageStore(small_disk / "images")
    before = listing(store.root)
    with pytest.raises(StackError) as caught:
        store.put_blob(os.urandom(8 * MB))
    message = str(caught.value)
    assert "cannot store a blob" in message and "No space left on device" in message
    assert "\n" not in message
    assert listing(store.root) == before
    assert store.read_blob(store.put_blob(b"still usable")) == b"still usable"


def test_image_load_onto_a_full_disk_is_one_error_line(small_disk, tmp_path):
    archive = write_docker_archive_classic(tmp_path / "image.tar", [multilayer_image()])
    fill(small_disk / "padding")
    env = {**os.environ, "STACK_ROOT": str(small_disk / "root")}
    loaded = subprocess.run([*STACK_COMMAND, "image", "load", "-i", str(archive)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 1
    assert loaded.stderr.startswith("error: cannot ")
    assert "No space left on device" in loaded.stderr
    assert loaded.stderr.count("\n") == 1, loaded.stderr  # one line, no traceback
