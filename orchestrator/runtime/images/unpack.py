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

The tar is read by tarentries.py, headers only; file contents go from the
decompressed stream to disk. The diff id (sha256 of the uncompressed tar) and
the blob's own digest are computed while streaming, beside the thread that
decompresses ahead (layerstream.py); a layer is never held in memory. An
uncompressed blob in a file is mapped instead (layermap.py): its file bodies
are views of the page cache, and large ones may go to disk by direct I/O.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO, NamedTuple

from orchestrator.runtime.images import tarentries
from orchestrator.runtime.images.layermap import MappedLayer, mapped_layer
from orchestrator.runtime.images.layerstream import DecompressedLayer
from orchestrator.runtime.images.layertree import LayerTree, entry_parts, link_parts
from orchestrator.runtime.images.manifest import layer_compression
from orchestrator.runtime.images.tarentries import TarEntry, TarReader
from orchestrator.spec.errors import StackError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_AUFS_META_PREFIX = ".wh..wh."
SMALL_FILE = 1 << 20
"""Files up to this size are read whole and handed to the writers (layerwriters.py);
larger ones are streamed, unless the layer is mapped (layermap.py)."""


class UnpackResult(NamedTuple):
    diff_id: str  # sha256 of the uncompressed tar, as listed in the image config's rootfs
    size: int  # bytes of regular-file content written (what `docker images` counts)
    blob_digest: str  # sha256 of the blob as read, for the store to check


def unpack_layer_tar(stream: BinaryIO, media_type: str, dest: Path) -> UnpackResult:
    """Unpack the layer read from `stream` into the directory `dest`.

    `dest` is created if missing and should be empty. The compression is taken
    from the stream's first bytes: archives written by some tools label gzipped
    layers as plain tars and the reverse, so the media type only has to say
    that this is a layer at all (a known type, not encrypted). On error `dest`
    is left half written; callers unpack into a temporary directory and rename
    it only on success. The whole stream is read, so that `blob_digest` covers
    every byte of it.
    """
    layer_compression(media_type)  # refuses media types that are no (unencrypted) layer
    with mapped_layer(stream) or DecompressedLayer(stream) as tar_stream:
        size = _extract(tar_stream, Path(dest))
        tar_stream.drain()
    return UnpackResult(tar_stream.digest, size, tar_stream.blob_digest)


def _extract(stream: MappedLayer | DecompressedLayer, dest: Path) -> int:
    size = 0
    reader = TarReader(stream.read, stream.read_view)
    # Bodies up to this size are taken whole (a view or a copy); larger ones streamed.
    largest_whole = sys.maxsize if stream.whole_bodies else SMALL_FILE
    with LayerTree(dest, direct_io=stream.direct_io) as tree:
        for entry in reader:
            size += _extract_entry(tree, reader, entry, largest_whole)
        tree.finish()
    return size


def _extract_entry(
    tree: LayerTree, reader: TarReader, entry: TarEntry, largest_whole: int
) -> int:
    name = entry.name
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
            tree.whiteout(parts[:-1] + (hidden,), name, entry.uid, entry.gid, _times(entry))
            return 0
        return _write_entry(tree, reader, entry, parts, largest_whole)
    except OSError as error:
        if error.errno is None:
            raise  # a decompression error surfacing through the tar reader
        raise StackError(f"cannot unpack layer entry {name!r}: {error.strerror}") from None


def _write_entry(
    tree: LayerTree, reader: TarReader, entry: TarEntry, parts: tuple[str, ...],
    largest_whole: int,
) -> int:
    name = entry.name
    kind = entry.kind
    owner = (entry.uid, entry.gid)
    mode = entry.mode & 0o7777
    times = _times(entry)
    xattrs = _xattrs(entry)
    if kind == tarentries.REGULAR:
        # Taken whole, a body may go to a writer thread; else it is streamed here.
        body = reader.body() if entry.size <= largest_whole else reader.read_body
        tree.write_file(parts, name, body, entry.size, owner, mode, times, xattrs)
        return entry.size
    if kind == tarentries.DIRECTORY:
        tree.make_dir(parts, name, owner, mode, times, xattrs)
    elif kind == tarentries.SYMLINK:
        tree.symlink(parts, name, entry.linkname, owner, times, xattrs)
    elif kind == tarentries.HARDLINK:
        tree.hardlink(parts, name, link_parts(entry.linkname, name), entry.linkname)
    elif kind in _NODES:
        device = 0 if kind == tarentries.FIFO else os.makedev(entry.devmajor, entry.devminor)
        tree.make_node(parts, name, _NODES[kind], device, owner, mode, times, xattrs)
    else:
        raise StackError(f"layer entry {name!r} has an unsupported tar type {kind!r}")
    return 0


_NODES = {
    tarentries.CHAR: stat.S_IFCHR,
    tarentries.BLOCK_DEVICE: stat.S_IFBLK,
    tarentries.FIFO: stat.S_IFIFO,
}


def _times(entry: TarEntry) -> tuple[int, int]:
    """(atime, mtime) in nanoseconds, exact when a PAX header carries fractions."""
    return (entry.atime_ns, entry.mtime_ns)


def _xattrs(entry: TarEntry) -> dict[str, bytes]:
    """The entry's extended attributes, without `trusted.overlay.*`: those steer
    overlayfs itself (redirects, metacopy), and only this module's whiteout
    conversion may set them."""
    if not entry.xattrs:
        return entry.xattrs
    return {k: v for k, v in entry.xattrs.items() if not k.startswith("trusted.overlay.")}
