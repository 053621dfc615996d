"""Layer unpacking: real files written as root into temporary directories."""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest
from layer_builder import (
    BLOB_SOURCES,
    MEDIA_TYPES,
    MTIME,
    blob_stream,
    compress,
    directory,
    file,
    hardlink,
    node,
    symlink,
    tar,
)

from orchestrator.runtime.images.unpack import unpack_layer_tar
from orchestrator.spec.errors import StackError

CAP_NET_BIND_SERVICE = b"\x01\x00\x00\x02\x00\x04\x00\x00" + b"\x00" * 12


@pytest.fixture(autouse=True, params=BLOB_SOURCES)
def blob_source(request, monkeypatch):
    """Every test runs on a blob read as a stream and on one mapped from a file."""
    monkeypatch.setattr(sys.modules[__name__], "SOURCE", request.param)


SOURCE = "memory"


def unpack(tmp_path: Path, data: bytes, media_type: str = MEDIA_TYPES["plain"]):
    dest = tmp_path / "layer"
    with blob_stream(data, SOURCE) as stream:
        return dest, unpack_layer_tar(stream, media_type, dest)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("compression", ["gzip", "zstd", "plain"])
def test_each_compression_unpacks_the_files_and_reports_the_tar_digest(tmp_path, compression):
    plain = tar(directory("etc"), file("etc/motd", b"hello\n"), file("bin/tool", b"x" * 70000))
    dest, result = unpack(tmp_path, compress(plain, compression), MEDIA_TYPES[compression])
    assert (dest / "etc/motd").read_bytes() == b"hello\n"
    assert (dest / "bin/tool").read_bytes() == b"x" * 70000
    assert result.diff_id == sha256(plain)
    assert result.size == 6 + 70000


def test_compression_is_read_from_the_data_when_the_media_type_says_otherwise(tmp_path):
    plain = tar(file("a", b"1"))
    dest, result = unpack(tmp_path, compress(plain, "gzip"), MEDIA_TYPES["plain"])
    assert (dest / "a").read_bytes() == b"1"
    assert result.diff_id == sha256(plain)
    dest, result = unpack(tmp_path / "2", compress(plain, "zstd"), MEDIA_TYPES["gzip"])
    assert (dest / "a").read_bytes() == b"1"


def test_legacy_bzip2_and_xz_layers_of_old_archives_unpack(tmp_path):
    plain = tar(file("BZh9", b"named like a bzip2 header"))
    variants = {"plain": plain, "bz2": bz2.compress(plain), "xz": lzma.compress(plain)}
    for name, data in variants.items():
        dest, result = unpack(tmp_path / name, data)
        assert (dest / "BZh9").read_bytes() == b"named like a bzip2 header"
        assert result.diff_id == sha256(plain)


def test_unknown_or_encrypted_media_types_are_refused(tmp_path):
    for media_type in ("application/json", "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"):
        with pytest.raises(StackError, match="media type"):
            unpack(tmp_path, tar(file("a")), media_type)


