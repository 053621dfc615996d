"""The registry client against a real `docker-registry`, and against servers that misbehave."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from support.registry import (
    RegistryServer,
    Reply,
    Request,
    ScriptedServer,
    free_port,
    run_registry,
)

from orchestrator.runtime.images.registry import RegistryClient
from orchestrator.spec.errors import StackError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tiny_layer() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        content = b"hello from a layer\n"
        info = tarfile.TarInfo("etc/greeting")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def tiny_image() -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) of a one-layer OCI image."""
    layer = tiny_layer()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return config, layer, manifest


def client(host: str, **options: object) -> RegistryClient:
    return RegistryClient(host, retries=2, backoff=0.01, timeout=10, **options)  # type: ignore[arg-type]


async def chunked(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with run_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.mark.trio
async def test_pushed_image_reads_back_with_the_same_bytes_and_digests(
    registry: RegistryServer,
) -> None:
    config, layer, manifest = tiny_image()
    async with client(registry.host) as registry_client:
        assert await registry_client.upload_blob("app/one", sha256(config), len(config), config)
        assert (
            await registry_client.upload_blob(
                "app/one", sha256(layer), len(layer), lambda: chunked(layer, 1000)
            )
            == "uploaded"
        )
        pushed = await registry_client.put_manifest("app/one", "1.0", manifest, OCI_MANIFEST)

        by_tag = await registry_client.get_manifest("app/one", "1.0")
        by_digest = await registry_client.get_manifest("app/one", pushed)
        received = bytearray()
        size = await registry_client.download_blob(
            "app/one", sha256(layer), received.extend, size=len(layer)
        )

    assert pushed == sha256(manifest)
    assert by_tag == (manifest, OCI_MANIFEST, pushed)
    assert by_digest == by_tag
    assert bytes(received) == layer and size == len(layer)


@pytest.mark.trio
async def test_blob_exists_only_after_upload_and_second_upload_is_skipped(
    registry: RegistryServer,
) -> None:
    blob = b"some blob content" * 100
    async with client(registry.host) as registry_client:
        assert not await registry_client.blob_exists("app/exists", sha256(blob))
        assert (
            await registry_client.upload_blob("app/exists", sha256(blob), len(blob), chunked(blob))
            == "uploaded"
        )
        assert await registry_client.blob_exists("app/exists", sha256(blob))
        assert (
            await registry_client.upload_blob("app/exists", sha256(blob), len(blob), blob)
            == "exists"
        )


@pytest.mark.trio
async def test_blob_is_mounted_from_another_repository_without_sending_it(
    registry: RegistryServer,
) -> None:
    blob = b"shared base layer" * 1000
    async with client(registry.host) as registry_client:
        await registry_client.upload_blob("app/base", sha256(blob), len(blob), blob)
        outcome = await registry_client.upload_blob(
            "app/derived", sha256(blob), len(blob), blob, mount_from="app/base"
        )
        assert outcome == "mounted"
        assert await registry_client.blob_exists("app/derived", sha256(blob))


@pytest.mark.trio
async def test_streamed_blob_is_the_uploaded_blob(registry: RegistryServer) -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB, several reads
    async with client(registry.host) as registry_client:
        await registry_client.upload_blob("app/stream", sha256(blob), len(blob), blob)
        async with registry_client.stream_blob("app/stream", sha256(blob)) as chunks:
            received = b"".join([chunk async for chunk in chunks])
    assert received == blob


@pytest.mark.trio
async def test_stopping_a_blob_stream_early_leaves_the_client_usable(
    registry: RegistryServer,
) -> None:
    blob = b"y" * (4 * 1024 * 1024)
    async with client(registry.host) as registry_client:
        await registry_client.upload_blob("app/early", sha256(blob), len(blob), blob)
        async with registry_client.stream_blob("app/early", sha256(blob)) as chunks:
            async for _ in chunks:
                break
        assert await registry_client.blob_exists("app/early", sha256(blob))


@pytest.mark.trio
async def test_unknown_manifest_and_blob_say_what_was_not_found(registry: RegistryServer) -> None:
    async with client(registry.host) as registry_client:
        with pytest.raises(
            StackError, match=r"manifest 127\.0\.0\.1:\d+/app/none:latest not found"
        ):
            await registry_client.get_manifest("app/none", "latest")
        with pytest.raises(StackError, match="not found"):
            await registry_client.download_blob("app/none", sha256(b"x"), lambda chunk: None)


# --- a registry that sends what it should not ------------------------------------------


def serve_blob(content: bytes, digest: str, **reply: object) -> ScriptedServer:
    """A scripted registry whose only blob is `digest`, answered with `content`."""

    def handler(request: Request) -> Reply:
        if request.path == "/v2/":
            return Reply(200, body=b"{}")
        if request.path == f"/v2/app/blob/blobs/{digest}":
            return Reply(200, {"Content-Type": "application/octet-stream"}, content, **reply)  # type: ignore[arg-type]
        return Reply(404, body=b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}')

    return ScriptedServer(handler)


@pytest.mark.trio
async def test_blob_whose_content_does_not_match_its_digest_is_refused() -> None:
    expected = b"the real content"
    with serve_blob(b"tampered content", sha256(expected)) as server:
        async with client(server.host) as registry_client:
            with pytest.raises(StackError, match=f"blob {sha256(expected)} .* is corrupt"):
                await registry_client.download_blob(
                    "app/blob", sha256(expected), lambda chunk: None
                )


@pytest.mark.trio
async def test_blob_of_another_size_than_the_manifest_says_is_refused() -> None:
    blob = b"0123456789"
    with serve_blob(blob, sha256(blob)) as server:
        async with client(server.host) as registry_client:
            with pytest.raises(StackError, match="is 10 bytes, the manifest says 11"):
                await registry_client.download_blob(
                    "app/blob", sha256(blob), lambda chunk: None, size=11
                )


@pytest.mark.trio
async def test_download_cut_short_is_reported_as_truncated() -> None:
    blob = b"x" * 100_000
    with serve_blob(blob, sha256(blob), send_only=40_000) as server:
        async with client(server.host) as registry_client:
            with pytest.raises(StackError, match="truncated after 40000 bytes") as error:
                await registry_client.download_blob(
                    "app/blob", sha256(blob), lambda chunk: None, size=len(blob)
                )
    assert "\n" not in str(error.value)


@pytest.mark.trio
async def test_broken_download_resumes_where_it_stopped() -> None:
    blob = bytes(range(256)) * 400
    digest = sha256(blob)
    broken = []

    def handler(request: Request) -> Reply:
        if request.path == "/v2/":
            return Reply(200)
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("range", ""))
        if match:
            start = int(match.group(1))
            headers = {"Content-Range": f"bytes {start}-{len(blob) - 1}/{len(blob)}"}
            return Reply(206, headers, blob[start:])
        broken.append(request)
        return Reply(200, body=blob, send_only=30_000)

    received = bytearray()
    with ScriptedServer(handler) as server:
        async with client(server.host) as registry_client:
            await registry_client.download_blob("app/blob", digest, received.extend, size=len(blob))
    assert bytes(received) == blob and len(broken) == 1


