"""Pulling an image from a registry into the image store.

One pull: resolve the reference to one image manifest (an index is narrowed to
the platform asked for), fetch and check its config, download the layer blobs
a few at a time straight into the store (each verified by size and sha256
before it is committed), and unpack each layer as soon as its blob is there
(a layer's tree does not need the one below it, only its chain id does, and
the config gives every chain id up front). The image gets its name last, so it appears complete or
not at all.

Failures leave the store as the pull found it: anything this pull added (blobs,
unpacked layers) and no image needs is taken back before the error goes up.
The cost of that choice is that a pull broken off after nine of ten layers
downloads all ten again; the gain is that a failed pull never litters the store.

Concurrent pulls in one process download each blob once: the second pull to
want a blob waits for the first one's download instead of starting its own.
The table of downloads in flight is module-level, keyed by the store's
directory and the trio run, rather than an object callers pass around:
every caller (the engine pulling a stack's services in parallel, the CLI)
then gets it without having to remember to share anything, and forgetting to
would silently double the traffic. Entries exist only while a pull runs.
Between processes nothing is shared but the store itself: blob commits are
atomic renames of verified files, so the worst case is the same blob
downloaded twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from orchestrator.runtime.images.digests import chain_ids
from orchestrator.runtime.images.image_config import check_config_matches, parse_image_config
from orchestrator.runtime.images.layers import UNPACK_THREADS
from orchestrator.runtime.images.manifest import (
    Descriptor,
    Manifest,
    ManifestIndex,
    parse_manifest,
    select_platform,
)
from orchestrator.runtime.images.platform import DEFAULT_PLATFORM
from orchestrator.runtime.images.progress import (
    IMAGE,
    ByteProgress,
    ProgressEvent,
    ProgressSink,
    Status,
    short_digest,
)
from orchestrator.runtime.images.records import ImageRecord
from orchestrator.runtime.images.reference import (
    Reference,
    familiar_name,
    is_insecure_allowed,
    parse_reference,
)
from orchestrator.runtime.images.registry import FetchedManifest, RegistryClient, load_credentials
from orchestrator.runtime.images.registry.credentials import docker_config_path
from orchestrator.runtime.images.store import ImageStore
from orchestrator.runtime.nurseries import single_error
from orchestrator.spec.errors import StackError

WRITE_SIZE = 1 << 20
"""Downloaded bytes are written to the store in pieces this big, each in a worker thread."""

T = TypeVar("T")


# --- shared by pull and push ----------------------------------------------------------


def registry_client(
    domain: str, insecure_registries: Iterable[str] = (), docker_config: str | None = None
) -> RegistryClient:
    """A client for the registry of `domain`, with the user's stored credentials.

    `docker_config` is Docker's config directory (as `DOCKER_CONFIG`) or the
    `config.json` itself; by default, the one `docker login` writes.
    """
    path = docker_config_path()
    if docker_config is not None:
        path = Path(docker_config)
        if path.is_dir():
            path = path / "config.json"
    # None, not False: the session still honours STACK_INSECURE_REGISTRIES itself.
    insecure = True if is_insecure_allowed(domain, insecure_registries) else None
    return RegistryClient(domain, insecure=insecure, credentials=load_credentials(domain, path))


class Worker:
    """Blocking store calls, run in threads with a bound on how many at once."""

    def __init__(self, threads: int) -> None:
        self.limiter = trio.CapacityLimiter(threads)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(partial(function, *args), limiter=self.limiter)


# --- downloads shared by the pulls of one process -------------------------------------


@dataclass
class _InFlight:
    """What the running pulls of one store are doing: downloads, and what they need."""

    downloads: dict[str, trio.Event] = field(default_factory=dict)
    claims: Counter[str] = field(default_factory=Counter)


_IN_FLIGHT: dict[tuple[Path, trio.lowlevel.TrioToken], _InFlight] = {}


class _Claims:
    """The blobs and layers one pull needs, marked so no other pull's rollback takes them.

    Keyed by the trio run as well as the store: trio's events belong to the run
    that made them.
    """

    def __init__(self, store: ImageStore) -> None:
        self._key = (store.root.resolve(), trio.lowlevel.current_trio_token())
        self.shared = _IN_FLIGHT.setdefault(self._key, _InFlight())
        self.names: set[str] = set()

    def add(self, names: Iterable[str]) -> None:
        new = set(names) - self.names
        self.shared.claims.update(new)
        self.names |= new

    def only_mine(self, names: Iterable[str]) -> list[str]:
        return sorted(name for name in names if self.shared.claims[name] <= 1)

    def release(self) -> None:
        self.shared.claims.subtract(self.names)
        self.shared.claims = +self.shared.claims  # drop the zero counts
        if not self.shared.claims and not self.shared.downloads:
            _IN_FLIGHT.pop(self._key, None)

    async def once(self, digest: str, fetch: Callable[[], Awaitable[None]]) -> None:
        """Run `fetch` for `digest` once no other pull is fetching it.

        `fetch` checks the store first, so after another pull's download it finds
        the blob; a download that failed left nothing, and this one tries again.
        """
        while (other := self.shared.downloads.get(digest)) is not None:
            await other.wait()
        mine = self.shared.downloads[digest] = trio.Event()
        try:
            await fetch()
        finally:
            del self.shared.downloads[digest]
            mine.set()


# --- the pull -------------------------------------------------------------------------


async def pull_image(
    store: ImageStore,
    reference: str,
    *,
    platform: str | None = DEFAULT_PLATFORM,
    progress: ProgressSink | None = None,
    insecure_registries: Iterable[str] = (),
    docker_config: str | None = None,
    max_concurrent_downloads: int = 3,
) -> ImageRecord:
    """Pull `reference` into `store` and name it so; the image as stored.

    A pull by tag records `name:tag`; a pull by digest records `name@digest` as
    written. When the reference names a multi-platform index, the store also
    remembers the index digest, so `name@<index digest>` resolves locally later.
    """
    ref = parse_reference(reference).with_default_tag()
    image = familiar_name(ref)
    if progress is not None:
        progress(ProgressEvent(image, IMAGE, "resolving"))
    async with registry_client(ref.domain, insecure_registries, docker_config) as client:
        manifest, index_digest = await _resolve_manifest(client, ref, platform or DEFAULT_PLATFORM)
        name = str(ref) if not ref.digest else f"{ref.repository}@{ref.digest}"
        job = _Pull(store, client, ref, manifest, progress, image, max_concurrent_downloads)
        record = await job.run(name, index_digest)
        await trio.to_thread.run_sync(store.record_pull, name, time.time())
    if progress is not None:
        progress(ProgressEvent(image, IMAGE, "pull complete"))
    return record


async def _get_manifest(client: RegistryClient, ref: Reference, target: str) -> FetchedManifest:
    try:
        return await client.get_manifest(ref.path, target)
    except StackError as error:
        # The client reports a 404 as "manifest NAME not found (...)"; say it as Docker does.
        if error.message.startswith("manifest ") and " not found (" in error.message:
            shown = ref._replace(tag=None, digest=target) if ":" in target else ref
            raise StackError(
                f"manifest unknown: {familiar_name(shown)}",
                hint="check the image name and tag, and `stack login` for a private image",
            ) from None
        raise


async def _resolve_manifest(
    client: RegistryClient, ref: Reference, platform: str
) -> tuple[Manifest, str | None]:
    """The image manifest `ref` names, and the digest of the index it came through (if any)."""
    where = familiar_name(ref)
    fetched = await _get_manifest(client, ref, ref.digest or ref.tag or "latest")
    document = parse_manifest(fetched.data, fetched.media_type, where=where)
    index_digest = None
    if isinstance(document, ManifestIndex):
        index_digest = fetched.digest
        entry = select_platform(document, platform, where=where)
        fetched = await _get_manifest(client, ref, entry.digest)
        if len(fetched.data) != entry.size:
            raise StackError(
                f"{where}: manifest {entry.digest} is {len(fetched.data)} bytes, "
                f"the index says {entry.size}"
            )
        document = parse_manifest(fetched.data, fetched.media_type, where=where)
        if isinstance(document, ManifestIndex):
            raise StackError(f"{where}: the index entry for {platform} is another index")
    return document, index_digest


class _Pull:
    """One pull after its manifest is known: blobs, unpacking, naming, or rollback."""

    def __init__(
        self,
        store: ImageStore,
        client: RegistryClient,
        ref: Reference,
        manifest: Manifest,
        progress: ProgressSink | None,
        image: str,
        parallel: int,
    ) -> None:
        self.store = store
        self.client = client
        self.ref = ref
        self.manifest = manifest
        self.progress = progress
        self.image = image
        self.parallel = parallel
        self.worker = Worker(parallel + 1)  # the downloads' writes and one spare
        self.blobs = {manifest.digest, manifest.config.digest}
        self.blobs.update(layer.digest for layer in manifest.layers)
        self.chains: list[str] = []
        self.diff_ids: tuple[str, ...] = ()
        self.downloaded: set[str] = set()
        self.claims = _Claims(store)

    def emit(self, layer: str, status: Status, current: int = 0, total: int | None = None) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(self.image, layer, status, current, total))

    async def run(self, name: str, index_digest: str | None) -> ImageRecord:
        claims = self.claims
        try:
            claims.add(self.blobs)
            had_blobs = await self.worker.run(self._stored_blobs)
            had_chains: set[str] = set()
            try:
                await self._config()
                claims.add(self.chains)
                had_chains = await self.worker.run(self._unpacked_chains)
                await self._layers()
                await self.worker.run(self.store.put_blob, self.manifest.raw, self.manifest.digest)
                return await self.worker.run(
                    partial(self.store.add_image, index_digest=index_digest),
                    self.manifest.digest,
                    [name],
                )
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self.worker.run(
                        self.store.discard_unused,
                        claims.only_mine(self.blobs - had_blobs),
                        claims.only_mine(set(self.chains) - had_chains),
                    )
                raise
        finally:
            claims.release()

    def _stored_blobs(self) -> set[str]:
        return {digest for digest in self.blobs if self.store.has_blob(digest)}

    def _unpacked_chains(self) -> set[str]:
        return {chain for chain in self.chains if self.store.has_layer(chain)}

    async def _config(self) -> None:
        """The image config, stored and read back verified; it names the layers' diff ids."""
        descriptor = self.manifest.config
        found: list[bytes] = []

        async def fetch() -> None:
            local = await self.worker.run(_read_intact, self.store, descriptor.digest)
            if local is None:
                received = bytearray()
                await self.client.download_blob(
                    self.ref.path, descriptor.digest, received.extend, size=descriptor.size
                )
                local = bytes(received)
                await self._disk(descriptor.digest, self.store.put_blob, local, descriptor.digest)
            found.append(local)

        await self.claims.once(descriptor.digest, fetch)
        config = parse_image_config(found[0], where=f"image config {descriptor.digest}")
        check_config_matches(self.manifest, config, where=self.image)
        self.diff_ids = config.diff_ids
        self.chains = chain_ids(config.diff_ids)

    async def _layers(self) -> None:
        slots = trio.Semaphore(self.parallel)
        unpackers = trio.CapacityLimiter(UNPACK_THREADS)
        try:
            async with trio.open_nursery() as nursery:
                for n, layer in enumerate(self.manifest.layers):
                    nursery.start_soon(self._layer, layer, n, slots, unpackers)
        except BaseExceptionGroup as group:
            raise single_error(group) from None

    async def _layer(
        self, layer: Descriptor, n: int, slots: trio.Semaphore, unpackers: trio.CapacityLimiter
    ) -> None:
        """Make the `n`th layer's blob present (found, downloaded by another pull,
        or by us), then its unpacked tree."""
        short = short_digest(layer.digest)
        chain, parent = self.chains[n], self.chains[n - 1] if n else None

        async def fetch() -> None:
            if await self.worker.run(self.store.has_blob, layer.digest):
                self.emit(short, "already exists")
                return
            self.emit(short, "waiting")
            async with slots:
                await self._download(layer, short)

        if self.progress is not None and layer.digest in self.claims.shared.downloads:
            self.emit(short, "waiting")
        await self.claims.once(layer.digest, fetch)

        unpacked = await self.worker.run(self.store.has_layer, chain)
        if not unpacked:
            self.emit(short, "extracting", 0, layer.size)
        await trio.to_thread.run_sync(
            partial(self.store.unpack_layer, diff_id=self.diff_ids[n]),
            layer.digest,
            layer.media_type,
            parent,
            limiter=unpackers,
        )
        if not unpacked or layer.digest in self.downloaded:
            self.emit(short, "pull complete", layer.size, layer.size)

    async def _download(self, layer: Descriptor, short: str) -> None:
        bar = ByteProgress(self.progress, self.image, short, "downloading", layer.size)
        bar.report()
        writer = await self._disk(layer.digest, self.store.blob_writer, layer.digest)
        pending = bytearray()

        async def write(chunk: bytes) -> None:
            pending.extend(chunk)
            bar.add(len(chunk))
            if len(pending) >= WRITE_SIZE:
                await self._disk(layer.digest, writer.write, bytes(pending))
                pending.clear()

        with writer:
            # The client checks size and digest as bytes arrive; the writer checks
            # again what reached the disk before it commits.
            await self.client.download_blob(self.ref.path, layer.digest, write, size=layer.size)
            if pending:
                await self._disk(layer.digest, writer.write, bytes(pending))
            self.emit(short, "verifying", bar.current, layer.size)
            await self._disk(layer.digest, writer.commit)
        self.downloaded.add(layer.digest)

    async def _disk(self, digest: str, function: Callable[..., T], *args: Any) -> T:
        """A blob write in a thread; a full or failing disk is one error line."""
        try:
            return await self.worker.run(function, *args)
        except OSError as error:
            raise StackError(
                f"cannot store blob {digest} in {self.store.root}: {error.strerror or error}"
            ) from None


def _read_intact(store: ImageStore, digest: str) -> bytes | None:
    """A stored blob's bytes, or None when missing or corrupt (fetching it again repairs it)."""
    if not store.has_blob(digest):
        return None
    try:
        return store.read_blob(digest)
    except StackError:
        return None
