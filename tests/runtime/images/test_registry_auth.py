"""Registry auth: challenge parsing, tokens, Docker's config.json, and real auth'd registries."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import RegistryServer, run_registry, run_token_registry

from orchestrator.runtime.images.registry import RegistryClient
from orchestrator.runtime.images.registry.auth import (
    BearerToken,
    Challenge,
    TokenCache,
    parse_token_response,
    parse_www_authenticate,
    repository_scope,
    token_request_url,
)
from orchestrator.runtime.images.registry.credentials import (
    Credentials,
    docker_config_path,
    load_credentials,
    registry_of_config_key,
    remove_credentials,
    save_credentials,
)
from orchestrator.spec.errors import StackError

# --- WWW-Authenticate -------------------------------------------------------------------


def test_bearer_challenge_with_quoted_scope_containing_commas() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull,push"'
    )
    assert parse_www_authenticate(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/busybox:pull,push",
            },
        )
    ]


def test_basic_challenge_and_case_insensitive_names() -> None:
    assert parse_www_authenticate('BASIC Realm="my registry"') == [
        Challenge("basic", {"realm": "my registry"})
    ]


def test_several_challenges_in_one_header_with_spaces_and_escapes() -> None:
    header = (
        'Basic realm="a \\"quoted\\" realm", Bearer realm = "https://t/x" , error=invalid_token'
    )
    assert parse_www_authenticate(header) == [
        Challenge("basic", {"realm": 'a "quoted" realm'}),
        Challenge("bearer", {"realm": "https://t/x", "error": "invalid_token"}),
    ]


def test_garbage_header_yields_no_usable_challenge() -> None:
    assert all(not c.params for c in parse_www_authenticate("%%% ,,, ==="))


# --- token flow pieces --------------------------------------------------------------------


def test_token_url_carries_service_and_every_scope() -> None:
    challenge = Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})
    url = token_request_url(
        challenge,
        [repository_scope("a/b", ["pull", "push"]), repository_scope("c", ["pull"])],
    )
    assert url == (
        "https://auth.example/token?service=reg"
        "&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=repository%3Ac%3Apull"
    )


def test_token_url_keeps_a_query_already_in_the_realm() -> None:
    challenge = Challenge("bearer", {"realm": "https://auth.example/token?x=1"})
    assert token_request_url(challenge, ["repository:a:pull"]).startswith(
        "https://auth.example/token?x=1&scope="
    )


def test_token_response_accepts_access_token_and_defaults_lifetime() -> None:
    token = parse_token_response(b'{"access_token": "abc"}', now=100.0, source="t")
    assert token == BearerToken("abc", 160.0)
    assert parse_token_response(b'{"token": "x", "expires_in": 3600}', 0.0, "t").expires_at == 3600


def test_token_response_without_token_is_an_error() -> None:
    with pytest.raises(StackError, match="token service t answered without a token"):
        parse_token_response(b'{"expires_in": 60}', 0.0, "t")


def test_cached_token_is_reused_until_shortly_before_it_expires() -> None:
    now = [0.0]
    cache = TokenCache(clock=lambda: now[0])
    cache.put("r", ["repository:a:pull"], BearerToken("tok", 300.0))
    assert cache.get("r", ["repository:a:pull"]) == BearerToken("tok", 300.0)
    assert cache.get("r", ["repository:a:pull,push"]) is None
    assert cache.get("other", ["repository:a:pull"]) is None
    now[0] = 295.0
    assert cache.get("r", ["repository:a:pull"]) is None


# --- ~/.docker/config.json ------------------------------------------------------------


def write_config(path: Path, document: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_credentials_read_from_base64_auth_and_from_fields(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:pa:ss").decode()
    config = write_config(
        tmp_path / "config.json",
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": auth},
                "ghcr.io": {"username": "bob", "password": "token"},
                "quay.io": {},
            }
        },
    )
    assert load_credentials("docker.io", config) == Credentials("alice", "pa:ss")
    assert load_credentials("ghcr.io", config) == Credentials("bob", "token")
    assert load_credentials("quay.io", config) is None
    assert load_credentials("localhost:5000", config) is None
    assert load_credentials("docker.io", tmp_path / "missing.json") is None


def test_config_keys_name_registries_as_docker_does() -> None:
    assert registry_of_config_key("https://index.docker.io/v1/") == "docker.io"
    assert registry_of_config_key("registry-1.docker.io") == "docker.io"
    assert registry_of_config_key("http://Localhost:5000/v2/") == "localhost:5000"


def test_docker_config_environment_variable_moves_the_file(tmp_path: Path) -> None:
    assert docker_config_path({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"
    assert docker_config_path({"HOME": "/home/u"}) == Path("/home/u/.docker/config.json")


def test_login_writes_private_file_and_keeps_other_settings(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / ".docker" / "config.json",
        {"auths": {"index.docker.io": {"auth": "old"}}, "credsStore": "pass", "x": [1]},
    )
    save_credentials("docker.io", Credentials("alice", "secret"), config)
    document = json.loads(config.read_text())
    assert document["credsStore"] == "pass" and document["x"] == [1]
    assert list(document["auths"]) == ["https://index.docker.io/v1/"]
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert load_credentials("docker.io", config) == Credentials("alice", "secret")
    assert [p.name for p in config.parent.iterdir()] == ["config.json"]


def test_logout_forgets_only_that_registry(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    save_credentials("localhost:5000", Credentials("a", "1"), config)
    save_credentials("ghcr.io", Credentials("b", "2"), config)
    assert remove_credentials("localhost:5000", config)
    assert not remove_credentials("localhost:5000", config)
    assert load_credentials("ghcr.io", config) == Credentials("b", "2")


def test_corrupt_config_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{ not json")
    with pytest.raises(StackError, match=r"config\.json:1: not valid JSON .*fix or remove"):
        load_credentials("docker.io", config)


def test_password_is_not_shown_in_repr() -> None:
    assert "secret" not in repr(Credentials("alice", "secret"))


# --- real registries --------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def client(host: str, credentials: Credentials | None) -> RegistryClient:
    return RegistryClient(host, credentials=credentials, retries=1, backoff=0.01, timeout=10)


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with run_registry(tmp_path_factory.mktemp("htpasswd"), htpasswd={"alice": "wonder"}) as server:
        yield server


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with run_token_registry(
        tmp_path_factory.mktemp("token"), {"alice": "wonder"}, anonymous_pull={"public/app"}
    ) as server:
        yield server


@pytest.mark.trio
async def test_basic_auth_registry_accepts_good_credentials(
    htpasswd_registry: RegistryServer,
) -> None:
    blob = b"private layer"
    async with client(htpasswd_registry.host, Credentials("alice", "wonder")) as registry:
        assert await registry.upload_blob("team/app", sha256(blob), len(blob), blob) == "uploaded"
        assert await registry.blob_exists("team/app", sha256(blob))


@pytest.mark.trio
async def test_basic_auth_registry_refuses_bad_password_in_one_line(
    htpasswd_registry: RegistryServer,
) -> None:
    async with client(htpasswd_registry.host, Credentials("alice", "wrong")) as registry:
        with pytest.raises(StackError) as error:
            await registry.get_manifest("team/app", "latest")
    message = str(error.value)
    assert message.startswith(f"authentication failed for {htpasswd_registry.host}: ")
    assert "'alice'" in message and "wrong" not in message and "\n" not in message


@pytest.mark.trio
async def test_basic_auth_registry_without_credentials_suggests_login(
    htpasswd_registry: RegistryServer,
) -> None:
    async with client(htpasswd_registry.host, None) as registry:
        with pytest.raises(StackError, match=f"stack login {htpasswd_registry.host}"):
            await registry.get_manifest("team/app", "latest")


@pytest.mark.trio
async def test_bearer_flow_pushes_and_pulls_with_one_token_per_scope(
    token_registry: RegistryServer,
) -> None:
    tokens = token_registry.token_server
    assert tokens is not None
    blob = b"token protected layer"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(blob),
                "size": len(blob),
            },
            "layers": [],
        }
    ).encode()
    async with client(token_registry.host, Credentials("alice", "wonder")) as registry:
        await registry.upload_blob("team/web", sha256(blob), len(blob), blob)
        await registry.put_manifest("team/web", "v1", manifest, json.loads(manifest)["mediaType"])
        before = len(tokens.requests)
        for _ in range(3):
            assert (await registry.get_manifest("team/web", "v1")).data == manifest
            assert await registry.blob_exists("team/web", sha256(blob))
    asked = [(r.user, r.scopes, r.service) for r in tokens.requests[before:]]
    assert asked == []  # pull and push scopes were fetched during the push, then cached
    scopes = [r.scopes for r in tokens.requests]
    assert ["repository:team/web:pull,push"] in scopes
    assert all(r.user == "alice" for r in tokens.requests)


@pytest.mark.trio
async def test_bearer_flow_with_bad_password_is_refused_by_the_token_service(
    token_registry: RegistryServer,
) -> None:
    async with client(token_registry.host, Credentials("alice", "nope")) as registry:
        with pytest.raises(StackError, match="authentication failed for .*rejected user 'alice'"):
            await registry.get_manifest("team/web", "v1")


@pytest.mark.trio
async def test_anonymous_pull_works_where_allowed_and_is_refused_elsewhere(
    token_registry: RegistryServer,
) -> None:
    async with client(token_registry.host, None) as registry:
        with pytest.raises(StackError, match="manifest .*/public/app:latest not found"):
            await registry.get_manifest("public/app", "latest")
        with pytest.raises(StackError, match="authentication failed for .*anonymous access"):
            await registry.get_manifest("team/web", "v1")


@pytest.mark.trio
@pytest.mark.parametrize("variant", ["htpasswd", "token"])
async def test_login_check_accepts_the_right_password_and_refuses_a_wrong_one(
    variant: str, htpasswd_registry: RegistryServer, token_registry: RegistryServer
) -> None:
    server = htpasswd_registry if variant == "htpasswd" else token_registry
    async with client(server.host, Credentials("alice", "wonder")) as registry:
        await registry.verify_credentials()
    async with client(server.host, Credentials("alice", "guess")) as registry:
        with pytest.raises(StackError, match=f"authentication failed for {server.host}: "):
            await registry.verify_credentials()