@pytest.mark.trio
async def test_registry_killed_mid_download_gives_one_error_line(tmp_path: Path) -> None:
    blob = b"\0" * (16 * 1024 * 1024)
    with run_registry(tmp_path) as server:
        async with client(server.host) as registry_client:
            await registry_client.upload_blob("app/big", sha256(blob), len(blob), blob)
            received = 0

            async def slow_sink(chunk: bytes) -> None:
                nonlocal received
                received += len(chunk)
                if server.process.poll() is None and received > 1024 * 1024:
                    server.process.kill()
                    server.process.wait()
                await trio.sleep(0)

            with pytest.raises(StackError) as error:
                await registry_client.download_blob("app/big", sha256(blob), slow_sink)
    message = str(error.value)
    assert "\n" not in message
    assert f"blob {sha256(blob)} from {server.host}/app/big truncated after" in message


@pytest.mark.trio
async def test_manifest_that_does_not_match_the_digest_asked_for_is_refused() -> None:
    _, _, manifest = tiny_image()
    wanted = sha256(b"some other manifest")

    def handler(request: Request) -> Reply:
        return Reply(200, {"Content-Type": OCI_MANIFEST}, manifest)

    with ScriptedServer(handler) as server:
        async with client(server.host) as registry_client:
            with pytest.raises(StackError, match="does not match its digest"):
                await registry_client.get_manifest("app/x", wanted)


@pytest.mark.trio
async def test_manifest_of_unknown_media_type_is_refused() -> None:
    schema1 = b'{"schemaVersion": 1, "name": "app/x", "fsLayers": []}'

    def handler(request: Request) -> Reply:
        return Reply(
            200,
            {"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
            schema1,
        )

    with ScriptedServer(handler) as server:
        async with client(server.host) as registry_client:
            with pytest.raises(StackError, match="unsupported media type .*manifest.v1"):
                await registry_client.get_manifest("app/x", "latest")


@pytest.mark.trio
async def test_manifest_served_as_plain_json_is_known_by_its_media_type_field() -> None:
    _, _, manifest = tiny_image()

    def handler(request: Request) -> Reply:
        return Reply(200, {"Content-Type": "application/json; charset=utf-8"}, manifest)

    with ScriptedServer(handler) as server:
        async with client(server.host) as registry_client:
            fetched = await registry_client.get_manifest("app/x", sha256(manifest))
    assert fetched == (manifest, OCI_MANIFEST, sha256(manifest))


@pytest.mark.trio
async def test_manifest_differing_from_announced_digest_is_refused() -> None:
    _, _, manifest = tiny_image()

    def handler(request: Request) -> Reply:
        headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256(b"other")}
        return Reply(200, headers, manifest)

    with ScriptedServer(handler) as server:
        async with client(server.host) as registry_client:
            with pytest.raises(StackError, match="announced digest"):
                await registry_client.get_manifest("app/x", "latest")


