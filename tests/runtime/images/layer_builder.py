"""Tiny tar layers built in memory, entry by entry, for unpack and store tests.

Malicious archives are easy to write with tarfile itself: it stores whatever
name or link target it is given.
"""

from __future__ import annotations

import gzip
import io
import tarfile

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