def test_truncated_or_garbage_layers_give_one_clear_error(tmp_path):
    gz = compress(tar(file("a", os.urandom(100000))), "gzip")
    with pytest.raises(StackError, match="truncated or corrupt"):
        unpack(tmp_path, gz[: len(gz) // 2])
    with pytest.raises(StackError, match="not a valid tar"):
        unpack(tmp_path / "2", b"this is not a tar archive at all" * 40)


def test_ownership_modes_and_mtimes_are_kept_and_dirs_get_theirs_after_content(tmp_path):
    plain = tar(
        directory("srv", uid=33, gid=44, mode=0o750, mtime=1_000_000),
        file("srv/run", b"#!/bin/sh\n", uid=1234, gid=5678, mode=0o4755, mtime=1_234_567),
        file("srv/data", b"d", mode=0o600, pax_headers={"mtime": "1500000000.123456789"}),
    )
    dest, _ = unpack(tmp_path, plain)
    run = os.lstat(dest / "srv/run")
    assert (run.st_uid, run.st_gid) == (1234, 5678)
    assert stat.S_IMODE(run.st_mode) == 0o4755  # setuid survives the chown
    assert run.st_mtime_ns == 1_234_567 * 10**9
    assert os.lstat(dest / "srv/data").st_mtime_ns == 1_500_000_000_123_456_789
    srv = os.lstat(dest / "srv")
    assert (srv.st_uid, srv.st_gid, stat.S_IMODE(srv.st_mode)) == (33, 44, 0o750)
    assert srv.st_mtime_ns == 1_000_000 * 10**9


def test_layers_with_many_directories_get_every_directory_time(tmp_path):
    members = []
    for i in range(400):
        members += [directory(f"d{i}", mtime=1000 + i), file(f"d{i}/sub/f", b"x")]
    dest, _ = unpack(tmp_path, tar(*members))
    assert all(os.lstat(dest / f"d{i}").st_mtime == 1000 + i for i in range(400))
    assert len(os.listdir("/proc/self/fd")) < 50  # no directory fd left open


def test_parent_directories_missing_from_the_tar_are_created(tmp_path):
    dest, _ = unpack(tmp_path, tar(file("usr/local/bin/x", b"1")))
    assert (dest / "usr/local/bin/x").read_bytes() == b"1"


def test_symlinks_and_hardlinks_are_kept(tmp_path):
    plain = tar(
        file("bin/busybox", b"elf", mode=0o755),
        symlink("bin/sh", "/bin/busybox", uid=7, gid=8),
        symlink("bin/ls", "busybox"),
        hardlink("bin/cat", "bin/busybox"),
    )
    dest, result = unpack(tmp_path, plain)
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"
    assert os.lstat(dest / "bin/sh").st_uid == 7
    assert os.lstat(dest / "bin/sh").st_mtime_ns == MTIME * 10**9
    assert os.readlink(dest / "bin/ls") == "busybox"
    assert os.stat(dest / "bin/cat").st_ino == os.stat(dest / "bin/busybox").st_ino
    assert result.size == 3


def test_security_capability_and_other_xattrs_from_pax_headers_are_kept(tmp_path):
    capability = CAP_NET_BIND_SERVICE.decode("utf-8", "surrogateescape")
    plain = tar(
        file(
            "bin/ping",
            b"elf",
            mode=0o755,
            uid=0,
            pax_headers={
                "SCHILY.xattr.security.capability": capability,
                "SCHILY.xattr.user.note": "hi",
                "SCHILY.xattr.trusted.overlay.redirect": "/elsewhere",
            },
        )
    )
    dest, _ = unpack(tmp_path, plain)
    assert os.getxattr(dest / "bin/ping", "security.capability") == CAP_NET_BIND_SERVICE
    assert os.getxattr(dest / "bin/ping", "user.note") == b"hi"
    assert "trusted.overlay.redirect" not in os.listxattr(dest / "bin/ping")


def test_whiteouts_become_overlay_character_devices(tmp_path):
    plain = tar(directory("etc"), file("etc/.wh.passwd", uid=0), file(".wh.tmp"))
    dest, _ = unpack(tmp_path, plain)
    for hidden in (dest / "etc/passwd", dest / "tmp"):
        info = os.lstat(hidden)
        assert stat.S_ISCHR(info.st_mode)
        assert os.major(info.st_rdev) == 0 and os.minor(info.st_rdev) == 0
    assert not (dest / "etc/.wh.passwd").exists()


def test_opaque_marker_becomes_the_overlay_opaque_xattr(tmp_path):
    plain = tar(directory("var/cache"), file("var/cache/.wh..wh..opq"), file("var/cache/new"))
    dest, _ = unpack(tmp_path, plain)
    assert os.getxattr(dest / "var/cache", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(dest / "var/cache")) == ["new"]


def test_device_nodes_and_fifos_are_created(tmp_path):
    plain = tar(
        node("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666),
        node("dev/loop9", tarfile.BLKTYPE, 7, 9),
        node("run/pipe", tarfile.FIFOTYPE, mode=0o620),
    )
    dest, _ = unpack(tmp_path, plain)
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(os.lstat(dest / "dev/loop9").st_mode)
    pipe = os.lstat(dest / "run/pipe")
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o620


def test_a_later_entry_replaces_an_earlier_one_of_the_same_name(tmp_path):
    plain = tar(
        directory("x"),
        file("x/inner", b"1"),
        file("x", b"now a file"),
        symlink("y", "/nowhere"),
        file("y", b"now a file too"),
    )
    dest, _ = unpack(tmp_path, plain)
    assert (dest / "x").read_bytes() == b"now a file"
    assert not (dest / "y").is_symlink()


def test_replacing_a_hardlinked_name_does_not_write_into_the_other_name(tmp_path):
    plain = tar(file("a", b"original"), hardlink("b", "a"), file("b", b"replaced"))
    dest, _ = unpack(tmp_path, plain)
    assert (dest / "a").read_bytes() == b"original"
    assert (dest / "b").read_bytes() == b"replaced"


# -- malicious archives ---------------------------------------------------------------

MALICIOUS = {
    "dot-dot escape": lambda canary: [file("../canary/pwned", b"x")],
    "dot-dot inside the name": lambda canary: [file("a/../../canary/pwned", b"x")],
    "absolute path": lambda canary: [file(f"{canary}/pwned", b"x")],
    "write through an absolute symlink": lambda canary: [
        symlink("link", str(canary)),
        file("link/pwned", b"x"),
    ],
    "relative symlink out of the layer": lambda canary: [symlink("usr/esc", "../../canary")],
    "hardlink to /etc/passwd": lambda canary: [hardlink("passwd", "/etc/passwd")],
    "hardlink climbing out": lambda canary: [hardlink("passwd", "../../../../etc/passwd")],
    "directory swapped for a symlink": lambda canary: [
        directory("d"),
        file("d/ok", b"fine"),
        symlink("d", str(canary)),
        file("d/pwned", b"x"),
    ],
    "deep directory swapped for a symlink": lambda canary: [
        file("d/e/f/ok", b"fine"),
        symlink("d", str(canary)),
        file("d/e/f/pwned", b"x"),
    ],
    "opaque marker through a symlink": lambda canary: [
        symlink("s", str(canary)),
        file("s/.wh..wh..opq"),
    ],
    "whiteout through a symlink": lambda canary: [symlink("s", str(canary)), file("s/.wh.x")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_layers_are_refused_naming_the_entry_and_write_nothing_outside(tmp_path, case):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep").write_bytes(b"canary")
    passwd = Path("/etc/passwd").read_bytes()
    members = MALICIOUS[case](canary)
    bad_entry = members[-1][0].name
    with pytest.raises(StackError) as caught:
        unpack(tmp_path, tar(*members))
    assert repr(bad_entry) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert sorted(os.listdir(canary)) == ["keep"]
    assert (canary / "keep").read_bytes() == b"canary"
    assert not os.listxattr(canary)
    assert Path("/etc/passwd").read_bytes() == passwd
    outside = sorted(p.name for p in tmp_path.iterdir())
    assert outside == ["canary", "layer"]


def test_device_nodes_where_mknod_is_not_permitted_give_a_clear_error(tmp_path, monkeypatch):
    def not_permitted(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", not_permitted)
    with pytest.raises(StackError, match=r"device node 'dev/null'.*CAP_MKNOD"):
        unpack(tmp_path, tar(node("dev/null", tarfile.CHRTYPE, 1, 3)))
    with pytest.raises(StackError, match=r"whiteout for layer entry 'etc/\.wh\.x'.*CAP_MKNOD"):
        unpack(tmp_path / "2", tar(file("etc/.wh.x")))


def test_files_get_their_exact_mode_under_a_default_acl_of_the_layer(tmp_path):
    # user::rwx group::r-x other::--- as the kernel stores a default ACL: it, not
    # the umask, decides what a new file's mode keeps.
    acl = b"\x02\x00\x00\x00" + b"".join(
        tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + b"\xff\xff\xff\xff"
        for tag, perm in ((0x01, 7), (0x04, 5), (0x20, 0))
    )
    plain = tar(
        directory("d", pax_headers={
            "SCHILY.xattr.system.posix_acl_default": acl.decode("utf-8", "surrogateescape"),
        }),
        file("d/f", b"x", mode=0o644),
    )
    dest, _ = unpack(tmp_path, plain)
    assert stat.S_IMODE(os.lstat(dest / "d/f").st_mode) == 0o644
