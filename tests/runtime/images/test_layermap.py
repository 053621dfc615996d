"""Uncompressed layers mapped from their blob file: the same trees and digests as
when streamed, whatever the file holds around the tar, and large file bodies
written past the page cache where the filesystem allows it."""

from __future__ import annotations

import errno
import hashlib
import io
import mmap
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from layer_builder import MEDIA_TYPES, directory, file, hardlink, symlink, tar

from orchestrator.runtime.images.layerwriters import write_body
from orchestrator.runtime.images.unpack import unpack_layer_tar
from orchestrator.spec.errors import StackError

PLAIN = MEDIA_TYPES["plain"]
KB = 1024


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tree(root: Path) -> dict[str, tuple]:
    """What a user sees of an unpacked tree: names, kinds, modes, owners, times, bytes."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = os.lstat(path)
            content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
            link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
            seen[str(path.relative_to(root))] = (
                info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns, info.st_nlink,
                content, link,
            )
    return seen


def from_file(tmp_path: Path, data: bytes, dest: Path, offset: int = 0):
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * offset + data)
    with blob.open("rb") as stream:
        stream.seek(offset)
        return unpack_layer_tar(stream, PLAIN, dest)


def sizes_around_every_threshold() -> list[int]:
    """Body sizes on both sides of what is handed to the writer, written directly,
    cut to whole blocks, and has its writeback started."""
    return [0, 1, 511, 512, 4095, 4096, 4097, 256 * KB - 1, 256 * KB, 256 * KB + 1,
            300 * KB + 7, 1024 * KB, 1024 * KB + 1, 3 * 1024 * KB + 123]


def test_a_mapped_layer_unpacks_to_what_a_streamed_one_does(tmp_path):
    members = [directory("d", mode=0o750, mtime=7)]
    for n, size in enumerate(sizes_around_every_threshold()):
        members.append(
            file(f"d/f{size}", os.urandom(size), uid=n, gid=2 * n, mode=0o640, mtime=n)
        )
    members += [
        hardlink("d/again", f"d/f{3 * 1024 * KB + 123}"),
        symlink("d/link", f"f{256 * KB}"),
        file("d/replaced", os.urandom(2 * 1024 * KB)),
        file("d/replaced", b"small now", mode=0o600),  # a later entry wins
        file("d/big-then-gone", os.urandom(512 * KB)),
        file("d/.wh.big-then-gone"),
    ]
    plain = tar(*members)
    streamed = unpack_layer_tar(io.BytesIO(plain), PLAIN, tmp_path / "streamed")
    mapped = from_file(tmp_path, plain, tmp_path / "mapped")
    assert mapped == streamed
    assert mapped.diff_id == mapped.blob_digest == sha256(plain)
    assert tree(tmp_path / "mapped") == tree(tmp_path / "streamed")
    assert (tmp_path / "mapped/d/replaced").read_bytes() == b"small now"


def test_a_tar_that_starts_inside_its_file_is_read_and_hashed_from_there(tmp_path):
    big = os.urandom(600 * KB)
    plain = tar(file("big", big), file("small", b"s"))
    # 100 bytes in: the bodies are not block-aligned in memory, so no direct I/O.
    result = from_file(tmp_path, plain, tmp_path / "layer", offset=100)
    assert result.diff_id == result.blob_digest == sha256(plain)
    assert (tmp_path / "layer/big").read_bytes() == big


def test_bytes_after_the_end_of_the_tar_count_in_the_blob_digest(tmp_path):
    blob = tar(file("a", b"1")) + b"\0" * 4096 + b"trailing"
    result = from_file(tmp_path, blob, tmp_path / "layer")
    assert result.blob_digest == sha256(blob)


@pytest.mark.parametrize("cut", ["in a large body", "in a small body", "in a header"])
def test_a_mapped_tar_cut_short_is_refused_in_one_line(tmp_path, cut):
    plain = tar(file("big", os.urandom(2 * 1024 * KB)), file("small", b"x" * 5000))
    end = {"in a large body": 1024 * KB, "in a small body": 1024 + 2 * 1024 * KB + 2500,
           "in a header": 512 + 2 * 1024 * KB + 100}[cut]
    with pytest.raises(StackError, match="not a valid tar archive") as caught:
        from_file(tmp_path, plain[:end], tmp_path / "layer")
    assert "\n" not in str(caught.value)


def test_two_mapped_layers_unpacked_at_once_both_come_out_whole(tmp_path):
    bigs = [os.urandom(3 * 1024 * KB) for _ in range(2)]
    layers = [tar(file(f"l{n}/big", bigs[n]), file(f"l{n}/s", b"s")) for n in range(2)]
    results: dict[int, object] = {}

    def unpack(n: int) -> None:
        results[n] = from_file(tmp_path / str(n), layers[n], tmp_path / f"out{n}")

    for n in range(2):
        (tmp_path / str(n)).mkdir()
    threads = [threading.Thread(target=unpack, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n in range(2):
        assert results[n].diff_id == sha256(layers[n])
        assert (tmp_path / f"out{n}/l{n}/big").read_bytes() == bigs[n]


def resident_bytes(path: Path) -> int:
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          check=True, capture_output=True, text=True)
    return int(done.stdout.strip())


def takes_direct_io(folder: Path) -> bool:
    probe = folder / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    try:
        with mmap.mmap(-1, 4096) as buffer:
            os.write(fd, buffer)
        return True
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        return False
    finally:
        os.close(fd)
        probe.unlink()


def test_large_files_of_a_mapped_layer_are_not_left_in_the_page_cache(tmp_path):
    if shutil.which("fincore") is None or not takes_direct_io(tmp_path):
        pytest.skip("needs fincore (util-linux) and a filesystem taking direct I/O")
    big, small = os.urandom(3 * 1024 * KB + 123), os.urandom(100 * KB)
    from_file(tmp_path, tar(file("big", big), file("small", small)), tmp_path / "layer")
    # All but the last, partial block went to the disk directly; small files are
    # written through the page cache as usual.
    assert resident_bytes(tmp_path / "layer/big") <= 4096
    assert resident_bytes(tmp_path / "layer/small") == 100 * KB
    assert (tmp_path / "layer/big").read_bytes() == big


def test_a_body_direct_io_refuses_is_written_through_the_page_cache(tmp_path):
    data = os.urandom(600 * KB + 5)
    source = tmp_path / "source"
    source.write_bytes(b"?" + data)
    with source.open("rb") as stream, mmap.mmap(stream.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        view = memoryview(mapped)[1:]  # one byte off any block: no disk takes that directly
        fd = os.open(tmp_path / "target", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_body(fd, view, direct=True)
        finally:
            os.close(fd)
            view.release()
    assert (tmp_path / "target").read_bytes() == data
