"""Unpack one image layer (a tar, maybe compressed) into a directory, safely.

A layer is untrusted input: it may come from any registry or archive. So every
entry name is normalized first, and the tree is written by walking directory
file descriptors with O_NOFOLLOW (openat-style), never by joining strings into
host paths: an entry can only ever create or replace names *inside* `dest`.
Names that climb out (`..`), absolute names, links whose targets leave the
layer, and entries that would be written through a symlink are refused with a
StackError naming the entry.

The result is in overlayfs "upper" format, ready to be a lowerdir: an OCI
whiteout `.wh.name` becomes a 0:0 character device `name`, and an opaque marker
`.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on its directory.

The diff id (sha256 of the uncompressed tar) is computed while streaming, by
the thread that decompresses ahead (layerstream.py); a layer is never held in
memory.
"""

from __future__ import annotations

import base64
import os
import stat
import tarfile
import urllib.parse
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO, NamedTuple

from orchestrator.runtime.images.layerstream import CHUNK, DecompressedLayer
from orchestrator.runtime.images.layertree import LayerTree, entry_parts, link_parts
from orchestrator.runtime.images.manifest import layer_compression
from orchestrator.spec.errors import StackError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_AUFS_META_PREFIX = ".wh..wh."


class UnpackResult(NamedTuple):
    diff_id: str  # sha256 of the uncompressed tar, as listed in the image config's rootfs
    size: int  # bytes of regular-file content written (what `docker images` counts)


def unpack_layer_tar(stream: BinaryIO, media_type: str, dest: Path) -> UnpackResult:
    """Unpack the layer read from `stream` into the directory `dest`.

    `dest` is created if missing and should be empty. The compression is taken
    from the stream's first bytes: archives written by some tools label gzipped
    layers as plain tars and the reverse, so the media type only has to say
    that this is a layer at all (a known type, not encrypted). On error `dest`
    is left half written; callers unpack into a temporary directory and rename
    it only on success.
    """
    layer_compression(media_type)  # refuses media types that are no (unencrypted) layer
    with DecompressedLayer(stream) as tar_stream:
        size = _extract(tar_stream, Path(dest))
        tar_stream.drain()
    return UnpackResult(tar_stream.digest, size)


class _ForwardReader:
    """The layer's tar for tarfile's file mode, which reads headers and contents
    straight from us; its stream mode ("r|") copies its whole read buffer at every
    read, which for small files costs twenty times the unpacking itself. The layer
    only goes forward, and so does tarfile reading members in order: a seek ahead
    skips, a seek back is a bug."""

    def __init__(self, stream: DecompressedLayer) -> None:
        self._stream = stream
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        """`size` bytes unless the layer ends first, as a file gives them (the stream
        under us answers with what is left of its current chunk)."""
        data = self._stream.read(size)
        if 0 < len(data) < size:
            parts = [data]
            missing = size - len(data)
            while missing and (more := self._stream.read(missing)):
                parts.append(more)
                missing -= len(more)
            data = b"".join(parts)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self._position
        elif whence != 0:
            raise OSError("a layer stream cannot seek from its end")
        if offset < self._position:
            raise OSError(f"a layer stream cannot seek back to {offset}")
        while self._position < offset:
            if not self.read(min(CHUNK, offset - self._position)):
                break
        return self._position


def _extract(stream: DecompressedLayer, dest: Path) -> int:
    size = 0
    with LayerTree(dest) as tree:
        try:
            with tarfile.open(
                fileobj=_ForwardReader(stream),  # type: ignore[arg-type]
                mode="r:",
                encoding="utf-8",
                errors="surrogateescape",  # names and xattr values are bytes, not text
            ) as archive:
                for member in archive:
                    size += _extract_member(tree, archive, member)
        except tarfile.TarError as error:
            raise StackError(f"layer is not a valid tar archive: {error}") from None
        tree.finish()
    return size


def _extract_member(tree: LayerTree, archive: tarfile.TarFile, member: tarfile.TarInfo) -> int:
    name = member.name
    parts = entry_parts(name)
    basename = parts[-1] if parts else ""
    try:
        if basename == OPAQUE_MARKER:
            tree.mark_opaque(parts[:-1], name)
            return 0
        if basename.startswith(_AUFS_META_PREFIX):
            return 0  # aufs bookkeeping (.wh..wh.plnk, ...): not part of the filesystem
        if basename.startswith(WHITEOUT_PREFIX):
            hidden = basename[len(WHITEOUT_PREFIX) :]
            if hidden in ("", ".", ".."):
                raise StackError(f"layer entry {name!r} is not a valid whiteout")
            tree.whiteout(parts[:-1] + (hidden,), name, member.uid, member.gid, _times(member))
            return 0
        return _write_entry(tree, archive, member, parts)
    except OSError as error:
        if error.errno is None:
            raise  # a decompression error surfacing through the tar reader
        raise StackError(f"cannot unpack layer entry {name!r}: {error.strerror}") from None


def _write_entry(
    tree: LayerTree, archive: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...]
) -> int:
    name = member.name
    owner = (member.uid, member.gid)
    mode = member.mode & 0o7777
    times = _times(member)
    xattrs = _xattrs(member)
    if member.isreg():
        source = archive.extractfile(member)
        assert source is not None  # regular files always have content
        tree.write_file(parts, name, source, owner, mode, times, xattrs)
        return member.size
    if member.isdir():
        tree.make_dir(parts, name, owner, mode, times, xattrs)
    elif member.issym():
        tree.symlink(parts, name, member.linkname, owner, times, xattrs)
    elif member.islnk():
        tree.hardlink(parts, name, link_parts(member.linkname, name), member.linkname)
    elif member.ischr() or member.isblk() or member.isfifo():
        if member.isfifo():
            kind, device = stat.S_IFIFO, 0
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            device = os.makedev(member.devmajor, member.devminor)
        tree.make_node(parts, name, kind, device, owner, mode, times, xattrs)
    else:
        raise StackError(f"layer entry {name!r} has an unsupported tar type {member.type!r}")
    return 0


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in nanoseconds, exact when a PAX header carries fractions."""
    mtime = _pax_time(member, "mtime")
    if mtime is None:
        mtime = int(member.mtime) * 1_000_000_000
    atime = _pax_time(member, "atime")
    return (mtime if atime is None else atime, mtime)


def _pax_time(member: tarfile.TarInfo, key: str) -> int | None:
    text = member.pax_headers.get(key)
    if text is None:
        return None
    try:
        return int(Decimal(text) * 1_000_000_000)
    except InvalidOperation:
        raise StackError(f"layer entry {member.name!r} has a bad PAX {key} {text!r}") from None


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    """Extended attributes from PAX headers (Go and GNU tar: SCHILY.xattr.*; bsdtar:
    LIBARCHIVE.xattr.* with a URL-encoded name and base64 value).

    `trusted.overlay.*` is dropped: those attributes steer overlayfs itself
    (redirects, metacopy), and only this module's whiteout conversion may set them.
    """
    found: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found[key[len("SCHILY.xattr.") :]] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            xattr = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :])
            try:
                found[xattr] = base64.b64decode(value + "=" * (-len(value) % 4))
            except ValueError:
                raise StackError(f"layer entry {member.name!r} has a bad xattr {xattr!r}") from None
    return {k: v for k, v in found.items() if not k.startswith("trusted.overlay.")}
