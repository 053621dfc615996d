"""The OCI distribution API, one registry at a time: manifests and blobs, in and out.

`RegistryClient` speaks to one registry (as named in image references:
`docker.io`, `ghcr.io`, `localhost:5000`) and knows nothing of the store; pull
and push orchestration call it. Its contract:

- every byte it returns as a manifest is verified against the digest asked for
  (and against `Docker-Content-Digest` when the registry sends one);
- `download_blob` verifies size and sha256 and resumes a broken download with a
  Range request; `stream_blob` leaves verification to the caller;
- idempotent requests (GET, HEAD, PUT) are retried with backoff on connection
  failures, 429 and 5xx; a POST or a streamed PATCH is never sent twice, but a
  whole blob upload is started again when its source can be replayed;
- plain HTTP only for loopback, `STACK_INSECURE_REGISTRIES` or `insecure=True`,
  and then only after HTTPS failed, as Docker does.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import NamedTuple
from urllib.parse import urlencode, urljoin

from orchestrator.runtime.images.digests import validate_digest
from orchestrator.runtime.images.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from orchestrator.runtime.images.registry.auth import TokenCache, repository_scope
from orchestrator.runtime.images.registry.credentials import Credentials
from orchestrator.runtime.images.registry.http import ConnectionFailed, Response
from orchestrator.runtime.images.registry.session import (
    SMALL_BODY,
    RegistrySession,
    error_detail,
)
from orchestrator.spec.errors import StackError

GENERIC_CONTENT_TYPES = {"application/json", "text/plain", "application/octet-stream"}
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
MANIFEST_SIZE_LIMIT = 4 * 1024 * 1024

ChunkSource = bytes | AsyncIterable[bytes] | Callable[[], AsyncIterable[bytes]]
"""Blob content to upload; bytes and factories can be sent again after a failure."""
ChunkSink = Callable[[bytes], Awaitable[object] | object]


class FetchedManifest(NamedTuple):
    data: bytes
    media_type: str
    digest: str


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _ref_text(repository: str, reference: str) -> str:
    return f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"


def _manifest_media_type(content_type: str | None, data: bytes) -> str:
    """The Content-Type, else the document's `mediaType`, else what OCI implies by its fields.

    Registries behind generic proxies may serve `application/json`; OCI lets
    `mediaType` be left out. `parse_manifest` checks the document in full later.
    """
    header = (content_type or "").split(";")[0].strip().lower()
    if header and header not in GENERIC_CONTENT_TYPES:
        return header
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return header or "none"
    if not isinstance(document, dict):
        return header or "none"
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


class RegistryClient:
    """Manifests and blobs of one registry; reuse one instance for a whole pull or push."""

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool | None = None,
        credentials: Credentials | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        token_cache: TokenCache | None = None,
    ) -> None:
        self.session = RegistrySession(
            registry,
            insecure=insecure,
            credentials=credentials,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            token_cache=token_cache,
        )
        self.registry = registry
        self.host = self.session.host

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.session.aclose()

    async def verify_credentials(self) -> None:
        """Check the credentials as `docker login` does; StackError if the registry refuses them.

        A token service is asked for a token with no scope (it checks the
        password and grants nothing); a Basic registry is asked for `/v2/`.
        """
        response = await self.session.request("GET", "/v2/", [])
        if response.status != 200:
            raise await self.session.unexpected(response, f"cannot log in to {self.registry}")
        await response.read(limit=SMALL_BODY)

    # --- manifests --------------------------------------------------------------

    async def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = MANIFEST_MEDIA_TYPES
    ) -> FetchedManifest:
        """The manifest bytes as stored (digests are over these bytes), its type and digest."""
        by_digest = reference.startswith("sha256:")
        if by_digest:
            validate_digest(reference, "manifest digest")
        name = f"{self.registry}/{_ref_text(repository, reference)}"
        response = await self.session.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            [repository_scope(repository, ["pull"])],
            headers={"Accept": ", ".join(accept)},
        )
        if response.status == 404:
            detail = error_detail(await response.read(limit=SMALL_BODY))
            raise StackError(f"manifest {name} not found ({detail or 'HTTP 404'})")
        if response.status != 200:
            raise await self.session.unexpected(response, f"cannot get manifest {name}")
        data = await response.read(limit=MANIFEST_SIZE_LIMIT)
        media_type = _manifest_media_type(response.header("content-type"), data)
        if media_type not in accept:
            raise StackError(
                f"manifest {name} has unsupported media type {media_type!r} "
                "(stack reads OCI and Docker schema 2 images and indexes)"
            )
        digest = _sha256(data)
        if by_digest and digest != reference:
            raise StackError(f"manifest {name} does not match its digest: its content is {digest}")
        announced = response.header("docker-content-digest")
        if announced and announced.startswith("sha256:") and announced != digest:
            raise StackError(
                f"manifest {name}: registry announced digest {announced} but sent {digest}"
            )
        return FetchedManifest(data, media_type, digest)

    async def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str
    ) -> str:
        """Upload a manifest under a tag or its digest; its blobs must be there already."""
        digest = _sha256(data)
        name = f"{self.registry}/{_ref_text(repository, reference)}"
        if reference.startswith("sha256:") and reference != digest:
            raise StackError(f"manifest for {name} does not match its digest: it is {digest}")
        response = await self.session.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            [repository_scope(repository, ["pull", "push"])],
            headers={"Content-Type": media_type},
            body=data,
        )
        if response.status not in (200, 201, 202):
            raise await self.session.unexpected(response, f"cannot push manifest {name}")
        await response.read(limit=SMALL_BODY)
        announced = response.header("docker-content-digest")
        if announced and announced.startswith("sha256:") and announced != digest:
            raise StackError(f"manifest {name}: registry stored {announced}, we sent {digest}")
        return digest

    # --- blobs ------------------------------------------------------------------

    async def blob_exists(self, repository: str, digest: str) -> bool:
        validate_digest(digest, "blob digest")
        response = await self.session.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", [repository_scope(repository, ["pull"])]
        )
        await response.read(limit=SMALL_BODY)  # HEAD: no body; keeps the connection for reuse
        if response.status == 200:
            return True
        if response.status == 404:
            return False
        raise await self.session.unexpected(
            response, f"cannot check blob {digest} in {self.registry}/{repository}"
        )

    async def _open_blob(self, repository: str, digest: str, offset: int = 0) -> Response:
        validate_digest(digest, "blob digest")
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = await self.session.request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            [repository_scope(repository, ["pull"])],
            headers=headers,
        )
        where = f"blob {digest} in {self.registry}/{repository}"
        if response.status == 404:
            await response.aclose()
            raise StackError(f"{where} not found")
        if response.status not in (200, 206):
            raise await self.session.unexpected(response, f"cannot download {where}")
        return response

    @asynccontextmanager
    async def stream_blob(
        self, repository: str, digest: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """`async with client.stream_blob(repo, d) as chunks: async for chunk in chunks:`.

        Unverified: the caller hashes what it keeps. The connection is released
        when the block ends, even when the caller stops reading early.
        """
        response = await self._open_blob(repository, digest)
        try:
            async with aclosing(response.iter_body()) as chunks:
                yield chunks
        finally:
            await response.aclose()

    async def download_blob(
        self, repository: str, digest: str, write_chunk: ChunkSink, *, size: int | None = None
    ) -> int:
        """Stream a blob into `write_chunk` (sync or async), verifying size and sha256.

        A connection that breaks mid-blob is resumed where it stopped (Range),
        so the sink never sees a byte twice; on any failure the caller discards
        what it wrote (its temporary file).
        """
        where = f"blob {digest} from {self.registry}/{repository}"
        hasher = hashlib.sha256()
        received = 0
        attempt = 0
        while True:
            try:
                response = await self._open_blob(repository, digest, received)
            except ConnectionFailed as error:
                if not received:
                    raise
                raise StackError(
                    f"{where} truncated after {received} bytes; resuming failed: {error.message}"
                ) from error
            resumed_at = (response.header("content-range") or "").removeprefix("bytes ")
            if received and (response.status != 206 or not resumed_at.startswith(f"{received}-")):
                await response.aclose()
                raise StackError(
                    f"{where} truncated after {received} bytes and the registry cannot resume it"
                )
            length = response.header("content-length")
            announced = int(length) if length and length.isdigit() else None
            if response.status == 200 and size is not None and announced not in (None, size):
                await response.aclose()
                raise StackError(f"{where} is {length} bytes, the manifest says {size}")
            try:
                async with aclosing(response.iter_body()) as chunks:
                    async for chunk in chunks:
                        received += len(chunk)
                        if size is not None and received > size:
                            raise StackError(f"{where} is larger than the {size} bytes expected")
                        hasher.update(chunk)
                        result = write_chunk(chunk)
                        if inspect.isawaitable(result):
                            await result
            except ConnectionFailed as error:
                if attempt >= self.session.retries:
                    raise StackError(
                        f"{where} truncated: got {received} bytes"
                        + (f" of {size}" if size is not None else "")
                        + f" ({error.message})"
                    ) from error
                await self.session.delay(attempt)
                attempt += 1
                continue
            finally:
                await response.aclose()
            break
        if size is not None and received != size:
            raise StackError(f"{where} truncated: got {received} of {size} bytes")
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            raise StackError(f"{where} is corrupt: its content has digest {actual}")
        return received

    async def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        chunks: ChunkSource,
        *,
        mount_from: str | None = None,
    ) -> str:
        """Make the blob exist in `repository`: "exists", "mounted" or "uploaded".

        A blob the registry already has (or can mount from `mount_from`, another
        repository of the same registry) is not sent at all.
        """
        validate_digest(digest, "blob digest")
        if await self.blob_exists(repository, digest):
            return "exists"
        scopes = [repository_scope(repository, ["pull", "push"])]
        if mount_from:
            scopes.append(repository_scope(mount_from, ["pull"]))
        replayable = isinstance(chunks, bytes) or callable(chunks)
        attempt = 0
        while True:
            try:
                return await self._upload_once(repository, digest, size, chunks, scopes, mount_from)
            except ConnectionFailed:
                if not replayable or attempt >= self.session.retries:
                    raise
            await self.session.delay(attempt)
            attempt += 1

    async def _upload_once(
        self,
        repository: str,
        digest: str,
        size: int,
        chunks: ChunkSource,
        scopes: list[str],
        mount_from: str | None,
    ) -> str:
        where = f"blob {digest} to {self.registry}/{repository}"
        query = f"?{urlencode({'mount': digest, 'from': mount_from})}" if mount_from else ""
        response = await self.session.request(
            "POST", f"/v2/{repository}/blobs/uploads/{query}", scopes, idempotent=False
        )
        if response.status == 201 and mount_from:
            await response.read(limit=SMALL_BODY)
            return "mounted"
        location = response.header("location")
        if response.status != 202 or not location:
            raise await self.session.unexpected(response, f"cannot start upload of {where}")
        await response.read(limit=SMALL_BODY)
        location = urljoin(response.url, location)
        if isinstance(chunks, bytes):
            finish = await self.session.request(
                "PUT",
                _with_query(location, digest=digest),
                scopes,
                headers={"Content-Type": "application/octet-stream"},
                body=chunks,
                idempotent=False,
            )
        else:
            source = chunks() if callable(chunks) else chunks
            patch = await self.session.request(
                "PATCH",
                location,
                scopes,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                body=source,
                idempotent=False,
            )
            if patch.status != 202:
                raise await self.session.unexpected(patch, f"cannot upload {where}")
            await patch.read(limit=SMALL_BODY)
            location = urljoin(patch.url, patch.header("location") or location)
            finish = await self.session.request(
                "PUT", _with_query(location, digest=digest), scopes, idempotent=False
            )
        if finish.status not in (201, 204):
            raise await self.session.unexpected(finish, f"cannot upload {where}")
        await finish.read(limit=SMALL_BODY)
        announced = finish.header("docker-content-digest")
        if announced and announced != digest:
            raise StackError(f"upload of {where}: registry stored {announced}")
        return "uploaded"


def _with_query(url: str, **params: str) -> str:
    """Add parameters to an upload URL, keeping the registry's own (`_state=...`)."""
    return url + ("&" if "?" in url else "?") + urlencode(params)
