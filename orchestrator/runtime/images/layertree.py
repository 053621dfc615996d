"""Writing a layer's tree without ever leaving it.

Every operation takes an entry's normalized name components and walks down from
the layer root one directory file descriptor at a time, opening each component
with O_NOFOLLOW|O_DIRECTORY. A component that is a symlink (or not a directory)
stops the walk with an error, so a layer cannot plant `lib -> /etc` and then
write `lib/passwd` through it. The final component is always created fresh
(an existing non-directory is unlinked first, never opened), so it cannot be a
symlink we follow either. Host paths are never built from entry names, except
`/proc/self/fd/<dirfd>/<name>` for the few calls that have no `*at` form; there
the directory is an fd we walked to and the name is one component looked up
without following.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from orchestrator.runtime.images.layerwriters import (
    WRITEBACK_EVERY,
    Data,
    FileJob,
    FileWriters,
    create_file,
    finish_file,
    process_umask,
    set_xattrs,
    start_writeback,
    write_all,
)
from orchestrator.spec.errors import StackError

Parts = tuple[str, ...]
Owner = tuple[int, int]
Times = tuple[int, int]  # (atime_ns, mtime_ns)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_CACHED_DIRS = 256  # open fds; well under the usual limit of 1024
_DEFAULT_ACL = "system.posix_acl_default"
_ALL_MASKED = 0o7777


def entry_parts(name: str) -> Parts:
    """The components of a tar entry name, refusing names that leave the layer.

    `./a//b/` -> ("a", "b"); `a/../b` -> ("b",); `/etc/x` and `../x` are refused.
    Lexical `..` handling is enough here because the walk never follows a link.
    """
    if name.startswith("/"):
        raise StackError(f"layer entry {name!r} has an absolute path; refusing to unpack it")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise StackError(
                    f"layer entry {name!r} points outside the layer; refusing to unpack it"
                )
            parts.pop()
        else:
            parts.append(part)
    return tuple(parts)


def link_parts(linkname: str, entry: str) -> Parts:
    """The components of a hardlink's target (archive-relative, like entry names)."""
    try:
        return entry_parts(linkname.lstrip("/") if linkname.startswith("/") else linkname)
    except StackError:
        raise StackError(
            f"layer entry {entry!r} is a hardlink to {linkname!r}, outside the layer; "
            "refusing to unpack it"
        ) from None


def _check_symlink_target(parts: Parts, name: str, target: str) -> None:
    """Refuse a relative target that climbs above the layer root.

    Absolute targets are fine: in a container they resolve inside its root, and
    this module never follows links while writing. This is Docker's rule too.
    """
    if not target or "\0" in target:
        raise StackError(f"layer entry {name!r} is a symlink with an empty target")
    if target.startswith("/"):
        return
    depth = len(parts) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise StackError(
                    f"layer entry {name!r} is a symlink to {target!r}, outside the layer; "
                    "refusing to unpack it"
                )
        elif part not in ("", "."):
            depth += 1


