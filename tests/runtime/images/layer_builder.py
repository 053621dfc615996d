"""Tiny tar layers built in memory, entry by entry, for unpack and store tests.

Malicious archives are easy to write with tarfile itself: it stores whatever
name or link target it is given.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
from typing import BinaryIO, cast

import zstandard

MTIME = 1_600_000_000


def _info(name: str, kind: bytes, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def file(name: str, data: bytes = b"", **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    fields.setdefault("mode", 0o644)
    info = _info(name, tarfile.REGTYPE, **fields)
    info.size = len(data)
    return info, data


def directory(name: str, **fields: object) -> tuple[tarfile.TarInfo, None]:
    fields.setdefault("mode", 0o755)
    return _info(name, tarfile.DIRTYPE, **fields), None


def symlink(name: str, target: str, **fields: object) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **fields), None


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.LNKTYPE, linkname=target, mode=0o644), None


def node(name: str, kind: bytes, major: int = 0, minor: int = 0, mode: int = 0o600):
    return _info(name, kind, devmajor=major, devminor=minor, mode=mode), None


def tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)  # no timestamp: the same layer, the same blob
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "plain": "application/vnd.oci.image.layer.v1.tar",
}


BLOB_SOURCES = ("memory", "file")
"""How the unpacker may be given a blob: a stream it reads (compressed layers,
pipes), or a file of the store, which an uncompressed layer is mapped from."""


def blob_stream(data: bytes, source: str) -> BinaryIO:
    """`data` as the unpacker gets it from `source` (one of BLOB_SOURCES); a file
    is a nameless temporary one, which writes nothing beside the layer."""
    if source == "memory":
        return io.BytesIO(data)
    blob = tempfile.TemporaryFile()  # noqa: SIM115 - returned open, closed by the caller
    blob.write(data)
    blob.seek(0)
    return cast(BinaryIO, blob)
