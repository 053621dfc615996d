"""Reading a layer's tar entry by entry, headers only: the bodies go straight to disk.

`tarfile` builds a TarInfo through a dozen Python calls per header, about 50 µs
of CPU an entry; a layer of small files spends more on that than on writing them.
This reader decodes what a layer can hold, in the formats real layers come in:
ustar (with its name prefix), GNU (long names and link targets in 'L' and 'K'
entries, base-256 numbers for big ids and sizes) and PAX ('x' per entry, 'g' for
all that follow: path, linkpath, size, mtime, atime, uid, gid, and extended
attributes as Go and GNU tar (SCHILY.xattr.*) and bsdtar (LIBARCHIVE.xattr.*)
write them). GNU sparse files are refused: no image builder writes them.

It is stricter than tarfile, as Go's reader (which wrote most layers) is: a bad
header anywhere is an error, not a quiet end of the archive. Every error is a
StackError of one line, "layer is not a valid tar archive: …".
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from zlib import adler32

from orchestrator.spec.errors import StackError

BLOCK = 512
META_LIMIT = 1 << 20
"""The most bytes a long name or a PAX header may have (Go's limit too): these are
held in memory, and a layer could claim gigabytes."""

REGULAR, HARDLINK, SYMLINK, CHAR, BLOCK_DEVICE, DIRECTORY, FIFO = (
    b"0", b"1", b"2", b"3", b"4", b"5", b"6"
)
_HEADER_ONLY = (HARDLINK, SYMLINK, CHAR, BLOCK_DEVICE, DIRECTORY, FIFO)
_AS_REGULAR = (b"\0", b"7")  # old tars' regular files, and "contiguous" files: plain ones here
_LONG_NAME, _LONG_LINK, _PAX, _PAX_GLOBAL, _GNU_SPARSE = b"L", b"K", b"x", b"g", b"S"
_USTAR_MAGIC = b"ustar\0"  # POSIX: the name prefix field is used; GNU's is "ustar "
_ZERO_BLOCK = bytes(BLOCK)
_CHECKSUM_SPACES = 8 * 0x20  # the checksum field counts as spaces in the sum
_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")
_NUMBER_FIELDS = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156))

Read = Callable[[int], bytes]
"""Up to n bytes of the tar (at least one), b"" only at its end."""
ReadView = Callable[[int], bytes | memoryview]
"""The same for file contents, which may come as views of the reader's buffers."""


class TarEntry:
    """One entry of the archive, with every extension header applied."""

    __slots__ = ("name", "kind", "size", "mode", "uid", "gid", "mtime_ns", "atime_ns",
                 "linkname", "devmajor", "devminor", "xattrs")

    def __init__(self, name: str, kind: bytes, size: int, mode: int, uid: int, gid: int,
                 mtime_ns: int, linkname: str) -> None:
        self.name = name
        self.kind = kind  # one of REGULAR ... FIFO, or an unknown type flag as found
        self.size = size  # bytes of content: only regular files have any
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.atime_ns = mtime_ns
        self.linkname = linkname
        self.devmajor = 0  # read for device nodes only
        self.devminor = 0
        self.xattrs: dict[str, bytes] = {}


def invalid(reason: str) -> StackError:
    return StackError(f"layer is not a valid tar archive: {reason}")


class TarReader:
    """The entries of the tar that `read` gives, in order: iterate, and read each
    regular file's content with `read_body` or `body` before the next entry
    (whatever is left of it is skipped)."""

    def __init__(self, read: Read, read_view: ReadView | None = None) -> None:
        self._read = read
        self._read_view = read_view or read
        self._started = False  # a header was read: the stream is no empty file
        self._left = 0  # of the current entry's content, not yet read
        self._padding = 0  # zeros after it, up to the next block
        self._globals: dict[str, bytes] = {}
        self._entry_name = ""

    def __iter__(self) -> Iterator[TarEntry]:
        while (entry := self._next()) is not None:
            yield entry

    def read_body(self, most: int) -> bytes | memoryview:
        """Up to `most` bytes of the current entry's content (b"" once all is read)."""
        if not self._left:
            return b""
        data = self._read_view(min(most, self._left))
        if not data:
            raise invalid(f"entry {self._entry_name!r} is cut short")
        self._left -= len(data)
        return data

    def body(self) -> bytes | memoryview:
        """All that is left of the current entry's content."""
        size = self._left
        data = self._read_view(size) if size else b""
        if len(data) < size:  # it spans chunks: joined into one copy
            data = bytes(data) + self._exactly(
                size - len(data), f"entry {self._entry_name!r} is cut short"
            )
        self._left = 0
        return data

    # -- inside ------------------------------------------------------------------

    def _exactly(self, size: int, short: str) -> bytes:
        data = self._read(size) if size else b""
        if len(data) < size:
            parts = [data]
            missing = size - len(data)
            while missing:
                more = self._read(missing)
                if not more:
                    raise invalid(short)
                parts.append(more)
                missing -= len(more)
            data = b"".join(parts)
        return data

    def _skip_rest(self) -> None:
        while self._left:
            self.read_body(1 << 20)
        if self._padding:
            self._exactly(self._padding, "unexpected end of data")
            self._padding = 0

    def _next(self) -> TarEntry | None:
        """The next entry, its extension headers applied; None at the end marker."""
        self._skip_rest()
        long_name = long_link = None
        pax: dict[str, bytes] = {}
        while True:
            header = self._read(BLOCK)
            if not header:
                if not self._started:
                    raise invalid("empty file")
                if long_name is not None or long_link is not None or pax:
                    raise invalid("unexpected end of data")
                return None  # no end marker: tolerated, as by tar(1)
            self._started = True
            if len(header) < BLOCK:
                header += self._exactly(BLOCK - len(header), "truncated header")
            if header == _ZERO_BLOCK:
                return None  # the end marker; what follows is drained by the caller
            entry = _decode(header)
            self._entry_name = entry.name
            if entry.kind in (_LONG_NAME, _LONG_LINK, _PAX, _PAX_GLOBAL):
                data = self._meta(entry.size)
                if entry.kind == _LONG_NAME:
                    long_name = _text(data.split(b"\0", 1)[0])
                elif entry.kind == _LONG_LINK:
                    long_link = _text(data.split(b"\0", 1)[0])
                elif entry.kind == _PAX:
                    pax.update(_pax_records(data))
                else:
                    self._globals.update(_pax_records(data))
                continue
            records = {**self._globals, **pax} if self._globals else pax
            if records:
                _apply_pax(entry, records)
            if long_name is not None:
                entry.name = long_name
            if long_link is not None:
                entry.linkname = long_link
            self._entry_name = entry.name
            if entry.kind == _GNU_SPARSE:
                raise StackError(f"layer entry {entry.name!r} is a GNU sparse file; "
                                 "sparse files are not supported in layers")
            if entry.kind in _AS_REGULAR:
                # Old tars mark a directory by a trailing slash (type NUL only).
                directory = entry.kind == b"\0" and entry.name.endswith("/")
                entry.kind = DIRECTORY if directory else REGULAR
            if entry.kind in _HEADER_ONLY:
                entry.size = 0  # whatever size they claim, these have no content (tarfile, Go)
            self._left = entry.size
            self._padding = -entry.size % BLOCK
            return entry

    def _meta(self, size: int) -> bytes:
        """The content of a long-name or PAX entry (held in memory, so bounded)."""
        if size > META_LIMIT:
            raise invalid(f"an extension header of {size} bytes (more than {META_LIMIT})")
        data = self._exactly(size, "unexpected end of data")
        self._exactly(-size % BLOCK, "unexpected end of data")
        return data


def _decode(header: bytes) -> TarEntry:
    # The numbers of nearly every header are octal digits ending in NUL or space:
    # as spaces, int() takes them whole, a call each instead of a parse each.
    numbers = header[100:156].translate(_NUL_TO_SPACE)
    try:
        mode, uid, gid = int(numbers[:8], 8), int(numbers[8:16], 8), int(numbers[16:24], 8)
        size, mtime, checksum = int(numbers[24:36], 8), int(numbers[36:48], 8), int(numbers[48:], 8)
    except ValueError:  # base 256, empty fields, text after a NUL, or garbage
        mode, uid, gid, size, mtime, checksum = (
            _number(header[start:end]) for start, end in _NUMBER_FIELDS
        )
    unsigned = _byte_sum(header) + _CHECKSUM_SPACES
    if checksum != unsigned and checksum != _signed_sum(header):
        raise invalid("bad checksum")
    if min(size, mode, uid, gid) < 0:
        raise invalid("invalid header")
    name = header[:100].split(b"\0", 1)[0]
    if header[257:263] == _USTAR_MAGIC and header[345] != 0:
        name = header[345:500].split(b"\0", 1)[0] + b"/" + name
    entry = TarEntry(
        name=_text(name),
        kind=header[156:157],
        size=size,
        mode=mode,
        uid=uid,
        gid=gid,
        mtime_ns=mtime * 1_000_000_000,
        linkname=_text(header[157:257].split(b"\0", 1)[0]),
    )
    if entry.kind in (CHAR, BLOCK_DEVICE):
        entry.devmajor, entry.devminor = _number(header[329:337]), _number(header[337:345])
        if min(entry.devmajor, entry.devminor) < 0:
            raise invalid("invalid header")
    return entry


def _byte_sum(header: bytes) -> int:
    """The sum of a header's bytes, less its checksum field's, in C: adler-32's low
    half is 1 + the sum of the bytes mod 65521, and 256 bytes sum to at most 65280,
    so on each half of the header it is the exact sum (sum() took 2.6 µs a header)."""
    return (
        (adler32(header[:256]) & 0xFFFF) + (adler32(header[256:]) & 0xFFFF)
        - (adler32(header[148:156]) & 0xFFFF) - 1
    )


def _signed_sum(header: bytes) -> int:
    """The checksum some old tars wrote: the header's bytes taken as signed chars."""
    def signed(data: bytes) -> int:
        return sum(b - 256 if b > 127 else b for b in data)
    return signed(header[:148]) + _CHECKSUM_SPACES + signed(header[156:])


def _number(field: bytes) -> int:
    """An octal field (NUL- or space-terminated), or a GNU base-256 one (first bit set)."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:  # negative: two's complement over the whole field
            value -= 1 << (8 * (len(field) - 1))
        elif field[0] != 0x80:
            raise invalid("invalid header")
        return value
    try:
        return int(field.rstrip(b"\0 ") or b"0", 8)  # the usual "0000644\0"
    except ValueError:
        pass
    text = field.split(b"\0", 1)[0].strip(b" ")  # anything after a NUL is ignored
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise invalid("invalid header") from None


def _text(raw: bytes) -> str:
    # Names are bytes on Linux; undecodable ones survive as surrogates, and
    # os functions encode them back to the same bytes.
    return raw.decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, bytes]:
    """`<length> <key>=<value>\\n` records; values are kept as bytes."""
    records: dict[str, bytes] = {}
    position = 0
    while position < len(data) and data[position] != 0:  # NUL padding ends the list
        space = data.find(b" ", position)
        try:
            length = int(data[position:space]) if space > 0 else 0
        except ValueError:
            length = 0
        record = data[space + 1 : position + length]
        if length <= 0 or position + length > len(data) or not record.endswith(b"\n"):
            raise invalid("invalid PAX header")
        key, equals, value = record[:-1].partition(b"=")
        if not equals:
            raise invalid("invalid PAX header")
        records[_text(key)] = value
        position += length
    return records


def _apply_pax(entry: TarEntry, records: dict[str, bytes]) -> None:
    """PAX values override the header's fields; an empty value keeps the header's."""
    for key, value in records.items():
        if not value:
            continue
        if key == "path":
            entry.name = _text(value)
        elif key == "linkpath":
            entry.linkname = _text(value)
        elif key in ("size", "uid", "gid"):  # digits only: never negative
            if not value.isdigit():
                raise invalid(f"entry {entry.name!r} has a bad PAX {key} {_text(value)!r}")
            setattr(entry, key, int(value))
        elif key in ("mtime", "atime"):
            setattr(entry, f"{key}_ns", _pax_time(entry.name, key, value))
        elif key.startswith("SCHILY.xattr."):
            entry.xattrs[key[len("SCHILY.xattr.") :]] = value
        elif key.startswith("LIBARCHIVE.xattr."):
            xattr = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :])
            try:
                entry.xattrs[xattr] = base64.b64decode(value + b"=" * (-len(value) % 4))
            except ValueError:
                raise StackError(
                    f"layer entry {entry.name!r} has a bad xattr {xattr!r}"
                ) from None
        elif key.startswith("GNU.sparse."):
            # The header's name is made up ("GNUSparseFile.<pid>/..."); this one is real.
            name = _text(records.get("GNU.sparse.name", b"")) or entry.name
            raise StackError(f"layer entry {name!r} is a GNU sparse file; "
                             "sparse files are not supported in layers")
    if "atime" not in records and "mtime" in records:
        entry.atime_ns = entry.mtime_ns


def _pax_time(name: str, key: str, value: bytes) -> int:
    """Seconds since the epoch with an optional fraction, as exact nanoseconds."""
    try:
        return int(Decimal(value.decode("ascii")) * 1_000_000_000)
    except (InvalidOperation, UnicodeDecodeError):
        raise StackError(
            f"layer entry {name!r} has a bad PAX {key} {_text(value)!r}"
        ) from None
