"""The layer tar reader against archives written by Python's tarfile (GNU, PAX,
USTAR) and by GNU tar itself, and against damaged headers."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from layer_builder import MEDIA_TYPES, directory, file, hardlink, node, symlink

from orchestrator.runtime.images import tarentries
from orchestrator.runtime.images.tarentries import TarReader
from orchestrator.runtime.images.unpack import unpack_layer_tar
from orchestrator.spec.errors import StackError

LONG_DIR = "usr/share/" + "/".join(f"deeply-nested-directory-{n}" for n in range(6))
LONG_NAME = f"{LONG_DIR}/a-file-name-long-enough-to-need-an-extension-header.txt"
LONG_TARGET = "usr/share/" + "x" * 150
BIG_UID = 3_000_000  # above 0o7777777: GNU tar and tarfile write it in base 256
CAPABILITY = b"\x01\x00\x00\x02\x00\x04\x00\x00" + b"\x00" * 12


def read_all(data: bytes) -> list[tuple[tarentries.TarEntry, bytes]]:
    reader = TarReader(io.BytesIO(data).read)
    return [(entry, reader.body()) for entry in reader]


def write(members: list, tar_format: int, **options: object) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format, **options) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def described(entry: tarentries.TarEntry, body: bytes) -> tuple:
    return (entry.name.rstrip("/"), entry.kind, entry.mode, entry.uid, entry.gid,
            entry.mtime_ns // 10**9, entry.linkname, entry.devmajor, entry.devminor, body)


def as_tarfile_reads_it(data: bytes) -> list[tuple]:
    kinds = {tarfile.AREGTYPE: tarentries.REGULAR, tarfile.CONTTYPE: tarentries.REGULAR}
    found = []
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for info in archive:
            source = archive.extractfile(info) if info.isreg() else None
            found.append((info.name.rstrip("/"), kinds.get(info.type, info.type), info.mode,
                          info.uid, info.gid, int(info.mtime), info.linkname, info.devmajor,
                          info.devminor, source.read() if source else b""))
    return found


def common_members(long_links: bool = True) -> list:
    members = [
        directory("etc", mode=0o750),
        file("etc/motd", b"hello\n", uid=12, gid=34, mode=0o640, mtime=1_234_567),
        directory(LONG_DIR),
        file(LONG_NAME, b"long" * 300),
        symlink("bin/sh", "busybox"),
        hardlink("etc/motd.link", "etc/motd"),
        node("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666),
        node("dev/loop9", tarfile.BLKTYPE, 7, 9),
        node("run/pipe", tarfile.FIFOTYPE),
        file("empty", b""),
        file("exactly-a-block", b"b" * 512),
    ]
    if long_links:
        members.append(symlink("lib/far", LONG_TARGET))
    return members


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT,
                                        tarfile.USTAR_FORMAT], ids=["gnu", "pax", "ustar"])
def test_archives_written_by_tarfile_read_as_tarfile_reads_them(tar_format):
    data = write(common_members(long_links=tar_format != tarfile.USTAR_FORMAT), tar_format)
    ours = [described(entry, body) for entry, body in read_all(data)]
    assert ours == as_tarfile_reads_it(data)
    assert LONG_NAME in [name for name, *_ in ours]


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
                         ids=["gnu-base256", "pax-records"])
def test_owners_above_the_octal_range_are_read(tar_format):
    data = write([file("f", b"x", uid=BIG_UID, gid=BIG_UID + 1)], tar_format)
    ((entry, _),) = read_all(data)
    assert (entry.uid, entry.gid) == (BIG_UID, BIG_UID + 1)


def test_pax_extended_attributes_times_and_global_headers_apply():
    members = [
        file("bin/ping", b"elf", pax_headers={
            "SCHILY.xattr.security.capability": CAPABILITY.decode("utf-8", "surrogateescape"),
            "LIBARCHIVE.xattr.user.note%3Dx": "aGk",  # bsdtar: URL-encoded name, base64 value
            "mtime": "1500000000.123456789",
            "atime": "1400000000.5",
        }),
        file("plain", b"p"),
    ]
    data = write(members, tarfile.PAX_FORMAT, pax_headers={"uid": "4242"})  # a 'g' header
    (ping, _), (plain, _) = read_all(data)
    assert ping.xattrs == {"security.capability": CAPABILITY, "user.note=x": b"hi"}
    assert (ping.mtime_ns, ping.atime_ns) == (1_500_000_000_123_456_789, 1_400_000_000_500_000_000)
    assert ping.uid == plain.uid == 4242
    assert plain.xattrs == {}


def test_an_old_style_directory_is_a_regular_entry_with_a_trailing_slash():
    info = tarfile.TarInfo("olddir/")
    info.type = tarfile.AREGTYPE
    ((entry, _),) = read_all(write([(info, None)], tarfile.USTAR_FORMAT))
    assert entry.kind == tarentries.DIRECTORY


# -- GNU tar ------------------------------------------------------------------------------

needs_gnu_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")


def gnu_tar(source: Path, *options: str) -> bytes:
    return subprocess.run(
        ["tar", "-c", "-f", "-", "-C", str(source), "--sort=name", *options, "."],
        check=True, capture_output=True,
    ).stdout


@pytest.fixture
def tree(tmp_path):
    source = tmp_path / "source"
    (source / LONG_DIR).mkdir(parents=True)
    (source / LONG_NAME).write_bytes(b"long" * 300)
    (source / "ping").write_bytes(b"elf")
    os.setxattr(source / "ping", "user.note", b"hi")
    (source / "ping-link").symlink_to(LONG_TARGET)
    os.link(source / "ping", source / "ping-again")
    return source


@needs_gnu_tar
@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_archives_written_by_gnu_tar_read_as_tarfile_reads_them(tree, tar_format):
    data = gnu_tar(tree, f"--format={tar_format}", "--xattrs", "--xattrs-include=user.*",
                   "--owner=big:3000000", "--group=big:3000001")
    entries = read_all(data)
    assert [described(entry, body) for entry, body in entries] == as_tarfile_reads_it(data)
    by_name = {entry.name.removeprefix("./"): entry for entry, _ in entries}
    assert by_name[LONG_NAME].size == 1200
    assert by_name["ping-link"].linkname == LONG_TARGET
    assert by_name["ping-again"].kind in (tarentries.HARDLINK, tarentries.REGULAR)
    assert {(entry.uid, entry.gid) for entry, _ in entries} == {(BIG_UID, BIG_UID + 1)}
    if tar_format == "posix":
        assert by_name["ping"].xattrs == {"user.note": b"hi"}


@needs_gnu_tar
def test_a_gnu_tar_layer_unpacks_with_its_long_names_links_and_xattrs(tree, tmp_path):
    data = gnu_tar(tree, "--format=posix", "--xattrs", "--xattrs-include=user.*",
                   "--owner=big:3000000", "--group=big:3000001")
    dest = tmp_path / "layer"
    unpack_layer_tar(io.BytesIO(data), MEDIA_TYPES["plain"], dest)
    assert (dest / LONG_NAME).read_bytes() == b"long" * 300
    assert os.readlink(dest / "ping-link") == LONG_TARGET
    assert os.getxattr(dest / "ping", "user.note") == b"hi"
    assert os.stat(dest / "ping-again").st_ino == os.stat(dest / "ping").st_ino
    assert os.lstat(dest / "ping").st_uid == BIG_UID


@needs_gnu_tar
@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_sparse_files_are_refused_naming_the_entry(tmp_path, tar_format):
    source = tmp_path / "source"
    source.mkdir()
    with open(source / "holes", "wb") as holes:
        holes.truncate(1 << 20)
        holes.write(b"data")
    data = gnu_tar(source, f"--format={tar_format}", "--sparse")
    with pytest.raises(StackError, match=r"'(\./)?holes' is a GNU sparse file") as caught:
        read_all(data)
    assert "\n" not in str(caught.value)


# -- damaged archives ---------------------------------------------------------------------


def damaged(change) -> bytes:
    data = bytearray(write([file("a", b"x" * 1000), file("b", b"y")], tarfile.PAX_FORMAT))
    change(data)
    return bytes(data)


def with_checksum(data: bytearray, at: int = 0) -> None:
    """Fix the checksum of the header at `at` after a deliberate change."""
    data[at + 148 : at + 156] = b" " * 8
    data[at + 148 : at + 156] = b"%06o\0 " % sum(data[at : at + 512])


def set_field(at: int, value: bytes):
    def change(data: bytearray) -> None:
        data[at : at + len(value)] = value
        with_checksum(data)
    return change


def cut(length: int):
    def change(data: bytearray) -> None:
        del data[length:]
    return change


def huge_long_name(data: bytearray) -> None:
    data[156:157] = b"L"
    data[124:136] = b"%011o\0" % (tarentries.META_LIMIT + 1)
    with_checksum(data)


def bad_pax(data: bytearray) -> None:
    pax = write([file("a", b"", pax_headers={"comment": "c"})], tarfile.PAX_FORMAT)
    broken = bytearray(pax[:1024])
    broken[512:530] = b"99 comment=broken\n"  # says 99 bytes, has 18
    data[:0] = broken


DAMAGE = {
    "bad checksum": (lambda data: data.__setitem__(10, 0x41), "bad checksum"),
    "size not a number": (set_field(124, b"12x45678901\0"), "invalid header"),
    "negative size": (set_field(124, b"\xff" * 12), "invalid header"),
    "header cut short": (cut(1536 + 100), "truncated header"),  # in b's header
    "content cut short": (cut(512 + 600), "entry 'a' is cut short"),
    "padding cut short": (cut(512 + 1010), "unexpected end of data"),
    "huge long name": (huge_long_name, "extension header of 1048577 bytes"),
    "bad PAX record": (bad_pax, "invalid PAX header"),
    "empty file": (cut(0), "empty file"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_headers_give_one_clear_error(case):
    change, message = DAMAGE[case]
    with pytest.raises(StackError, match="layer is not a valid tar archive") as caught:
        read_all(damaged(change))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_archive_without_its_end_marker_still_ends_cleanly():
    data = write([file("a", b"x" * 1000)], tarfile.PAX_FORMAT)
    ((entry, body),) = read_all(data[: 512 + 1024])  # header, content, padding, no zeros
    assert (entry.name, body) == ("a", b"x" * 1000)


def test_contents_arrive_in_pieces_when_the_stream_gives_little_at_a_time():
    data = write(common_members(), tarfile.PAX_FORMAT)
    stream = io.BytesIO(data)
    reader = TarReader(lambda most: stream.read(min(most, 7)))
    trickled = [described(entry, reader.body()) for entry in reader]
    assert trickled == [described(entry, body) for entry, body in read_all(data)]
