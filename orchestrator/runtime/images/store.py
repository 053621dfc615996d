"""The content-addressed image store: blobs, unpacked layers, and the names for images.

Layout under `root` (the state root's `images/`):

    blobs/sha256/<hex>     blobs exactly as received, named by their digest
    layers/<chain-hex>/    `diff/` (one layer's tree, overlayfs upper format) and `layer.json`
    index.json             {"references": {ref: manifest digest},
                            "images": {manifest digest: {"config": config digest}}}
    tmp/                   in-progress writes; tmp/locks/ holds the fcntl lock files

Every change is made in tmp/ and renamed into place last, so a crash or a full
disk leaves the store as it was (plus litter in tmp/, removed when a store is
next opened and no other process has it open). Blobs are verified against their
digest whenever they are read or unpacked, never trusted because of their name.

Images in use. `remove` and `prune` must never take an image a container was
created from. The container layer passes `in_use`: a callable that answers, for
a manifest digest, whether any container (running or stopped) records that
image in its config. `remove` then refuses (or, forced, only untags), and
`prune` keeps the image's layers and blobs.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.runtime.images.digests import (
    chain_id,
    digest_hex,
    is_digest,
    sha256_digest,
    validate_digest,
)
from orchestrator.runtime.images.image_config import check_config_matches, parse_image_config
from orchestrator.runtime.images.layers import LayerStore
from orchestrator.runtime.images.manifest import Manifest, parse_manifest
from orchestrator.runtime.images.records import ImageRecord, LayerInfo, LayerRef, PruneResult
from orchestrator.runtime.images.reference import (
    familiar_name,
    match_id_prefix,
    normalize_reference,
    parse_reference,
)
from orchestrator.runtime.images.store_files import (
    BlobWriter,
    corrupt_blob,
    file_lock,
    fsync_dir,
    read_json,
    write_atomic,
)
from orchestrator.spec.errors import StackError

__all__ = ["BlobWriter", "ImageRecord", "ImageStore", "LayerInfo", "LayerRef", "PruneResult"]


class ImageStore:
    """One image store on disk. Synchronous: async callers use trio.to_thread."""

    def __init__(
        self, root: str | os.PathLike[str], *, in_use: Callable[[str], bool] | None = None
    ) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._tmp = self.root / "tmp"
        self._locks = self._tmp / "locks"
        self._index = self.root / "index.json"
        self._in_use = in_use or (lambda digest: False)
        for directory in (self._blobs, self.root / "layers", self._locks):
            directory.mkdir(parents=True, exist_ok=True)
        self._layer_store = LayerStore(self.root / "layers", self._tmp, self._locks, self.blob_path)
        self._open_lock = self._hold_open_lock()

    def close(self) -> None:
        """Let another process clean tmp/ (also happens when the store is collected)."""
        self._open_lock.close()

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _hold_open_lock(self) -> BinaryIO:
        """Clean tmp/ if no other store has it open, then share the lock while we live.

        A shared flock per open store means "someone may be writing in tmp/";
        only who gets it exclusively can remove litter without destroying a
        neighbour's in-progress write.
        """
        lock = open(self._locks / "open.lock", "a+b")  # noqa: SIM115 (held for our lifetime)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            self._clean_tmp()
        fcntl.flock(lock, fcntl.LOCK_SH)
        return lock

    def _clean_tmp(self) -> None:
        for entry in self._tmp.iterdir():
            if entry == self._locks:
                for lock in entry.iterdir():
                    if lock.name != "open.lock":
                        lock.unlink(missing_ok=True)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def _locked(self, name: str, shared: bool = False) -> AbstractContextManager[None]:
        return file_lock(self._locks / f"{name}.lock", shared)

    # -- blobs --------------------------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        """Where in-progress files go (spooled archives too): emptied when a store opens."""
        return self._tmp

    def blob_path(self, digest: str) -> Path:
        return self._blobs / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        """Whether a blob is stored (not whether it is intact: that is checked on use)."""
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        """A blob's bytes, verified against its digest. For manifests and configs:
        layers are streamed by `unpack_layer`."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StackError(f"blob {digest} is not in the image store") from None
        actual = sha256_digest(data)
        if actual != digest:
            raise corrupt_blob(digest, actual)
        return data

    def put_blob(self, data: bytes, digest: str | None = None) -> str:
        with self.blob_writer(digest) as writer:
            writer.write(data)
            return writer.commit()

    def blob_writer(self, digest: str | None = None) -> BlobWriter:
        """A writer for one blob; see BlobWriter. `digest`, if given, is checked on commit."""
        if digest is not None:
            validate_digest(digest)
        return BlobWriter(self._tmp, self._blobs, digest)

    # -- layers -------------------------------------------------------------------

    def unpack_layer(
        self, digest: str, media_type: str, parent: str | None, *, diff_id: str | None = None
    ) -> LayerInfo:
        """The unpacked layer of blob `digest` on top of chain `parent`, unpacked if needed.

        Idempotent and done once however many threads or processes ask at the
        same time: they queue on a lock for (parent, blob) and the later ones
        find the layer. `diff_id`, when the caller knows it (from the image
        config), finds a layer already unpacked from another blob of the same
        content, and is checked against what the blob unpacks to.
        """
        with self._locked("gc", shared=True):
            return self._layer_store.unpack(digest, media_type, parent, diff_id)

    def layer_dirs(self, record: ImageRecord) -> list[str]:
        """The image's unpacked layer trees, topmost first (overlay lowerdir order)."""
        dirs = []
        for layer in reversed(record.layers):
            path = self._layer_store.path(layer.chain_id) / "diff"
            if not path.is_dir():
                raise StackError(
                    f"image {record.manifest_digest}: layer {layer.chain_id} is not unpacked",
                    hint="pull or load the image again",
                )
            dirs.append(str(path))
        return dirs

    def has_layer(self, chain: str) -> bool:
        """Whether the layer stack `chain` (a chain id) is unpacked, completely."""
        return self._layer_store.metadata(chain) is not None

    # -- images -------------------------------------------------------------------

    def add_image(
        self,
        manifest_digest: str,
        references: Iterable[str] = (),
        *,
        index_digest: str | None = None,
    ) -> ImageRecord:
        """Record an image whose manifest, config and layer blobs are all stored:
        unpack its layers, then give it `references`.

        `index_digest` is the multi-platform index the image was chosen from: it
        is remembered, so `name@<index digest>` (how files usually pin images)
        finds this image without asking the registry again.
        """
        manifest = self._manifest(manifest_digest)
        config = parse_image_config(
            self.read_blob(manifest.config.digest), where=f"image config {manifest.config.digest}"
        )
        check_config_matches(manifest, config)
        known = {manifest_digest, index_digest} - {None}
        refs = [self._checked_reference(r, manifest_digest, known) for r in references]
        for layer in manifest.layers:
            if not self.has_blob(layer.digest):
                raise StackError(
                    f"image {manifest_digest}: layer blob {layer.digest} is not in the image store"
                )
        with self._locked("gc", shared=True):
            self._layer_store.unpack_image([
                (layer.digest, layer.media_type, diff_id)
                for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True)
            ])
            with self._index_update() as index:
                entry = index["images"].setdefault(manifest_digest, {})
                entry["config"] = manifest.config.digest
                if index_digest is not None:
                    entry["indexes"] = sorted({*entry.get("indexes", ()), index_digest})
                for ref in refs:
                    index["references"][ref] = manifest_digest
        return self.image(manifest_digest)

    def tag(self, reference: str, manifest_digest: str) -> None:
        with self._index_update() as index:
            entry = index["images"].get(manifest_digest)
            if entry is None:
                raise StackError(f"no such image: {manifest_digest}")
            known = {manifest_digest, *entry.get("indexes", ())}
            ref = self._checked_reference(reference, manifest_digest, known)
            index["references"][ref] = manifest_digest

    def record_pull(self, reference: str, when: float) -> None:
        """Note that `reference` was pulled at `when` (epoch seconds), for pull policies."""
        ref = normalize_reference(reference)
        with self._index_update() as index:
            index.setdefault("pulls", {})[ref] = when

    def last_pull(self, reference: str) -> float | None:
        """When `reference` was last pulled, if it ever was."""
        return self._read_index().get("pulls", {}).get(normalize_reference(reference))

    def untag(self, reference: str) -> None:
        ref = normalize_reference(reference)
        with self._index_update() as index:
            if index["references"].pop(ref, None) is None:
                raise StackError(f"no such image reference: {reference}")

    def resolve(self, name: str) -> str | None:
        """The manifest digest `name` stands for: a reference (`redis`, `x@sha256:…`),
        a manifest or config digest, or an unambiguous prefix of one (an image id)."""
        return self._resolve(self._read_index(), name)

    def image(self, name: str) -> ImageRecord:
        index = self._read_index()
        digest = self._resolve(index, name)
        if digest is None:
            raise StackError(f"no such image: {name}", hint="see `stack image ls`")
        return self._record(index, digest)

    def images(self) -> list[ImageRecord]:
        """Every image, newest first."""
        index = self._read_index()
        records = [self._record(index, digest) for digest in sorted(index["images"])]
        return sorted(records, key=lambda r: r.created, reverse=True)

    def remove(self, name: str, *, force: bool = False) -> list[str]:
        """Untag `name`; delete the image once no reference is left (or if named by id).

        Returns Docker's lines (`Untagged: …`, `Deleted: sha256:…`). An image a
        container uses is refused; forced, it loses its names but stays, so the
        container's layers do. Blobs and layers are freed by `prune`.
        """
        with self._index_update() as index:
            digest = self._resolve(index, name)
            if digest is None:
                raise StackError(f"no such image: {name}", hint="see `stack image ls`")
            refs = index["references"]
            named = self._as_reference(name)
            mine = sorted(r for r, d in refs.items() if d == digest)
            if named in refs and len(mine) > 1:
                del refs[named]
                return [f"Untagged: {familiar_name(named)}"]
            in_use = self._in_use(digest)
            if in_use and not force:
                raise StackError(
                    f"image {name} is used by a container",
                    hint="remove the container first, or force with -f",
                )
            lines = [f"Untagged: {familiar_name(r)}" for r in mine]
            for ref in mine:
                del refs[ref]
            if not in_use:
                del index["images"][digest]
                lines.append(f"Deleted: {digest}")
            return lines

    def prune(self) -> PruneResult:
        """Delete the blobs and unpacked layers that no image needs."""
        with self._locked("gc"):
            blobs, chains = self._needed(self._read_index())
            result = PruneResult([], [], 0)
            for path in sorted(self._blobs.iterdir()):
                digest = f"sha256:{path.name}"
                if digest not in blobs:
                    result.reclaimed += path.lstat().st_size
                    path.unlink()
                    result.blobs.append(digest)
            for chain in self._layer_store.chains():
                if chain not in chains:
                    result.reclaimed += self._layer_store.delete(chain)
                    result.layers.append(chain)
            fsync_dir(self._blobs)
            fsync_dir(self._layer_store.dir)
            return result

    def discard_unused(self, blobs: Iterable[str], chains: Iterable[str] = ()) -> None:
        """Delete these blobs and unpacked layers unless an image needs them.

        How a failed pull takes back what it added, leaving the store as it
        found it: a targeted `prune` that never touches anything else. Under
        the exclusive gc lock, so no unpack or `add_image` is half-way through.
        """
        with self._locked("gc"):
            needed_blobs, needed_chains = self._needed(self._read_index())
            for digest in set(blobs) - needed_blobs:
                self.blob_path(digest).unlink(missing_ok=True)
            for chain in set(chains) - needed_chains:
                if self.has_layer(chain):
                    self._layer_store.delete(chain)
            fsync_dir(self._blobs)
            fsync_dir(self._layer_store.dir)

    def _needed(self, index: dict[str, Any]) -> tuple[set[str], set[str]]:
        """The blobs and layer chain ids of every image in `index`."""
        blobs: set[str] = set()
        chains: set[str] = set()
        for digest in index["images"]:
            record = self._record(index, digest)
            blobs.update([digest, record.config_digest])
            for layer in record.layers:
                blobs.add(layer.digest)
                chains.add(layer.chain_id)
        return blobs, chains

    # -- index and records --------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        index = read_json(self._index) or {}
        index.setdefault("references", {})
        index.setdefault("images", {})
        return index

    @contextmanager
    def _index_update(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of index.json under its lock; written only if the block succeeds."""
        with self._locked("index"):
            index = self._read_index()
            yield index
            data = json.dumps(index, indent=1, sort_keys=True) + "\n"
            write_atomic(self._index, data.encode(), self._tmp)

    @staticmethod
    def _as_reference(name: str) -> str | None:
        try:
            return normalize_reference(name)
        except StackError:
            return None

    def _checked_reference(self, reference: str, manifest_digest: str, known: set[str]) -> str:
        """`reference` normalized; a digest in it must be the image's (or its index's)."""
        validate_digest(manifest_digest, "manifest digest")
        ref = normalize_reference(reference)
        digest = parse_reference(ref).digest
        if digest is not None and digest not in known:
            raise StackError(f"reference {reference} names another manifest than {manifest_digest}")
        return ref

    @staticmethod
    def _by_digest(images: dict[str, dict[str, Any]], digest: str) -> str | None:
        """The image with this manifest digest, or chosen from the index with this digest."""
        if digest in images:
            return digest
        for manifest, entry in images.items():
            if digest in entry.get("indexes", ()):
                return manifest
        return None

    def _resolve(self, index: dict[str, Any], name: str) -> str | None:
        images: dict[str, dict[str, str]] = index["images"]
        if is_digest(name):
            found = self._by_digest(images, name)
            if found is not None:
                return found
        else:
            ref = self._as_reference(name)
            if ref is not None:
                if ref in index["references"]:
                    return index["references"][ref]
                digest = parse_reference(ref).digest
                found = self._by_digest(images, digest) if digest is not None else None
                if found is not None:
                    return found
        owners: dict[str, set[str]] = {}
        for manifest, entry in images.items():
            owners.setdefault(manifest, set()).add(manifest)
            owners.setdefault(entry["config"], set()).add(manifest)
        match = match_id_prefix(name, owners)
        if match is None:
            return None
        if len(owners[match]) > 1:
            raise StackError(
                f"image id {name} is ambiguous: manifests {', '.join(sorted(owners[match]))} "
                "share that config (name one by its manifest digest)"
            )
        return next(iter(owners[match]))

    def _manifest(self, digest: str) -> Manifest:
        validate_digest(digest, "manifest digest")
        manifest = parse_manifest(self.read_blob(digest), where=f"manifest {digest}")
        if not isinstance(manifest, Manifest):
            raise StackError(
                f"{digest} is a multi-platform index, not an image manifest",
                hint="add the manifest of one platform",
            )
        return manifest

    def _record(self, index: dict[str, Any], digest: str) -> ImageRecord:
        manifest = self._manifest(digest)
        config_bytes = self.read_blob(manifest.config.digest)
        config = parse_image_config(config_bytes, where=f"image config {manifest.config.digest}")
        layers: list[LayerRef] = []
        size = 0
        parent: str | None = None
        for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
            parent = chain_id(parent, diff_id)
            layers.append(LayerRef(layer.digest, layer.media_type, layer.size, diff_id, parent))
            size += int((self._layer_store.metadata(parent) or {}).get("size", 0))
        return ImageRecord(
            manifest_digest=digest,
            config_digest=manifest.config.digest,
            config=json.loads(config_bytes),
            layers=layers,
            references=sorted(r for r, d in index["references"].items() if d == digest),
            size=size,
            created=config.created,
        )
