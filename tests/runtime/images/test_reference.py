"""Image references read, normalized and shortened exactly as Docker does.

The expected values are Docker's own: distribution/reference's normalization
examples and what `docker pull` / `docker images` print for the same input.
"""

import pytest

from orchestrator.runtime.images.reference import (
    Reference,
    familiar_name,
    is_full_id,
    is_id_prefix,
    is_insecure_allowed,
    match_id_prefix,
    normalize_reference,
    parse_insecure_registries,
    parse_reference,
    registry_host,
    short_id,
)
from orchestrator.spec.errors import StackError

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("redis", "docker.io/library/redis:latest"),
        ("redis:7", "docker.io/library/redis:7"),
        ("library/redis", "docker.io/library/redis:latest"),
        ("docker.io/redis", "docker.io/library/redis:latest"),
        ("docker.io/library/redis", "docker.io/library/redis:latest"),
        ("index.docker.io/redis", "docker.io/library/redis:latest"),
        ("index.docker.io/foo/bar", "docker.io/foo/bar:latest"),
        ("docker.io/library/a/b", "docker.io/library/a/b:latest"),
        ("foo/bar", "docker.io/foo/bar:latest"),
        ("foo/bar/baz", "docker.io/foo/bar/baz:latest"),
        ("ghcr.io/a/b", "ghcr.io/a/b:latest"),
        ("ghcr.io/a/b:1.2.3", "ghcr.io/a/b:1.2.3"),
        ("quay.io/coreos/etcd:v3.5.0", "quay.io/coreos/etcd:v3.5.0"),
        ("localhost/x", "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("localhost:5000/x:tag", "localhost:5000/x:tag"),
        (f"localhost:5000/x@{D1}", f"localhost:5000/x@{D1}"),
        (f"redis@{D1}", f"docker.io/library/redis@{D1}"),
        (f"redis:7@{D1}", f"docker.io/library/redis:7@{D1}"),
        ("127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:latest"),
        ("[::1]:5000/app", "[::1]:5000/app:latest"),
        ("[fe80::1]/app:1", "[fe80::1]/app:1"),
        ("registry:5000/app", "registry:5000/app:latest"),
        ("my-registry.example.com/a/b/c:tag_1", "my-registry.example.com/a/b/c:tag_1"),
        ("Example.com/app", "Example.com/app:latest"),
        # An uppercase first element cannot be a Hub namespace, so Docker takes it as a host.
        ("FOO/bar", "FOO/bar:latest"),
        # No slash: `localhost:5000` is the Hub image `localhost` with tag 5000.
        ("localhost:5000", "docker.io/library/localhost:5000"),
        ("a.b_c__d-e---f", "docker.io/library/a.b_c__d-e---f:latest"),
        ("redis:_underscore", "docker.io/library/redis:_underscore"),
        ("redis:Mixed.Case-1", "docker.io/library/redis:Mixed.Case-1"),
        ("0", "docker.io/library/0:latest"),
    ],
)
def test_reference_normalizes_as_docker_does(written, canonical):
    assert normalize_reference(written) == canonical


@pytest.mark.parametrize(
    ("written", "domain", "path", "tag", "digest"),
    [
        ("redis", "docker.io", "library/redis", None, None),
        ("redis:7", "docker.io", "library/redis", "7", None),
        ("ghcr.io/a/b", "ghcr.io", "a/b", None, None),
        (f"localhost:5000/x@{D1}", "localhost:5000", "x", None, D1),
        (f"x:t@{D2}", "docker.io", "library/x", "t", D2),
    ],
)
def test_parse_keeps_what_was_written_and_adds_no_tag(written, domain, path, tag, digest):
    assert parse_reference(written) == Reference(domain, path, tag, digest)


def test_reference_parts_and_string_form():
    ref = parse_reference("localhost:5000/team/app:1.0")
    assert ref.repository == "localhost:5000/team/app"
    assert ref.registry_host == "localhost:5000"
    assert str(ref) == "localhost:5000/team/app:1.0"
    assert str(parse_reference("redis")) == "docker.io/library/redis"
    assert parse_reference("redis").with_default_tag().tag == "latest"
    assert parse_reference(f"redis@{D1}").with_default_tag().tag is None


def test_normalizing_twice_changes_nothing():
    for written in ["redis", "ghcr.io/a/b:1", f"localhost:5000/x@{D1}", "foo/bar:2"]:
        once = normalize_reference(written)
        assert normalize_reference(once) == once