class LayerTree:
    """An open layer directory that entries are written into, in tar order.

    Small regular files may be written by a writer thread (layerwriters.py);
    every other operation first waits for the pending writes it depends on.
    """

    def __init__(self, dest: Path, direct_io: bool = False) -> None:
        """`direct_io`: whole file bodies will be block-aligned views of a mapped
        blob, which may be written with direct I/O (layerwriters.write_body)."""
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        self._root = os.open(dest, _DIR_FLAGS)
        if created:
            os.fchmod(self._root, 0o755)  # a rootfs `/` unless the tar says otherwise
        # The names this layer made, when it started from an empty directory: any
        # other name is known not to exist, so a new entry is created without first
        # looking for something to replace. None when `dest` had contents.
        self._made: set[Parts] | None = set() if created or not os.listdir(dest) else None
        self._writers = FileWriters(direct_io=direct_io)
        # What creating a file with a mode leaves of it: the umask's doing, unless
        # a default ACL decides instead (then every file gets fchmod, as if all
        # bits were masked).
        self._umask = process_umask()
        if _DEFAULT_ACL in os.listxattr(self._root):
            self._umask = _ALL_MASKED
        # Directories we walked to, by their components: entries of a tar come
        # grouped by directory, so most walks start from a cached fd. The root
        # is the () entry. Only removing a tree invalidates entries (its own).
        self._dirs: dict[Parts, int] = {(): self._root}
        # Directory times are set last: writing into a directory changes its mtime.
        self._dir_times: dict[Parts, Times] = {}

    def __enter__(self) -> LayerTree:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._writers.close()  # before their directory fds are closed
        self._forget(())
        os.close(self._root)

    # -- walking ----------------------------------------------------------------

    def _dir(self, dirs: Parts, name: str, create: bool) -> int:
        """A borrowed fd of the directory `dirs` (made if missing when `create`).

        FileNotFoundError if it is missing and not `create`.
        """
        fd = self._dirs.get(dirs)
        if fd is not None:
            return fd
        cached = len(dirs)
        while dirs[:cached] not in self._dirs:
            cached -= 1
        fd = self._dirs[dirs[:cached]]
        for depth in range(cached, len(dirs)):
            part = dirs[depth]
            self._writers.wait_for(dirs[: depth + 1])  # a file being written there is no dir
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                self._note_made(dirs[: depth + 1])
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                if not isinstance(error, NotADirectoryError) and error.errno != errno.ELOOP:
                    raise
                where = "/".join(dirs[: depth + 1])
                raise StackError(
                    f"layer entry {name!r} would be written through {where!r}, "
                    "which is a symlink or not a directory; refusing to unpack it"
                ) from None
            self._dirs[dirs[: depth + 1]] = fd = child
        return fd

    def _parent(self, parts: Parts, name: str) -> int:
        """The (borrowed) fd of the directory holding `parts[-1]`, made if missing.

        Called first by every entry: the cache is trimmed here, never while an
        entry holds borrowed fds.
        """
        self._trim()
        return self._dir(parts[:-1], name, create=True)

    def _trim(self) -> None:
        if len(self._dirs) > _MAX_CACHED_DIRS:
            self._forget(())

    def _forget(self, tree: Parts) -> None:
        """Close the cached fds of `tree` and everything under it (the root stays)."""
        self._writers.barrier()  # workers may be writing into any of them
        for key in [k for k in self._dirs if k[: len(tree)] == tree and k]:
            os.close(self._dirs.pop(key))

    def _note_made(self, parts: Parts) -> None:
        if self._made is not None:
            self._made.add(parts)

    def _clear(self, parent: int, parts: Parts, keep_dir: bool) -> bool:
        """Make room for a new entry at `parts`; True if a directory stays to merge into.

        The entry is then created at `parts`, so it counts as made from here on.
        """
        if self._made is not None and parts not in self._made:
            self._made.add(parts)
            return False  # a fresh tree has only what this layer made: nothing to replace
        self._note_made(parts)
        self._writers.wait_for(parts)  # a later entry replaces the earlier one, in order
        self._dir_times.pop(parts, None)
        try:
            existing = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(existing.st_mode):
            if keep_dir:
                return True
            self._forget(parts)  # `parent` itself is not under `parts`: it stays open
            shutil.rmtree(parts[-1], dir_fd=parent)
            self._drop_times_under(parts)
        else:
            os.unlink(parts[-1], dir_fd=parent)
        return False

    def _drop_times_under(self, parts: Parts) -> None:
        for key in [k for k in self._dir_times if k[: len(parts)] == parts]:
            del self._dir_times[key]

    @staticmethod
    def _proc(parent: int, name: str) -> str:
        return f"/proc/self/fd/{parent}/{name}"

    # -- entries ----------------------------------------------------------------

    def write_file(
        self, parts: Parts, name: str, body: Data | Callable[[int], Data],
        size: int,
        owner: Owner, mode: int, times: Times, xattrs: dict[str, bytes],
    ) -> None:
        """A regular file of `size` bytes: `body` itself, or read by `body(most)` calls.

        A body given whole is written by a worker thread; a streamed one (large
        files, whose bytes are not all held at once) here, while workers go on.
        """
        self._require_name(parts, name)
        parent = self._parent(parts, name)
        self._clear(parent, parts, keep_dir=False)
        if not callable(body):
            self._writers.submit(
                FileJob(parts, name, parent, body, owner, mode, times, xattrs, self._umask)
            )
            return
        fd = create_file(parent, parts[-1], mode)
        try:
            left = size
            while left:
                chunk = body(left)
                if not chunk:
                    raise StackError(
                        f"layer is not a valid tar archive: entry {name!r} is cut short"
                    )
                write_all(fd, chunk)
                left -= len(chunk)
                if (size - left) % WRITEBACK_EVERY < len(chunk):
                    start_writeback(fd)  # a huge file goes to disk as it is written
            finish_file(fd, name, owner, mode, times, xattrs, self._umask)
            start_writeback(fd)
        finally:
            os.close(fd)

    def make_dir(
        self, parts: Parts, name: str, owner: Owner, mode: int, times: Times,
        xattrs: dict[str, bytes],
    ) -> None:
        if _DEFAULT_ACL in xattrs:
            self._umask = _ALL_MASKED
        if not parts:
            fd = os.dup(self._root)
        else:
            parent = self._parent(parts, name)
            if not self._clear(parent, parts, keep_dir=True):
                os.mkdir(parts[-1], 0o700, dir_fd=parent)
            fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
        try:
            self._apply_fd(fd, owner, mode, xattrs, name)
        finally:
            os.close(fd)
        self._dir_times[parts] = times

    def symlink(
        self, parts: Parts, name: str, target: str, owner: Owner, times: Times,
        xattrs: dict[str, bytes],
    ) -> None:
        self._require_name(parts, name)
        _check_symlink_target(parts, name, target)
        parent = self._parent(parts, name)
        self._clear(parent, parts, keep_dir=False)
        os.symlink(target, parts[-1], dir_fd=parent)
        os.chown(parts[-1], *owner, dir_fd=parent, follow_symlinks=False)
        set_xattrs(self._proc(parent, parts[-1]), xattrs, name)
        os.utime(parts[-1], ns=times, dir_fd=parent, follow_symlinks=False)

    def hardlink(self, parts: Parts, name: str, target: Parts, linkname: str) -> None:
        """A second name for a file this layer already wrote (never for anything else)."""
        self._require_name(parts, name)
        self._writers.wait_for(target)
        self._writers.wait_for(parts)
        missing = StackError(
            f"layer entry {name!r} is a hardlink to {linkname!r}, "
            "which is not in the layer (yet); refusing to unpack it"
        )
        if not target:
            raise missing
        try:
            target_dir = self._dir(target[:-1], name, create=False)
            found = os.stat(target[-1], dir_fd=target_dir, follow_symlinks=False)
        except FileNotFoundError:
            raise missing from None
        if stat.S_ISDIR(found.st_mode):
            raise StackError(f"layer entry {name!r} is a hardlink to a directory")
        parent = self._parent(parts, name)
        try:
            existing = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if (existing.st_dev, existing.st_ino) == (found.st_dev, found.st_ino):
                return  # already the same file
        except FileNotFoundError:
            pass
        self._clear(parent, parts, keep_dir=False)
        target_dir = self._dir(target[:-1], name, create=False)  # _clear may have closed it
        os.link(
            target[-1], parts[-1], src_dir_fd=target_dir, dst_dir_fd=parent,
            follow_symlinks=False,
        )

    def make_node(
        self, parts: Parts, name: str, kind: int, device: int, owner: Owner, mode: int,
        times: Times, xattrs: dict[str, bytes],
    ) -> None:
        """A device node or fifo. Creating devices needs CAP_MKNOD (root, not in a userns)."""
        self._require_name(parts, name)
        parent = self._parent(parts, name)
        self._clear(parent, parts, keep_dir=False)
        try:
            os.mknod(parts[-1], kind | 0o600, device, dir_fd=parent)
        except PermissionError:
            raise StackError(
                f"cannot create device node {name!r} from the layer: not permitted",
                hint="unpacking images with device nodes needs root (CAP_MKNOD)",
            ) from None
        self._apply_path(parent, parts[-1], owner, mode, times, xattrs, name)

    def whiteout(self, parts: Parts, name: str, uid: int, gid: int, times: Times) -> None:
        """`.wh.x` -> character device 0:0 named `x`: overlayfs hides `x` of lower layers."""
        parent = self._parent(parts, name)
        self._clear(parent, parts, keep_dir=False)
        try:
            os.mknod(parts[-1], stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
        except PermissionError:
            raise StackError(
                f"cannot create the overlay whiteout for layer entry {name!r}: not permitted",
                hint="unpacking layers with deletions needs root (CAP_MKNOD)",
            ) from None
        self._apply_path(parent, parts[-1], (uid, gid), 0, times, {}, name)

    def mark_opaque(self, dirs: Parts, name: str) -> None:
        """`dir/.wh..wh..opq` -> xattr trusted.overlay.opaque=y: hide all of lower `dir`."""
        self._trim()
        self._note_made(dirs)
        os.setxattr(self._dir(dirs, name, create=True), "trusted.overlay.opaque", b"y")

    def finish(self) -> None:
        """Set directory times, deepest first, now that their contents are written."""
        self._writers.barrier()
        for parts in sorted(self._dir_times, key=len, reverse=True):
            times = self._dir_times[parts]
            if not parts:
                os.utime(self._root, ns=times)
                continue
            self._trim()
            try:
                parent = self._dir(parts[:-1], "/".join(parts), create=False)
            except FileNotFoundError:
                continue
            os.utime(parts[-1], ns=times, dir_fd=parent, follow_symlinks=False)

    # -- metadata ---------------------------------------------------------------

    @staticmethod
    def _require_name(parts: Parts, name: str) -> None:
        if not parts:
            raise StackError(f"layer entry {name!r} would replace the layer root")

    def _apply_fd(
        self, fd: int, owner: Owner, mode: int, xattrs: dict[str, bytes], name: str
    ) -> None:
        os.fchown(fd, *owner)  # before chmod: chown clears setuid/setgid bits
        os.fchmod(fd, mode)
        set_xattrs(fd, xattrs, name)

    def _apply_path(
        self, parent: int, leaf: str, owner: Owner, mode: int, times: Times,
        xattrs: dict[str, bytes], name: str,
    ) -> None:
        """Metadata of a node we cannot open for writing (device, fifo): via an O_PATH fd."""
        fd = os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            by_fd = f"/proc/self/fd/{fd}"
            os.chown(by_fd, *owner)
            os.chmod(by_fd, mode)
            set_xattrs(self._proc(parent, leaf), xattrs, name)
            os.utime(by_fd, ns=times)
        finally:
            os.close(fd)
