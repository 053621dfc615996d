"""Copy-up: an empty named volume takes the image's files at its mount target.

Docker's rule: when a volume is mounted over a folder of the image and the
volume is empty, the folder's content is copied in first — with owners,
modes, times, symlinks, hard links, device nodes and extended attributes — and
the volume's root takes the folder's owner and mode. That is how a fresh
database volume ends up owned by the database's user. A volume with anything
in it is left alone (so one emptied by hand is filled again: Docker does that too).

This runs in the launcher, inside the container's mount namespace, before the
container's own process exists; so it is plain os calls, no threads and no
trio. Containers that start together with one new volume copy one at a time
(a lock on the volume's folder), so only the first fills it and none mounts
it half-filled. The image is not trusted: every step walks by directory
descriptor and never follows a symlink, so a link planted in the image cannot
make us read or write outside the two trees.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Errors that mean "this filesystem cannot do that", never "the data is wrong".
_UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EINVAL, errno.ENODATA)
_CHUNK = 1 << 20


def copy_into_volume(source_dir: Path, volume_data: Path) -> bool:
    """Copy `source_dir`'s tree into `volume_data` if the volume is empty.

    `source_dir` is a path the caller resolves inside the container's root
    (after pivot_root, so even a link there stays inside); if it is missing or
    not a folder there is nothing to copy. True when the volume was filled
    (even from an empty folder, whose owner and mode it then took). On an
    error the volume is emptied again, so the next start tries afresh instead
    of keeping half a copy.
    """
    try:
        source = os.open(source_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        # Ours, and may be named through /proc/self/fd: followed.
        target = os.open(volume_data, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(target, fcntl.LOCK_EX)  # released when `target` is closed
            if os.listdir(target):
                return False
            try:
                _copy_tree(source, target, target, "", os.fstat(source).st_dev, {})
                _copy_metadata(os.fstat(source), target, source)
            except BaseException:
                _empty(target)
                raise
            return True
        finally:
            os.close(target)
    finally:
        os.close(source)


def _copy_tree(
    source: int, target: int, root: int, prefix: str, device: int,
    linked: dict[tuple[int, int], str],
) -> None:
    """Copy the entries of the open folder `source` into the open folder `target`.

    `root` is the volume's root and `prefix` where `target` sits in it, so a
    second name of an already copied inode becomes a hard link to the first.
    """
    for name in os.listdir(source):
        info = os.stat(name, dir_fd=source, follow_symlinks=False)
        mode = info.st_mode
        relative = f"{prefix}{name}"
        if not stat.S_ISDIR(mode) and info.st_nlink > 1:
            first = linked.get((info.st_dev, info.st_ino))
            if first is not None:
                os.link(first, name, src_dir_fd=root, dst_dir_fd=target, follow_symlinks=False)
                continue
            linked[(info.st_dev, info.st_ino)] = relative
        if stat.S_ISDIR(mode):
            _copy_folder(source, target, root, name, relative, info, device, linked)
        elif stat.S_ISREG(mode):
            _copy_file(source, target, name, info)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=source), name, dir_fd=target)
            _chown(name, info, dir_fd=target)
            os.utime(name, ns=(info.st_atime_ns, info.st_mtime_ns), dir_fd=target,
                     follow_symlinks=False)
        else:  # device nodes, fifos and sockets: made anew, never opened
            os.mknod(name, mode, info.st_rdev, dir_fd=target)
            _chown(name, info, dir_fd=target)
            os.chmod(name, stat.S_IMODE(mode), dir_fd=target)
            os.utime(name, ns=(info.st_atime_ns, info.st_mtime_ns), dir_fd=target)


def _copy_folder(
    source: int, target: int, root: int, name: str, relative: str, info: os.stat_result,
    device: int, linked: dict[tuple[int, int], str],
) -> None:
    os.mkdir(name, 0o700, dir_fd=target)
    child_target = os.open(name, _DIR_FLAGS, dir_fd=target)
    try:
        # A folder on another filesystem is something mounted there, not image content:
        # it is made, empty, as a place for that mount.
        if info.st_dev != device:
            _copy_metadata(info, child_target, None)
            return
        child_source = os.open(name, _DIR_FLAGS, dir_fd=source)
        try:
            _copy_tree(child_source, child_target, root, f"{relative}/", device, linked)
            _copy_metadata(info, child_target, child_source)
        finally:
            os.close(child_source)
    finally:
        os.close(child_target)


def _copy_file(source: int, target: int, name: str, info: os.stat_result) -> None:
    reader = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=source)
    try:
        writer = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=target)
        try:
            _copy_bytes(reader, writer)
            _copy_metadata(info, writer, reader)
        finally:
            os.close(writer)
    finally:
        os.close(reader)


def _copy_bytes(reader: int, writer: int) -> None:
    """In-kernel copy where the filesystems allow it (a reflink on some), else read/write."""
    try:
        while os.copy_file_range(reader, writer, 1 << 30):
            pass
        return
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    # Both offsets moved together, so read/write carries on where the kernel stopped.
    while chunk := os.read(reader, _CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(writer, view):]


def _copy_metadata(info: os.stat_result, fd: int, xattrs_from: int | None) -> None:
    """Owner, mode, extended attributes, times — in that order, on an open file or folder.

    A chown clears set-id bits and `security.capability`, so mode and
    attributes follow it; anything made inside a folder moves its times, so
    those go last.
    """
    _chown(fd, info)
    os.chmod(fd, stat.S_IMODE(info.st_mode))
    if xattrs_from is not None:
        _copy_xattrs(xattrs_from, fd)
    os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))


def _chown(where: int | str, info: os.stat_result, *, dir_fd: int | None = None) -> None:
    try:
        if isinstance(where, int):
            os.chown(where, info.st_uid, info.st_gid)
        else:
            os.chown(where, info.st_uid, info.st_gid, dir_fd=dir_fd, follow_symlinks=False)
    except PermissionError:
        if os.geteuid() == 0:
            raise  # only an unprivileged caller (tests) may end up owning the copies


def _copy_xattrs(reader: int, writer: int) -> None:
    try:
        names = os.listxattr(reader)
    except OSError as error:
        if error.errno in _UNSUPPORTED:
            return
        raise
    for attribute in names:
        try:
            os.setxattr(writer, attribute, os.getxattr(reader, attribute))
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                raise


def _empty(folder: int) -> None:
    """Remove everything inside the open folder `folder`."""
    for name in os.listdir(folder):
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            child = os.open(name, _DIR_FLAGS, dir_fd=folder)
            try:
                _empty(child)
            finally:
                os.close(child)
            os.rmdir(name, dir_fd=folder)
        else:
            os.unlink(name, dir_fd=folder)