@pytest.mark.parametrize(
    ("written", "familiar"),
    [
        ("docker.io/library/redis:latest", "redis:latest"),
        ("redis", "redis"),
        ("docker.io/foo/bar:1", "foo/bar:1"),
        ("docker.io/library/a/b:1", "library/a/b:1"),
        ("ghcr.io/a/b:latest", "ghcr.io/a/b:latest"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
        (f"docker.io/library/redis@{D1}", f"redis@{D1}"),
        (f"docker.io/library/redis:7@{D1}", f"redis:7@{D1}"),
    ],
)
def test_familiar_name_is_what_docker_images_shows(written, familiar):
    assert familiar_name(written) == familiar
    assert familiar_name(parse_reference(written)) == familiar


def test_familiar_repository_is_the_repository_column():
    assert parse_reference("redis:7").familiar_repository == "redis"
    assert parse_reference("ghcr.io/a/b:7").familiar_repository == "ghcr.io/a/b"


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("", "empty image reference"),
        ("Redis", "must be lowercase"),
        ("foo/Bar", "must be lowercase"),
        ("ghcr.io/Org/app", "must be lowercase"),
        ("redis:", "tag '' is not valid"),
        ("redis:-bad", "tag '-bad' is not valid"),
        ("redis:.bad", "tag '.bad' is not valid"),
        ("redis:" + "a" * 129, "is not valid"),
        ("redis:tag with space", "is not valid"),
        ("redis:t\u00e9", "is not valid"),
        ("redis@sha256:abc", "digest 'sha256:abc' is not valid"),
        ("redis@sha256:" + "A" * 64, "is not valid (expected sha256:"),
        ("redis@sha512:" + "a" * 128, "algorithm 'sha512' is not supported"),
        ("redis@md5:" + "a" * 32, "algorithm 'md5' is not supported"),
        ("redis@", "digest '' is not valid"),
        ("redis@" + "a" * 64, "is not valid"),
        (f"redis@{D1}@{D1}", "more than one '@'"),
        ("a" * 64, "image id"),
        (":tag", "repository name is empty"),
        ("/redis", "component '' is not valid"),
        ("redis/", "component '' is not valid"),
        ("foo//bar", "component '' is not valid"),
        ("foo/-bar", "component '-bar' is not valid"),
        ("foo/bar-", "component 'bar-' is not valid"),
        ("foo/bar..baz", "component 'bar..baz' is not valid"),
        ("foo/bar___baz", "component 'bar___baz' is not valid"),
        ("foo/bar:5000/baz", "component 'bar:5000' is not valid"),
        ("-host.io/app", "registry '-host.io' is not a valid host"),
        ("host.io:port/app", "registry 'host.io:port' is not a valid host"),
        ("::1/app", "registry '::1' is not a valid host"),
        ("a" * 256, "longer than 255"),
    ],
)
def test_invalid_reference_is_one_clear_error(written, says):
    with pytest.raises(StackError) as caught:
        parse_reference(written)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_error_quotes_the_whole_reference():
    with pytest.raises(StackError, match=r"invalid image reference 'Foo:1'"):
        parse_reference("Foo:1")


def test_docker_hub_images_are_served_by_registry_1():
    assert registry_host("docker.io") == "registry-1.docker.io"
    assert registry_host("index.docker.io") == "registry-1.docker.io"
    assert registry_host("ghcr.io") == "ghcr.io"
    assert parse_reference("redis").registry_host == "registry-1.docker.io"


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:5000",
        "LOCALHOST:5000",
        "127.0.0.1",
        "127.0.0.1:5000",
        "127.1.2.3:80",
        "::1",
        "[::1]:5000",
        "[::1]",
    ],
)
def test_loopback_registries_may_use_plain_http(host):
    assert is_insecure_allowed(host, ())


@pytest.mark.parametrize(
    ("host", "listed", "allowed"),
    [
        ("registry.lan:5000", [], False),
        ("10.0.0.5:5000", [], False),
        ("ghcr.io", [], False),
        ("registry.lan:5000", ["registry.lan:5000"], True),
        ("registry.lan:5000", ["registry.lan"], True),
        ("registry.lan", ["registry.lan:5000"], False),
        ("registry.lan:5001", ["registry.lan:5000"], False),
        ("other.lan:5000", ["registry.lan"], False),
        ("Registry.LAN:5000", ["registry.lan"], True),
        ("10.0.0.5:5000", ["10.0.0.0/8"], True),
        ("11.0.0.5:5000", ["10.0.0.0/8"], False),
        ("[fd00::5]:5000", ["fd00::/8"], True),
        ("registry.lan", ["10.0.0.0/8"], False),
        ("localhost.evil.com", [], False),
        ("127.0.0.1.nip.io", [], False),
    ],
)
def test_other_registries_use_plain_http_only_when_listed(host, listed, allowed):
    assert is_insecure_allowed(host, listed) is allowed


def test_insecure_registries_are_read_from_a_comma_list():
    value = " registry.lan:5000, http://other.lan/ ,,10.0.0.0/8 "
    assert parse_insecure_registries(value) == ("registry.lan:5000", "other.lan", "10.0.0.0/8")
    assert parse_insecure_registries(None) == ()
    assert parse_insecure_registries("") == ()
    assert is_insecure_allowed("other.lan:443", parse_insecure_registries(value))


def test_bad_cidr_in_insecure_registries_names_the_variable():
    with pytest.raises(StackError, match="STACK_INSECURE_REGISTRIES: '10.0.0.0/99'"):
        parse_insecure_registries("10.0.0.0/99")


def test_short_id_is_twelve_hex_characters():
    assert short_id(D2) == "0123456789ab"
    assert short_id("0123456789abcdef") == "0123456789ab"


@pytest.mark.parametrize(
    ("text", "prefix", "full"),
    [
        ("0123", True, False),
        ("sha256:0123", True, False),
        (D2, True, True),
        (D2[7:], True, True),
        ("redis", False, False),
        ("", False, False),
        ("sha256:", False, False),
        ("0123456789ABCDEF", False, False),
        ("a" * 65, False, False),
    ],
)
def test_id_prefixes_are_recognized(text, prefix, full):
    assert is_id_prefix(text) is prefix
    assert is_full_id(text) is full


def test_unique_id_prefix_finds_its_image():
    ids = [D1, D2, "sha256:" + "01" * 32]
    assert match_id_prefix("aaa", ids) == D1
    assert match_id_prefix("sha256:0123", ids) == D2
    assert match_id_prefix(D2, ids) == D2
    assert match_id_prefix("fff", ids) is None
    assert match_id_prefix("redis", ids) is None


def test_ambiguous_id_prefix_is_refused_and_names_the_candidates():
    ids = [D2, "sha256:" + "01" * 32]
    with pytest.raises(StackError) as caught:
        match_id_prefix("01", ids)
    message = str(caught.value)
    assert "ambiguous" in message
    assert "0123456789ab" in message and "010101010101" in message


def test_same_id_listed_twice_is_not_ambiguous():
    assert match_id_prefix("01", [D2, D2]) == D2
