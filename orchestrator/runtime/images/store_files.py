"""Atomic file writes for the image store: temp file in tmp/, fsync, rename.

tmp/ is on the same filesystem as the final place, so the rename is atomic:
a reader sees the old file or the new one, and a crash leaves only a temp file,
which the store removes when it is next opened.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator.spec.errors import StackError


def fsync_dir(path: Path) -> None:
    """Make a rename into `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, tmp: Path, mode: int = 0o644) -> None:
    fd, temp = tempfile.mkstemp(prefix=f"{path.name}-", dir=tmp)
    try:
        with open(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


class BlobWriter:
    """Streams one blob into the store: `with store.blob_writer(d) as w: w.write(..); w.commit()`.

    Bytes go to a temp file and are hashed on the way; `commit` checks the
    digest, fsyncs, and renames the file into blobs/. Leaving the block without
    a commit (an error, a cancelled download) removes the temp file, so a
    truncated or wrong blob never appears under its name. Committing a blob
    that is already stored replaces it with the verified copy, which is how a
    corrupt blob gets repaired by pulling or loading it again.
    """

    def __init__(self, tmp: Path, blobs: Path, expected: str | None) -> None:
        self._blobs = blobs
        self.expected = expected
        fd, name = tempfile.mkstemp(prefix="blob-", dir=tmp)
        self._temp = Path(name)
        self._file = open(fd, "wb")  # noqa: SIM115 (closed by commit or abort)
        self._hash = hashlib.sha256()
        self.size = 0
        self.digest: str | None = None

    def write(self, data: bytes) -> None:
        if self.digest is not None:
            raise ValueError("blob already committed")
        try:
            self._file.write(data)
        except OSError as error:
            raise self._cannot_store(error) from None
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> str:
        """Verify, flush and publish the blob; its digest."""
        if self.digest is not None:
            return self.digest
        actual = f"sha256:{self._hash.hexdigest()}"
        if self.expected is not None and actual != self.expected:
            self.abort()
            raise StackError(
                f"blob {self.expected} has the wrong content ({self.size} bytes hashing to "
                f"{actual})",
                hint="the download was truncated or the source is corrupt; try again",
            )
        try:
            self._file.flush()
            os.fchmod(self._file.fileno(), 0o644)
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temp, self._blobs / actual.removeprefix("sha256:"))
            fsync_dir(self._blobs)
        except OSError as error:
            self.abort()
            raise self._cannot_store(error) from None
        self.digest = actual
        return actual

    def abort(self) -> None:
        """Drop what was written (nothing happens after a commit)."""
        if self.digest is None:
            try:
                self._file.close()  # may try to flush into a full disk again
            except OSError:
                pass
            finally:
                with contextlib.suppress(FileNotFoundError):
                    self._temp.unlink()

    def _cannot_store(self, error: OSError) -> StackError:
        """A disk that is full, read-only or failing, said in one line."""
        blob = f"blob {self.expected}" if self.expected else "a blob"
        return StackError(
            f"cannot store {blob} in {self._blobs.parent}: {error.strerror or error}",
            hint="free some space there and try again" if error.errno == errno.ENOSPC else None,
        )

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """An fcntl lock on `path`. Each call opens the file anew, so the lock works
    between threads of one process as well as between processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a store file; None if the file does not exist."""
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as error:
        raise StackError(f"{path}: unreadable ({error})") from None
    return document if isinstance(document, dict) else None


def corrupt_blob(digest: str, actual: str) -> StackError:
    return StackError(
        f"blob {digest} is corrupt: its content hashes to {actual}",
        hint="remove the image and pull or load it again",
    )
