"""Content digests: the names everything in the image store goes by.

A digest is the string `sha256:<64 lowercase hex>`. It is validated before it is
ever used to build a path, so a digest read from a manifest or typed by a user
can never name a file outside `blobs/sha256/`. Only sha256 is accepted: it is
what every registry and `docker save` produce, and one algorithm keeps the store
layout flat.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import BinaryIO

from orchestrator.spec.errors import StackError

ALGORITHM = "sha256"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ANY_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def is_digest(text: str) -> bool:
    """True for a well-formed `sha256:<64 hex>` string."""
    return _DIGEST.fullmatch(text) is not None


def validate_digest(text: object, what: str = "digest") -> str:
    """`text` itself if it is a sha256 digest, else a StackError naming `what`."""
    if isinstance(text, str) and is_digest(text):
        return text
    if isinstance(text, str) and _ANY_DIGEST.fullmatch(text) and not text.startswith("sha256:"):
        raise StackError(
            f"{what} {text!r} uses an unsupported algorithm",
            hint="only sha256 digests are supported",
        )
    raise StackError(f"{what} {text!r} is not a valid digest", hint="expected sha256:<64 hex>")


def digest_hex(digest: str) -> str:
    """The 64 hex characters of a validated digest (its file name in the store)."""
    return validate_digest(digest)[len(ALGORITHM) + 1 :]


def sha256_digest(data: bytes) -> str:
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def chain_id(parent_chain_id: str | None, diff_id: str) -> str:
    """The OCI chain id of a layer: it names the whole stack of layers below it.

    chain(L0) = diff_id(L0); chain(Ln) = sha256(chain(Ln-1) + " " + diff_id(Ln)).
    Two images that share their first n layers share n unpacked directories.
    """
    validate_digest(diff_id, "diff id")
    if parent_chain_id is None:
        return diff_id
    validate_digest(parent_chain_id, "parent chain id")
    return sha256_digest(f"{parent_chain_id} {diff_id}".encode("ascii"))


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain id of every layer of an image, bottom layer first."""
    result: list[str] = []
    for diff_id in diff_ids:
        result.append(chain_id(result[-1] if result else None, diff_id))
    return result


class HashingReader:
    """A read-only stream that hashes and counts every byte read through it.

    Wraps a blob or a decompressed layer so that its digest is known once it has
    been read to the end, without keeping it in memory or reading it twice.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    def drain(self, chunk_size: int = 1 << 20) -> None:
        """Read (and hash) whatever is left, e.g. the zero blocks after a tar's end."""
        while self.read(chunk_size):
            pass

    @property
    def digest(self) -> str:
        return f"{ALGORITHM}:{self._hash.hexdigest()}"
