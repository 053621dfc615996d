"""Random access to the files inside an image archive, without extracting it.

An archive is a directory (an OCI layout) or a tar. A tar is indexed once
(member name -> offset and size, links resolved to the member holding the
data) and members are then read in place with `pread`, so any number of blob
streams share one file descriptor and nothing is copied to disk. Names are
checked as they are indexed: an archive naming `../x` or `/etc/x` is refused
outright, since no honest tool writes one.

Streams that cannot seek (stdin, a pipe) and compressed archives
(`docker save | gzip`) are first copied into an anonymous temporary file.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from orchestrator.runtime.images.digests import HashingReader
from orchestrator.spec.errors import StackError

MAX_METADATA = 4 << 20  # index.json, manifest.json, manifests and configs are small
CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

Source = str | os.PathLike | BinaryIO


class Members:
    """Random access to the files of an archive: a directory or an indexed tar."""

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, entry: str, message: str, hint: str | None = None) -> StackError:
        return StackError(f"{self.label}: {entry}: {message}", hint=hint)

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        if not self.has(name):
            raise self.error(name, "missing from the archive")
        if self.size(name) > MAX_METADATA:
            raise self.error(name, f"is larger than {MAX_METADATA} bytes, too large for metadata")
        with self.open(name) as stream:
            return stream.read()

    def read_json(self, name: str) -> object:
        try:
            return json.loads(self.read(name))
        except (ValueError, UnicodeDecodeError) as exc:
            raise self.error(name, f"is not valid JSON ({exc})") from None

    def close(self) -> None:
        pass


def _clean_name(label: str, name: str) -> str:
    """`./a//b/` -> `a/b`; names that climb out or are absolute are refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise StackError(
            f"{label}: {name}: entry name points outside the archive",
            hint="the archive is malformed or malicious; refusing to read it",
        )
    return "/".join(parts)


class DirMembers(Members):
    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.root = root.resolve()

    def _path(self, name: str) -> Path:
        path = (self.root / _clean_name(self.label, name)).resolve()
        if not path.is_relative_to(self.root):
            raise self.error(name, "is a link pointing outside the layout")
        return path

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def open(self, name: str) -> BinaryIO:
        return open(self._path(name), "rb")  # noqa: SIM115 - the caller closes it


class _Slice(io.RawIOBase):
    """`size` bytes of a file from `offset`, read with pread so many slices share one fd."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd, self._offset, self._left = fd, offset, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._left)
        if want == 0:
            return 0
        data = os.pread(self._fd, want, self._offset)
        buffer[: len(data)] = data
        self._offset += len(data)
        self._left -= len(data)
        return len(data)


class TarMembers(Members):
    """A tar indexed once; regular members are read in place, links resolved in the index."""

    def __init__(self, label: str, file: BinaryIO) -> None:
        super().__init__(label)
        self._file = file
        self._entries: dict[str, tuple[int, int]] = {}
        links: dict[str, str] = {}
        try:
            with tarfile.open(fileobj=file, mode="r:") as tar:
                for member in tar:
                    name = _clean_name(label, member.name)
                    if member.isreg() and not member.issparse():
                        self._entries[name] = (member.offset_data, member.size)
                    elif member.issym():
                        target = posixpath.join(posixpath.dirname(name), member.linkname)
                        links[name] = _clean_name(label, posixpath.normpath(target))
                    elif member.islnk():
                        links[name] = _clean_name(label, member.linkname)
        except tarfile.TarError as exc:
            raise StackError(f"{label}: not a readable tar archive ({exc})") from None
        for name in links:
            target, seen = name, set()
            while target in links and target not in seen:
                seen.add(target)
                target = links[target]
            if target in self._entries:
                self._entries[name] = self._entries[target]

    def has(self, name: str) -> bool:
        return name in self._entries

    def size(self, name: str) -> int:
        return self._entries[name][1]

    def open(self, name: str) -> BinaryIO:
        offset, size = self._entries[name]
        return io.BufferedReader(_Slice(self._file.fileno(), offset, size), CHUNK)

    def open_all(self) -> BinaryIO:
        """The whole tar as one stream (an imported rootfs is itself the layer)."""
        fd = self._file.fileno()
        return io.BufferedReader(_Slice(fd, 0, os.fstat(fd).st_size), CHUNK)

    def close(self) -> None:
        self._file.close()


class VerifiedBlob(io.RawIOBase):
    """A blob stream that checks size and sha256 when its end is reached."""

    def __init__(self, members: Members, entry: str, digest: str, what: str) -> None:
        self._members, self._entry, self._digest, self._what = members, entry, digest, what
        self._stream = members.open(entry)
        self._hashing = HashingReader(self._stream)
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._hashing.read(len(buffer))
        if not data and not self._checked:
            self._checked = True
            if self._hashing.digest != self._digest:
                raise self._members.error(
                    self._entry,
                    f"{self._what} does not match its digest {self._digest} "
                    f"(its content hashes to {self._hashing.digest})",
                    hint="the archive is corrupt; nothing was loaded from it",
                )
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def open_verified(members: Members, entry: str, digest: str, what: str) -> BinaryIO:
    """A buffered stream of `entry` that raises StackError at its end if `digest` is wrong."""
    return io.BufferedReader(VerifiedBlob(members, entry, digest, what), CHUNK)


def _spool(stream: BinaryIO, spool_dir: str | os.PathLike | None) -> BinaryIO:
    """A seekable copy of a stream (stdin, a pipe), deleted when closed."""
    spooled = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - owned by the members
    shutil.copyfileobj(stream, spooled, CHUNK)
    spooled.seek(0)
    return spooled


def _decompressed(file: BinaryIO, label: str, spool_dir: str | os.PathLike | None) -> BinaryIO:
    """`file` itself when it is a plain tar; a spooled plain copy when gzip or zstd."""
    head = os.pread(file.fileno(), 4, 0)
    if not (head.startswith(_GZIP_MAGIC) or head == _ZSTD_MAGIC):
        return file
    import zstandard

    try:
        with file:
            if head.startswith(_GZIP_MAGIC):
                with gzip.GzipFile(fileobj=file, mode="rb") as plain:
                    return _spool(plain, spool_dir)  # type: ignore[arg-type]
            with zstandard.ZstdDecompressor().stream_reader(file) as plain:
                return _spool(plain, spool_dir)  # type: ignore[arg-type]
    except (OSError, EOFError, zstandard.ZstdError) as exc:
        raise StackError(f"{label}: cannot decompress the archive ({exc})") from None


def open_members(source: Source, spool_dir: str | os.PathLike | None = None) -> Members:
    """The files of the archive at `source`: a path (tar or directory) or a binary stream."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir():
            return DirMembers(path)
        try:
            file: BinaryIO = open(path, "rb")  # noqa: SIM115 - owned by the members
        except OSError as exc:
            raise StackError(f"{path}: cannot open the archive ({exc.strerror})") from None
        label = str(path)
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):  # a FIFO, `<(…)`, a device
            with file:
                file = _spool(file, spool_dir)
    else:
        name = getattr(source, "name", None)
        label = name if isinstance(name, str) and not name.startswith("<") else "stdin"
        try:
            seekable = stat.S_ISREG(os.fstat(source.fileno()).st_mode)
        except (OSError, AttributeError, io.UnsupportedOperation):
            seekable = False
        file = os.fdopen(os.dup(source.fileno()), "rb") if seekable else _spool(source, spool_dir)
    return TarMembers(label, _decompressed(file, label, spool_dir))
