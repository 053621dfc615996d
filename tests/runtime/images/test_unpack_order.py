"""Tar order is kept while small files are written by writer threads, or by none.

Each layer here has enough files that writer threads still hold some of them
when the entries that depend on them (replacements, links, children) come.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from layer_builder import (
    BLOB_SOURCES,
    MEDIA_TYPES,
    blob_stream,
    directory,
    file,
    hardlink,
    symlink,
    tar,
)

from orchestrator.runtime.images import layerwriters
from orchestrator.runtime.images.unpack import SMALL_FILE, unpack_layer_tar
from orchestrator.spec.errors import StackError


@pytest.fixture(autouse=True, params=[0, 1, 3], ids=lambda n: f"{n}-writers")
def writer_threads(request, monkeypatch):
    """Every rule holds however many writer threads the machine's cores get, and
    with every body handed to them (as where there are cores to spare)."""
    monkeypatch.setattr(layerwriters, "WORKERS", request.param)
    monkeypatch.setattr(layerwriters, "OFFLOAD_FROM", 0)


@pytest.fixture(autouse=True, params=BLOB_SOURCES)
def blob_source(request, monkeypatch):
    """From a stream, and mapped from a file (where bodies are views, large ones
    taken whole and written with direct I/O)."""
    monkeypatch.setattr(sys.modules[__name__], "SOURCE", request.param)


SOURCE = "memory"


def unpack(dest: Path, data: bytes):
    with blob_stream(data, SOURCE) as stream:
        return unpack_layer_tar(stream, MEDIA_TYPES["plain"], dest)


def many(prefix: str, count: int = 300) -> list:
    return [file(f"{prefix}/f{n}", f"{prefix} {n}".encode() * 50) for n in range(count)]


def test_every_file_of_a_many_file_layer_has_its_content_and_metadata(tmp_path):
    members = [directory("d", mode=0o751, mtime=1_000)]
    # Several megabytes: the buffers the tar is read into are reused under the writers.
    contents = [os.urandom(n * 37) for n in range(500)]
    members += [
        file(f"d/f{n}", contents[n], uid=n, gid=n + 1, mode=0o640 + n % 2, mtime=n)
        for n in range(500)
    ]
    big = os.urandom(3 * SMALL_FILE + 12345)  # streamed, or handed whole to a writer if mapped
    members.append(file("d/big", big, mode=0o755))
    unpack(tmp_path / "layer", tar(*members))
    for n in range(500):
        path = tmp_path / "layer" / "d" / f"f{n}"
        info = os.lstat(path)
        assert info.st_size == n * 37
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (n, n + 1, 0o640 + n % 2)
        assert info.st_mtime_ns == n * 10**9
        assert path.read_bytes() == contents[n]
    assert (tmp_path / "layer/d/big").read_bytes() == big
    assert os.lstat(tmp_path / "layer/d").st_mtime_ns == 1_000 * 10**9  # set after its files


def test_later_entries_replace_files_still_being_written(tmp_path):
    plain = tar(
        *many("a"),
        file("a/f7", b"second version"),
        directory("a/f8"),
        file("a/f8/inside", b"in a directory that was a file"),
        symlink("a/f9", "f7"),
        *many("b"),
        file("b/f299", b"last one, replaced"),
    )
    unpack(tmp_path / "layer", plain)
    layer = tmp_path / "layer"
    assert (layer / "a/f7").read_bytes() == b"second version"
    assert (layer / "a/f8/inside").read_bytes() == b"in a directory that was a file"
    assert os.readlink(layer / "a/f9") == "f7"
    assert (layer / "b/f299").read_bytes() == b"last one, replaced"
    assert (layer / "b/f298").read_bytes() == b"b 298" * 50


def test_hardlinks_to_files_just_written_share_their_content(tmp_path):
    plain = tar(*many("a"), hardlink("a/link", "a/f299"), hardlink("top", "a/f0"))
    unpack(tmp_path / "layer", plain)
    layer = tmp_path / "layer"
    assert os.lstat(layer / "a/link").st_ino == os.lstat(layer / "a/f299").st_ino
    assert (layer / "top").read_bytes() == b"a 0" * 50
    assert os.lstat(layer / "a/f0").st_nlink == 2


def test_an_entry_under_a_file_just_written_is_refused(tmp_path):
    plain = tar(*many("a"), file("a/f299/child", b"x"))
    with pytest.raises(StackError, match=r"'a/f299/child'.*not a directory"):
        unpack(tmp_path / "layer", plain)


def test_a_file_that_cannot_be_written_names_its_entry(tmp_path):
    bad = file("a/bad", b"x", pax_headers={"SCHILY.xattr.nonsense.key": "v"})
    with pytest.raises(StackError, match=r"xattr 'nonsense.key' on layer entry 'a/bad'") as caught:
        unpack(tmp_path / "layer", tar(*many("a", 50), bad, *many("b", 300)))
    assert "\n" not in str(caught.value)


def test_unpacking_over_existing_contents_replaces_them(tmp_path):
    layer = tmp_path / "layer"
    unpack(layer, tar(*many("a", 50), file("x", b"old"), directory("y"), file("y/z", b"old")))
    unpack(layer, tar(file("x", b"new"), file("y", b"now a file"), *many("a", 50)))
    assert (layer / "x").read_bytes() == b"new"
    assert (layer / "y").read_bytes() == b"now a file"
    assert (layer / "a/f49").read_bytes() == b"a 49" * 50
