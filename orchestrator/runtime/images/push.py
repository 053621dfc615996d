"""Pushing an image from the store to a registry.

The blobs go up exactly as stored: the manifest names them by digest, so
recompressing a layer or re-serializing the manifest would make another image.
Every byte read from the store is hashed on its way out and the upload is
abandoned (before the registry is told it is complete) if a blob on disk does
not match its name, so a corrupt store cannot publish a corrupt image.

Blobs the registry has are not sent (a HEAD first); a blob that the image's own
references place in another repository of the same registry is mounted from
there, which costs one request instead of the bytes. The manifest goes last,
once every blob it names is in place, as the distribution spec requires.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable

import trio

from orchestrator.runtime.images.manifest import Manifest, is_foreign_layer, parse_manifest
from orchestrator.runtime.images.progress import (
    ByteProgress,
    ProgressEvent,
    ProgressSink,
    short_digest,
)
from orchestrator.runtime.images.pull import Worker, registry_client
from orchestrator.runtime.images.records import ImageRecord
from orchestrator.runtime.images.reference import Reference, familiar_name, parse_reference
from orchestrator.runtime.images.registry import RegistryClient
from orchestrator.runtime.images.store import ImageStore
from orchestrator.runtime.images.store_files import corrupt_blob
from orchestrator.runtime.nurseries import single_error
from orchestrator.spec.errors import StackError

READ_SIZE = 1 << 20

_STATUS = {"exists": "layer already exists", "mounted": "mounted", "uploaded": "pushed"}


async def push_image(
    store: ImageStore,
    name: str,
    *,
    destination: str | None = None,
    progress: ProgressSink | None = None,
    insecure_registries: Iterable[str] = (),
    docker_config: str | None = None,
    max_concurrent_uploads: int = 3,
) -> str:
    """Push the stored image `name` to `destination` (by default, `name` itself).

    Returns the manifest digest, which is the one in the store: the registry
    holds the very same bytes.
    """
    worker = Worker(max_concurrent_uploads + 1)
    record = await worker.run(store.image, name)
    target = _target(record, name, destination)
    manifest_bytes = await worker.run(store.read_blob, record.manifest_digest)
    manifest = parse_manifest(manifest_bytes, where=f"manifest {record.manifest_digest}")
    if not isinstance(manifest, Manifest):
        raise StackError(f"{name}: {record.manifest_digest} is an index, not an image manifest")
    if target.digest is not None and target.digest != record.manifest_digest:
        raise StackError(
            f"cannot push {name} as {familiar_name(target)}: its manifest is "
            f"{record.manifest_digest}",
            hint="push it under a tag",
        )
    upload = _Upload(store, target, record, worker, progress)
    async with registry_client(target.domain, insecure_registries, docker_config) as client:
        await upload.blobs(client, manifest, max_concurrent_uploads)
        digest = await client.put_manifest(
            target.path, target.tag or record.manifest_digest, manifest_bytes, manifest.media_type
        )
    if digest != record.manifest_digest:  # put_manifest hashes what it sent: never happens
        raise StackError(f"pushed manifest {digest} is not the stored {record.manifest_digest}")
    return digest


def _target(record: ImageRecord, name: str, destination: str | None) -> Reference:
    """Where to push: `destination`, else `name` when it is one of the image's references."""
    if destination is not None:
        return parse_reference(destination).with_default_tag()
    try:
        target = parse_reference(name).with_default_tag()
    except StackError:
        target = None
    if target is None or str(target) not in record.references:
        raise StackError(
            f"image {name} has no name to push it under",
            hint="give a destination such as registry.example.com/app:1.0, or tag the image",
        )
    return target


def _mount_source(record: ImageRecord, target: Reference) -> str | None:
    """Another repository of the target's registry that the image is known to be in."""
    for reference in record.references:
        known = parse_reference(reference)
        if known.domain == target.domain and known.path != target.path:
            return known.path
    return None


class _Upload:
    def __init__(
        self,
        store: ImageStore,
        target: Reference,
        record: ImageRecord,
        worker: Worker,
        progress: ProgressSink | None,
    ) -> None:
        self.store = store
        self.target = target
        self.worker = worker
        self.progress = progress
        self.image = familiar_name(target)
        self.mount_from = _mount_source(record, target)

    async def blobs(self, client: RegistryClient, manifest: Manifest, parallel: int) -> None:
        """Config and layers, a few at a time; foreign layers stay where their URLs say."""
        wanted = {manifest.config.digest: manifest.config.size}
        for layer in manifest.layers:
            if not is_foreign_layer(layer.media_type):
                wanted.setdefault(layer.digest, layer.size)
        slots = trio.Semaphore(parallel)
        try:
            async with trio.open_nursery() as nursery:
                for digest, size in wanted.items():
                    nursery.start_soon(self._blob, client, digest, size, slots)
        except BaseExceptionGroup as group:
            raise single_error(group) from None

    async def _blob(
        self, client: RegistryClient, digest: str, size: int, slots: trio.Semaphore
    ) -> None:
        short = short_digest(digest)
        async with slots:
            bar = ByteProgress(self.progress, self.image, short, "pushing", size)
            result = await client.upload_blob(
                self.target.path,
                digest,
                size,
                lambda: self._read(digest, size, bar),
                mount_from=self.mount_from,
            )
        if self.progress is not None:
            self.progress(ProgressEvent(self.image, short, _STATUS[result], size, size))

    async def _read(self, digest: str, size: int, bar: ByteProgress) -> AsyncIterator[bytes]:
        """The stored blob in chunks, hashed as it goes; an error instead of a wrong last byte."""
        bar.current = 0  # a retried upload starts again from the first byte
        bar.report()
        try:
            blob = await self.worker.run(self.store.blob_path(digest).open, "rb")
        except FileNotFoundError:
            raise StackError(f"blob {digest} is not in the image store") from None
        hasher = hashlib.sha256()
        sent = 0
        try:
            while chunk := await self.worker.run(blob.read, READ_SIZE):
                sent += len(chunk)
                hasher.update(chunk)
                if sent > size:
                    break
                if sent == size and f"sha256:{hasher.hexdigest()}" != digest:
                    break  # before the last byte goes: the registry never sees a whole blob
                bar.add(len(chunk))
                yield chunk
        finally:
            blob.close()
        actual = f"sha256:{hasher.hexdigest()}"
        if sent != size or actual != digest:
            raise corrupt_blob(digest, actual)