@pytest.mark.trio
async def test_transient_server_errors_are_retried() -> None:
    _, _, manifest = tiny_image()
    answers = iter([Reply(503), Reply(429, {"Retry-After": "0"})])

    def handler(request: Request) -> Reply:
        if request.path == "/v2/":
            return Reply(200)
        return next(answers, Reply(200, {"Content-Type": OCI_MANIFEST}, manifest))

    with ScriptedServer(handler) as server:
        async with client(server.host) as registry_client:
            fetched = await registry_client.get_manifest("app/x", "latest")
    assert fetched.data == manifest
    assert len([r for r in server.requests if "manifests" in r.path]) == 3


@pytest.mark.trio
async def test_blob_redirected_to_another_host_gets_no_registry_credentials() -> None:
    from orchestrator.runtime.images.registry import Credentials

    blob = b"stored in an object store"
    with ScriptedServer(lambda request: Reply(200, body=blob)) as storage:

        def registry_handler(request: Request) -> Reply:
            if "authorization" not in request.headers:
                return Reply(401, {"WWW-Authenticate": 'Basic realm="test"'})
            location = f"http://{storage.host}/bucket/blob?signature=abc"
            return Reply(307, {"Location": location})

        with ScriptedServer(registry_handler) as registry_server:
            async with client(
                registry_server.host, credentials=Credentials("alice", "secret")
            ) as registry_client:
                received = bytearray()
                await registry_client.download_blob("app/x", sha256(blob), received.extend)
    assert bytes(received) == blob
    assert storage.requests[0].path == "/bucket/blob?signature=abc"
    assert "authorization" not in storage.requests[0].headers


# --- connections and the plain-HTTP policy ----------------------------------------------


@pytest.mark.trio
async def test_requests_to_one_registry_share_a_connection() -> None:
    _, _, manifest = tiny_image()

    def handler(request: Request) -> Reply:
        return Reply(200, {"Content-Type": OCI_MANIFEST}, manifest)

    with ScriptedServer(handler) as server:
        async with client(server.host, insecure=True) as registry_client:
            for _ in range(5):
                await registry_client.get_manifest("app/x", "latest")
    # one refused TLS attempt (loopback tries HTTPS first), then one plain connection
    assert server.connections == 2
    assert len(server.requests) == 6


@pytest.mark.trio
async def test_refused_connection_names_the_registry() -> None:
    host = f"127.0.0.1:{free_port()}"
    async with client(host) as registry_client:
        with pytest.raises(StackError, match=f"{re.escape(host)}.*connection refused"):
            await registry_client.get_manifest("app/x", "latest")


@pytest.mark.trio
async def test_plain_http_registry_is_refused_when_not_insecure(registry: RegistryServer) -> None:
    async with client(registry.host, insecure=False) as registry_client:
        with pytest.raises(StackError, match="TLS.*STACK_INSECURE_REGISTRIES"):
            await registry_client.blob_exists("app/x", sha256(b"x"))


@pytest.mark.trio
async def test_loopback_registry_falls_back_to_plain_http_without_retry_delays(
    registry: RegistryServer,
) -> None:
    async with RegistryClient(registry.host, backoff=5.0, timeout=10) as registry_client:
        with trio.fail_after(2):
            assert not await registry_client.blob_exists("app/x", sha256(b"x"))


def test_plain_http_only_for_loopback_or_listed_registries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STACK_INSECURE_REGISTRIES", raising=False)
    assert RegistryClient("registry.example.com:5000").session.schemes == ("https",)
    assert RegistryClient("docker.io").session.schemes == ("https",)
    assert RegistryClient("localhost:5000").session.schemes == ("https", "http")
    assert RegistryClient("127.0.0.1:5000").session.schemes == ("https", "http")

    monkeypatch.setenv("STACK_INSECURE_REGISTRIES", "registry.example.com:5000")
    assert RegistryClient("registry.example.com:5000").session.schemes == ("https", "http")
    assert RegistryClient("registry.example.com:6000").session.schemes == ("https",)


def test_docker_hub_is_reached_on_its_api_host() -> None:
    assert RegistryClient("docker.io").host == "registry-1.docker.io"
