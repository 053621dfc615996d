"""Copy-up: an empty volume takes the image's files at its mount target, as with Docker."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from orchestrator.runtime.volumes import copy_into_volume

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners and device nodes need root")


def image_folder(base: Path) -> Path:
    """An image path like /var/lib/db: owned by a service user, with every kind of entry."""
    src = base / "image" / "var" / "lib" / "db"
    (src / "conf").mkdir(parents=True)
    (src / "conf" / "db.conf").write_text("port = 5432\n")
    os.chmod(src / "conf" / "db.conf", 0o640)
    os.chown(src / "conf" / "db.conf", 999, 998)
    (src / "private").mkdir(mode=0o700)
    os.chown(src / "private", 999, 999)
    (src / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "tool", 0o4755)
    os.link(src / "conf" / "db.conf", src / "private" / "db.conf.link")
    os.symlink("conf/db.conf", src / "relative-link")
    os.symlink("/etc/shadow", src / "absolute-link")
    os.symlink("../../../../outside", src / "escaping-link")
    os.symlink(base / "outside-dir", src / "escaping-dir-link")
    os.mkfifo(src / "pipe")
    os.chmod(src / "pipe", 0o620)
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.utime(src / "conf" / "db.conf", ns=(1_000_000_000, 1_500_000_000_123))
    os.utime(src / "conf", ns=(2_000_000_000, 2_000_000_000))
    os.chown(src, 999, 999)
    os.chmod(src, 0o750)
    return src


def test_empty_volume_gets_owners_modes_times_links_and_nodes(tmp_path: Path) -> None:
    src = image_folder(tmp_path)
    (tmp_path / "outside").write_text("must not be read")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "secret").write_text("must not be read")
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o755)

    assert copy_into_volume(src, volume) is True

    root = volume.stat()
    assert (root.st_uid, root.st_gid, stat.S_IMODE(root.st_mode)) == (999, 999, 0o750)
    conf = (volume / "conf" / "db.conf").stat()
    assert (volume / "conf" / "db.conf").read_text() == "port = 5432\n"
    assert (conf.st_uid, conf.st_gid, stat.S_IMODE(conf.st_mode)) == (999, 998, 0o640)
    assert conf.st_mtime_ns == 1_500_000_000_123
    assert (volume / "conf").stat().st_mtime_ns == 2_000_000_000
    assert stat.S_IMODE((volume / "tool").stat().st_mode) == 0o4755
    assert stat.S_IMODE((volume / "private").stat().st_mode) == 0o700
    assert (volume / "private" / "db.conf.link").stat().st_ino == conf.st_ino
    assert conf.st_nlink == 2
    assert os.readlink(volume / "relative-link") == "conf/db.conf"
    assert os.readlink(volume / "absolute-link") == "/etc/shadow"
    assert os.readlink(volume / "escaping-link") == "../../../../outside"
    assert (volume / "escaping-dir-link").is_symlink()
    assert os.readlink(volume / "escaping-dir-link") == str(tmp_path / "outside-dir")
    assert stat.S_ISFIFO((volume / "pipe").lstat().st_mode)
    assert stat.S_IMODE((volume / "pipe").lstat().st_mode) == 0o620
    null = (volume / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert sorted(os.listdir(volume)) == sorted(os.listdir(src))


def test_volume_with_anything_in_it_is_left_alone(tmp_path: Path) -> None:
    src = image_folder(tmp_path)
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / ".keep").write_text("")

    assert copy_into_volume(src, volume) is False
    assert os.listdir(volume) == [".keep"]
    assert volume.stat().st_uid == 0


def test_volume_emptied_by_hand_is_filled_again(tmp_path: Path) -> None:
    src = image_folder(tmp_path)
    volume = tmp_path / "volume"
    volume.mkdir()
    assert copy_into_volume(src, volume) is True
    for entry in volume.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            for path in sorted(entry.rglob("*"), reverse=True):
                path.unlink()
            entry.rmdir()
        else:
            entry.unlink()
    assert copy_into_volume(src, volume) is True
    assert (volume / "conf" / "db.conf").exists()


def test_missing_image_folder_copies_nothing(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    assert copy_into_volume(tmp_path / "not-in-image", volume) is False
    (tmp_path / "a-file").write_text("")
    assert copy_into_volume(tmp_path / "a-file", volume) is False
    assert os.listdir(volume) == []


def test_empty_image_folder_still_gives_the_volume_its_owner(tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.mkdir(mode=0o700)
    os.chown(src, 1000, 1000)
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o755)
    assert copy_into_volume(src, volume) is True
    info = volume.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode), os.listdir(volume)) == (1000, 0o700, [])


def test_extended_attributes_are_copied_where_the_filesystem_has_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("x")
    try:
        os.setxattr(src / "file", "user.origin", b"image")
    except OSError:
        pytest.skip("no user xattrs on this filesystem")
    volume = tmp_path / "volume"
    volume.mkdir()
    assert copy_into_volume(src, volume) is True
    assert os.getxattr(volume / "file", "user.origin") == b"image"


def test_file_capabilities_survive_the_change_of_owner(tmp_path: Path) -> None:
    """A chown drops security.capability, so it must be set after the owner."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "ping").write_bytes(b"\x7fELF")
    os.chown(src / "ping", 999, 999)
    net_raw = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw+ep
    try:
        os.setxattr(src / "ping", "security.capability", net_raw)
    except OSError:
        pytest.skip("no file capabilities on this filesystem")
    volume = tmp_path / "volume"
    volume.mkdir()
    assert copy_into_volume(src, volume) is True
    assert (volume / "ping").stat().st_uid == 999
    assert os.getxattr(volume / "ping", "security.capability") == net_raw


def test_volume_named_through_an_open_descriptor_is_filled(tmp_path: Path) -> None:
    """The launcher names the volume as /proc/self/fd/N of an O_PATH descriptor."""
    src = image_folder(tmp_path)
    volume = tmp_path / "volume"
    volume.mkdir()
    fd = os.open(volume, os.O_PATH | os.O_CLOEXEC)
    try:
        assert copy_into_volume(src, Path(f"/proc/self/fd/{fd}")) is True
    finally:
        os.close(fd)
    assert (volume / "conf" / "db.conf").read_text() == "port = 5432\n"


def test_failed_copy_leaves_the_volume_empty_for_the_next_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = image_folder(tmp_path)
    volume = tmp_path / "volume"
    volume.mkdir()
    real_mknod = os.mknod

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "mknod", disk_full)
    with pytest.raises(OSError, match="No space left"):
        copy_into_volume(src, volume)
    assert os.listdir(volume) == []
    monkeypatch.setattr(os, "mknod", real_mknod)
    assert copy_into_volume(src, volume) is True
