"""Unpacked layers of the image store: `layers/<chain-hex>/{diff/,layer.json}`.

A layer is unpacked into tmp/, flushed with one syncfs, and renamed into
layers/ last, so layers/ only ever holds complete trees; `layer.json` inside is
the proof. Unpacking is serialized per (parent, blob) with an fcntl lock, so
concurrent pulls in any threads or processes unpack a layer once and the others
find it.

A layer's tree does not depend on its parent's tree, only its name (the chain
id) does, and the parent's chain id is known from the image config before
anything is unpacked. So the layers of one image are unpacked side by side, and
a layer may be published before the one below it. That never shows a partial
image: an image is recorded only once all its layers are there, and a pull that
fails takes back every layer it added.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, cast

from orchestrator.runtime.images.digests import (
    chain_id,
    chain_ids,
    digest_hex,
    sha256_digest,
    validate_digest,
)
from orchestrator.runtime.images.manifest import layer_compression
from orchestrator.runtime.images.records import LayerInfo
from orchestrator.runtime.images.store_files import corrupt_blob, file_lock, fsync_dir, read_json
from orchestrator.spec.errors import StackError

_LIBC = ctypes.CDLL(None, use_errno=True)

UNPACK_THREADS = 2
"""Layers unpacked at once. Each also has a thread decompressing ahead, and
creating files costs kernel CPU, so more than the usual two cores buys little."""


class LayerStore:
    def __init__(self, layers: Path, tmp: Path, locks: Path, blob_path: Callable[[str], Path]):
        self.dir = layers
        self._tmp = tmp
        self._locks = locks
        self._blob_path = blob_path

    def path(self, chain: str) -> Path:
        return self.dir / digest_hex(chain)

    def metadata(self, chain: str) -> dict[str, Any] | None:
        """layer.json of an unpacked layer; None if it is not (completely) there."""
        return read_json(self.path(chain) / "layer.json")

    def unpack(
        self, digest: str, media_type: str, parent: str | None, diff_id: str | None
    ) -> LayerInfo:
        validate_digest(digest, "layer digest")
        layer_compression(media_type)
        if parent is not None:
            validate_digest(parent, "parent chain id")
        key = digest_hex(sha256_digest(f"{parent or ''} {digest}".encode()))
        with file_lock(self._locks / f"unpack-{key}.lock"):
            found = self._find(digest, parent, diff_id)
            if found is not None:
                return found
            try:
                return self._unpack_new(digest, media_type, parent, diff_id)
            except OSError as error:  # the disk: full, read-only, failing
                raise StackError(
                    f"cannot unpack layer {digest} in {self.dir}: {error.strerror or error}"
                ) from None

    def unpack_image(
        self, layers: list[tuple[str, str, str]], threads: int = UNPACK_THREADS
    ) -> list[LayerInfo]:
        """Unpack the layers (blob digest, media type, diff id) of one image, bottom
        first, `threads` at a time; their LayerInfos in the same order."""
        parents = [None, *chain_ids(diff_id for _, _, diff_id in layers)][:-1]
        with ThreadPoolExecutor(threads, thread_name_prefix="unpack") as pool:
            jobs = [
                pool.submit(self.unpack, digest, media_type, parent, diff_id)
                for (digest, media_type, diff_id), parent in zip(layers, parents, strict=True)
            ]
            try:
                return [job.result() for job in jobs]
            except BaseException:
                pool.shutdown(cancel_futures=True)  # no point unpacking the rest
                raise

    def _find(self, digest: str, parent: str | None, diff_id: str | None) -> LayerInfo | None:
        if diff_id is not None:
            chain = chain_id(parent, diff_id)
            if self.metadata(chain) is not None:
                return LayerInfo(diff_id, chain, self.path(chain) / "diff")
            return None
        for entry in self.dir.iterdir():
            meta = read_json(entry / "layer.json")
            if meta and meta.get("blob") == digest and meta.get("parent") == parent:
                return LayerInfo(meta["diff_id"], meta["chain_id"], entry / "diff")
        return None

    def _unpack_new(
        self, digest: str, media_type: str, parent: str | None, diff_id: str | None
    ) -> LayerInfo:
        from orchestrator.runtime.images.unpack import unpack_layer_tar

        work = Path(tempfile.mkdtemp(prefix="layer-", dir=self._tmp))
        try:
            try:
                blob_file = self._blob_path(digest).open("rb")
            except FileNotFoundError:
                raise StackError(f"layer blob {digest} is not in the image store") from None
            with blob_file:
                try:
                    result = unpack_layer_tar(cast(BinaryIO, blob_file), media_type, work / "diff")
                except StackError as error:
                    raise StackError(f"layer {digest}: {error}") from None
            if result.blob_digest != digest:
                raise corrupt_blob(digest, result.blob_digest)
            if diff_id is not None and result.diff_id != diff_id:
                raise StackError(
                    f"layer {digest} unpacks to diff id {result.diff_id}, "
                    f"but the image config says {diff_id}"
                )
            chain = chain_id(parent, result.diff_id)
            meta = {
                "diff_id": result.diff_id,
                "chain_id": chain,
                "parent": parent,
                "size": result.size,
                "blob": digest,
                "media_type": media_type,
            }
            (work / "layer.json").write_text(json.dumps(meta, indent=1) + "\n")
            os.chmod(work, 0o755)  # mkdtemp's 0700 would hide the layer from other users
            _syncfs(work)
            target = self.path(chain)
            try:
                os.rename(work, target)
            except OSError:
                if self.metadata(chain) is None:
                    raise
                # The same content, unpacked from another blob, got there first: use it.
            fsync_dir(self.dir)
            return LayerInfo(result.diff_id, chain, target / "diff")
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)

    def delete(self, chain: str) -> int:
        """Remove one layer; the bytes of content it held."""
        path = self.path(chain)
        size = int((self.metadata(chain) or {}).get("size", 0))
        # Out of layers/ first: a half-deleted tree must never look like a layer.
        doomed = Path(tempfile.mkdtemp(prefix="prune-", dir=self._tmp)) / "layer"
        os.rename(path, doomed)
        shutil.rmtree(doomed.parent)
        return size

    def chains(self) -> list[str]:
        return sorted(f"sha256:{entry.name}" for entry in self.dir.iterdir())


def _syncfs(path: Path) -> None:
    """Flush a whole unpacked layer with one syncfs(2), not an fsync per file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _LIBC.syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), str(path))
    finally:
        os.close(fd)
