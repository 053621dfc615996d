"""Manifests and indexes: read and checked before anything is fetched on their word,
the right image of a multi-platform index chosen, and written back byte-stable.

The indexes below are shaped like what Docker Hub serves for official images
today (BuildKit attestations included) and like older Docker manifest lists.
"""

import json

import pytest

from orchestrator.runtime.images import manifest as m
from orchestrator.runtime.images.digests import sha256_digest
from orchestrator.runtime.images.manifest import (
    Descriptor,
    Manifest,
    ManifestIndex,
    build_index,
    build_manifest,
    layer_compression,
    parse_manifest,
    select_platform,
)
from orchestrator.runtime.images.platform import Platform
from orchestrator.spec.errors import StackError


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def encode(document: dict) -> bytes:
    return json.dumps(document, indent=3).encode()


def image_manifest(media_type=m.OCI_MANIFEST, layer_type=m.OCI_LAYER_GZIP, layers=2, **extra):
    config_type = m.DOCKER_CONFIG if media_type == m.DOCKER_MANIFEST else m.OCI_CONFIG
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": digest(1), "size": 1469},
        "layers": [
            {"mediaType": layer_type, "digest": digest(10 + i), "size": 1000 + i}
            for i in range(layers)
        ],
    }
    document.update(extra)
    return document


def entry(n, os, arch, variant=None, media_type=m.OCI_MANIFEST, annotations=None):
    platform = {"architecture": arch, "os": os}
    if variant is not None:
        platform["variant"] = variant
    found = {"mediaType": media_type, "digest": digest(n), "size": 1000 + n, "platform": platform}
    if annotations:
        found["annotations"] = annotations
    return found


def attestation(n, for_digest):
    found = entry(n, "unknown", "unknown")
    found["annotations"] = {
        "vnd.docker.reference.digest": for_digest,
        "vnd.docker.reference.type": "attestation-manifest",
    }
    return found


# Like docker.io/library/redis in 2024: OCI index with an attestation after each image.
HUB_INDEX = {
    "schemaVersion": 2,
    "mediaType": m.OCI_INDEX,
    "manifests": [
        entry(100, "linux", "amd64"),
        attestation(101, digest(100)),
        entry(102, "linux", "arm", "v5"),
        attestation(103, digest(102)),
        entry(104, "linux", "arm", "v6"),
        entry(106, "linux", "arm", "v7"),
        entry(108, "linux", "arm64", "v8"),
        attestation(109, digest(108)),
        entry(110, "linux", "386"),
        entry(112, "linux", "mips64le"),
        entry(114, "linux", "ppc64le"),
        entry(116, "linux", "s390x"),
    ],
}

# Like an older Docker manifest list: arm64 without a variant, amd64 variants.
DOCKER_LIST = {
    "schemaVersion": 2,
    "mediaType": m.DOCKER_MANIFEST_LIST,
    "manifests": [
        entry(200, "linux", "amd64", media_type=m.DOCKER_MANIFEST),
        entry(201, "linux", "amd64", "v3", media_type=m.DOCKER_MANIFEST),
        entry(202, "linux", "arm64", media_type=m.DOCKER_MANIFEST),
        entry(203, "linux", "arm", "v6", media_type=m.DOCKER_MANIFEST),
        entry(204, "windows", "amd64", media_type=m.DOCKER_MANIFEST),
    ],
}


def index(document) -> ManifestIndex:
    parsed = parse_manifest(encode(document))
    assert isinstance(parsed, ManifestIndex)
    return parsed


# --- reading ---------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [m.OCI_MANIFEST, m.DOCKER_MANIFEST])
def test_image_manifest_is_read_with_its_config_and_layers(media_type):
    layer_type = m.DOCKER_LAYER_GZIP if media_type == m.DOCKER_MANIFEST else m.OCI_LAYER_GZIP
    data = encode(image_manifest(media_type, layer_type))
    parsed = parse_manifest(data, media_type)
    assert isinstance(parsed, Manifest)
    assert parsed.media_type == media_type
    assert parsed.config.digest == digest(1)
    assert parsed.config.size == 1469
    assert [layer.digest for layer in parsed.layers] == [digest(10), digest(11)]
    assert parsed.layers[0].media_type == layer_type
    assert parsed.digest == sha256_digest(data)
    assert parsed.raw == data


def test_media_type_comes_from_the_body_when_not_served():
    parsed = parse_manifest(encode(image_manifest(m.DOCKER_MANIFEST, m.DOCKER_LAYER_GZIP)))
    assert parsed.media_type == m.DOCKER_MANIFEST


@pytest.mark.parametrize("served", ["application/json", "text/plain; charset=utf-8", None, ""])
def test_generic_content_type_says_nothing(served):
    parsed = parse_manifest(encode(image_manifest(m.DOCKER_MANIFEST, m.DOCKER_LAYER)), served)
    assert parsed.media_type == m.DOCKER_MANIFEST


def test_content_type_parameters_are_ignored():
    data = encode(image_manifest())
    assert parse_manifest(data, m.OCI_MANIFEST + "; charset=utf-8").media_type == m.OCI_MANIFEST


def test_oci_documents_without_media_type_are_told_apart_by_their_fields():
    plain = image_manifest()
    del plain["mediaType"]
    assert isinstance(parse_manifest(encode(plain)), Manifest)
    listing = dict(HUB_INDEX)
    del listing["mediaType"]
    assert isinstance(parse_manifest(encode(listing)), ManifestIndex)


def test_index_entries_keep_platform_and_annotations():
    parsed = index(HUB_INDEX)
    assert len(parsed.manifests) == 12
    assert parsed.manifests[2].platform == Platform("linux", "arm", "v5")
    assert parsed.manifests[1].annotations["vnd.docker.reference.type"] == "attestation-manifest"
    assert parsed.media_type == m.OCI_INDEX


def test_foreign_layers_keep_their_urls():
    document = image_manifest(m.DOCKER_MANIFEST, m.DOCKER_FOREIGN_LAYER_GZIP, layers=1)
    document["layers"][0]["urls"] = ["https://example.com/layer.tar.gz"]
    parsed = parse_manifest(encode(document))
    assert parsed.layers[0].urls == ("https://example.com/layer.tar.gz",)
    assert m.is_foreign_layer(parsed.layers[0].media_type)


def test_image_without_layers_is_accepted():
    assert parse_manifest(encode(image_manifest(layers=0))).layers == ()


def schema1():
    return {"schemaVersion": 1, "name": "library/redis", "tag": "latest", "fsLayers": []}


@pytest.mark.parametrize(
    ("data", "served", "says"),
    [
        (encode(schema1()), None, "schema 1 manifests are not supported"),
        (encode(schema1()), m.DOCKER_SCHEMA1_SIGNED_MANIFEST, "schema 1 manifests are not"),
        (b"not json", m.DOCKER_SCHEMA1_MANIFEST, "schema 1 manifests are not supported"),
        (encode(image_manifest()), "application/vnd.oci.artifact.manifest.v1+json", "served as"),
        (
            encode(image_manifest(mediaType="application/vnd.oci.artifact.manifest.v1+json")),
            None,
            "media type 'application/vnd.oci.artifact.manifest.v1+json' is not supported",
        ),
        (encode(image_manifest()), m.DOCKER_MANIFEST, "served as"),
        (b"{not json", None, "manifest is not valid JSON"),
        (b"\xff\xfe", None, "manifest is not valid JSON"),
        (b"[]", None, "manifest must be a JSON object"),
        (encode(image_manifest(schemaVersion=3)), None, "schemaVersion must be 2, not 3"),
        (encode(image_manifest(schemaVersion="2")), None, "schemaVersion must be 2"),
        (encode(image_manifest(schemaVersion=True)), None, "schemaVersion must be 2"),
        (encode({"mediaType": m.OCI_MANIFEST}), None, "schemaVersion must be 2, not None"),
        (encode(image_manifest(config=None)), None, "config is missing"),
        (encode(image_manifest(layers=0) | {"layers": None}), None, "layers must be a list"),
        (encode(image_manifest(mediaType=5)), None, "mediaType must be a string"),
        (encode(image_manifest(annotations={"a": 1})), None, "annotations values must be strings"),
        (encode({"schemaVersion": 2, "mediaType": m.OCI_INDEX}), None, "manifests must be a list"),
    ],
)
def test_unreadable_manifest_is_one_clear_error(data, served, says):
    with pytest.raises(StackError) as caught:
        parse_manifest(data, served)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def broken_config(**fields):
    document = image_manifest()
    document["config"] = {**document["config"], **fields}
    return encode(document)


def broken_layer(**fields):
    document = image_manifest()
    document["layers"][1] = {**document["layers"][1], **fields}
    return encode(document)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (broken_config(digest="sha256:abc"), "config.digest"),
        (broken_config(digest="../../etc/passwd"), "config.digest"),
        (broken_config(digest=None), "config.digest"),
        (broken_config(size=-1), "config.size must be a non-negative integer"),
        (broken_config(size="12"), "config.size must be a non-negative integer"),
        (broken_config(size=True), "config.size must be a non-negative integer"),
        (broken_config(size=1.5), "config.size must be a non-negative integer"),
        (broken_config(mediaType=None), "config.mediaType must be a string"),
        (
            broken_config(mediaType="application/vnd.cncf.helm.config.v1+json"),
            "not a container image config",
        ),
        (broken_layer(digest="sha256:" + "A" * 64), "layers[1].digest"),
        (broken_layer(size=None), "layers[1].size"),
        (broken_layer(mediaType="application/vnd.in-toto+json"), "layers[1] media type"),
        (broken_layer(urls="http://x"), "layers[1].urls must be a list of strings"),
        (broken_layer(annotations=[]), "layers[1].annotations must be an object"),
    ],
)
def test_bad_descriptor_is_refused_naming_the_field(data, says):
    with pytest.raises(StackError) as caught:
        parse_manifest(data)
    assert says in str(caught.value)


def test_bad_index_entry_names_its_position():
    document = json.loads(json.dumps(HUB_INDEX))
    document["manifests"][3]["platform"] = {"os": "linux"}
    with pytest.raises(StackError, match=r"manifests\[3\]\.platform\.architecture"):
        parse_manifest(encode(document))


def test_errors_name_the_manifest_by_digest_or_by_where():
    data = encode(image_manifest(schemaVersion=3))
    with pytest.raises(StackError, match=f"^manifest {sha256_digest(data)}: "):
        parse_manifest(data)
    with pytest.raises(StackError, match="^ghcr.io/a/b:1: schemaVersion"):
        parse_manifest(data, where="ghcr.io/a/b:1")


# --- layers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("media_type", "compression"),
    [
        (m.OCI_LAYER, None),
        (m.OCI_LAYER_GZIP, "gzip"),
        (m.OCI_LAYER_ZSTD, "zstd"),
        (m.OCI_NONDISTRIBUTABLE_LAYER_GZIP, "gzip"),
        (m.DOCKER_LAYER, None),
        (m.DOCKER_LAYER_GZIP, "gzip"),
        (m.DOCKER_LAYER_ZSTD, "zstd"),
        (m.DOCKER_FOREIGN_LAYER_GZIP, "gzip"),
    ],
)
def test_layer_compression_follows_the_media_type(media_type, compression):
    assert layer_compression(media_type) == compression


def test_unknown_layer_type_cannot_be_unpacked():
    with pytest.raises(StackError, match="layer media type 'application/x-rar' is not supported"):
        layer_compression("application/x-rar")


def test_accept_header_lists_every_readable_manifest_kind():
    for media_type in m.MANIFEST_TYPES | m.INDEX_TYPES:
        assert media_type in m.ACCEPT_MANIFESTS
    assert m.DOCKER_SCHEMA1_MANIFEST not in m.ACCEPT_MANIFESTS


# --- platform selection -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [
        ("linux/amd64", 100),
        ("linux/x86_64", 100),
        ("linux/amd64/v3", 100),
        ("linux/arm64", 108),
        ("linux/arm64/v8", 108),
        ("linux/aarch64", 108),
        ("linux/arm", 106),
        ("linux/arm/v7", 106),
        ("linux/armhf", 106),
        ("linux/arm/v6", 104),
        ("linux/armel", 104),
        ("linux/arm/v5", 102),
        ("linux/386", 110),
        ("linux/i386", 110),
        ("linux/s390x", 116),
        ("LINUX/PPC64LE", 114),
    ],
)
def test_hub_index_gives_the_image_for_each_platform(wanted, chosen):
    assert select_platform(index(HUB_INDEX), wanted).digest == digest(chosen)


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [
        ("linux/amd64", 200),  # the baseline build, not the v3-only one
        ("linux/amd64/v2", 200),
        ("linux/amd64/v3", 201),
        ("linux/amd64/v4", 201),
        ("linux/arm64", 202),  # no variant written means v8
        ("linux/arm64/v8", 202),
        ("linux/arm/v7", 203),  # a v6 image runs on v7
        ("linux/arm/v8", 203),
        ("windows/amd64", 204),
    ],
)
def test_docker_list_picks_the_best_variant_that_runs(wanted, chosen):
    assert select_platform(index(DOCKER_LIST), wanted).digest == digest(chosen)


def test_default_platform_is_linux_amd64():
    assert select_platform(index(DOCKER_LIST)).digest == digest(200)


def test_platform_may_be_given_parsed():
    assert select_platform(index(HUB_INDEX), Platform("linux", "arm64")).digest == digest(108)


def test_amd64_with_only_a_variant_entry_is_still_found():
    listing = {"schemaVersion": 2, "manifests": [entry(1, "linux", "amd64", "v2")]}
    assert select_platform(index(listing), "linux/amd64").digest == digest(1)


def test_newer_variant_never_runs_on_an_older_one():
    listing = {"schemaVersion": 2, "manifests": [entry(1, "linux", "arm", "v7")]}
    with pytest.raises(StackError, match="no image for platform linux/arm/v6"):
        select_platform(index(listing), "linux/arm/v6")


def test_missing_platform_error_lists_what_is_available():
    with pytest.raises(StackError) as caught:
        select_platform(index(HUB_INDEX), "linux/riscv64", where="docker.io/library/redis:7")
    message = str(caught.value)
    assert message.startswith("docker.io/library/redis:7: no image for platform linux/riscv64")
    assert (
        "available: linux/amd64, linux/arm/v5, linux/arm/v6, linux/arm/v7, linux/arm64/v8, "
        "linux/386, linux/mips64le, linux/ppc64le, linux/s390x" in message
    )
    assert "unknown" not in message


def test_attestations_are_never_chosen():
    only_attestations = {
        "schemaVersion": 2,
        "mediaType": m.OCI_INDEX,
        "manifests": [attestation(1, digest(9))],
    }
    with pytest.raises(StackError, match="available: none"):
        select_platform(index(only_attestations), "linux/amd64")


def test_attestation_annotation_alone_excludes_an_entry():
    listing = {
        "schemaVersion": 2,
        "manifests": [
            entry(
                1,
                "linux",
                "amd64",
                annotations={"vnd.docker.reference.type": "attestation-manifest"},
            ),
            entry(2, "linux", "amd64"),
        ],
    }
    assert select_platform(index(listing)).digest == digest(2)


def test_nested_index_and_artifact_entries_are_skipped():
    listing = {
        "schemaVersion": 2,
        "manifests": [
            entry(1, "linux", "amd64", media_type=m.OCI_INDEX),
            entry(2, "linux", "amd64", media_type="application/vnd.cncf.helm.chart"),
            entry(3, "linux", "amd64"),
        ],
    }
    assert select_platform(index(listing)).digest == digest(3)


def test_single_manifest_without_platform_is_chosen():
    listing = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": m.OCI_MANIFEST, "digest": digest(5), "size": 10}],
    }
    assert select_platform(index(listing), "linux/arm64").digest == digest(5)


def test_several_manifests_without_platform_cannot_be_chosen_between():
    listing = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": m.OCI_MANIFEST, "digest": digest(5), "size": 10},
            {"mediaType": m.OCI_MANIFEST, "digest": digest(6), "size": 10},
        ],
    }
    with pytest.raises(StackError, match="no image for platform linux/amd64; available: none"):
        select_platform(index(listing))


def test_first_entry_wins_between_equal_platforms():
    listing = {
        "schemaVersion": 2,
        "manifests": [entry(1, "linux", "arm64", "v8"), entry(2, "linux", "arm64")],
    }
    assert select_platform(index(listing), "linux/arm64").digest == digest(1)


def test_bad_platform_text_is_refused():
    with pytest.raises(StackError, match="platform 'linux' is not valid"):
        select_platform(index(HUB_INDEX), "linux")


# --- writing ----------------------------------------------------------------------------------


def layers(media_type=m.OCI_LAYER_GZIP):
    return [Descriptor(media_type, digest(10), 1000), Descriptor(media_type, digest(11), 1001)]


def test_built_oci_manifest_reads_back_the_same():
    data = build_manifest(digest(1), 1469, layers())
    parsed = parse_manifest(data, m.OCI_MANIFEST)
    assert parsed.media_type == m.OCI_MANIFEST
    assert parsed.config == Descriptor(m.OCI_CONFIG, digest(1), 1469)
    assert list(parsed.layers) == layers()


def test_built_docker_manifest_uses_docker_type_names_for_the_same_blobs():
    data = build_manifest(digest(1), 1469, layers(), media_type=m.DOCKER_MANIFEST)
    parsed = parse_manifest(data, m.DOCKER_MANIFEST)
    assert parsed.config.media_type == m.DOCKER_CONFIG
    assert {layer.media_type for layer in parsed.layers} == {m.DOCKER_LAYER_GZIP}
    assert [layer.digest for layer in parsed.layers] == [digest(10), digest(11)]


def test_oci_manifest_renames_docker_layer_types():
    data = build_manifest(digest(1), 1, layers(m.DOCKER_LAYER), media_type=m.OCI_MANIFEST)
    assert {layer.media_type for layer in parse_manifest(data).layers} == {m.OCI_LAYER}


def test_built_manifest_is_canonical_json():
    data = build_manifest(digest(1), 1469, layers(), annotations={"b": "2", "a": "1"})
    assert b" " not in data and b"\n" not in data
    assert data == m.canonical_json(json.loads(data))
    assert data == build_manifest(digest(1), 1469, layers(), annotations={"a": "1", "b": "2"})


def test_build_manifest_refuses_a_bad_config_digest():
    with pytest.raises(StackError):
        build_manifest("sha256:nope", 1, [])


def test_built_index_reads_back_with_its_platforms():
    entries = [
        Descriptor(m.OCI_MANIFEST, digest(1), 500, Platform("linux", "amd64")),
        Descriptor(m.OCI_MANIFEST, digest(2), 501, Platform("linux", "arm64", "v8")),
    ]
    data = build_index(entries, annotations={"org.opencontainers.image.ref.name": "1.0"})
    parsed = parse_manifest(data)
    assert isinstance(parsed, ManifestIndex)
    assert list(parsed.manifests) == entries
    assert select_platform(parsed, "linux/arm64").digest == digest(2)


def test_descriptor_json_leaves_out_empty_fields():
    assert Descriptor(m.OCI_LAYER, digest(1), 3).to_json() == {
        "mediaType": m.OCI_LAYER,
        "digest": digest(1),
        "size": 3,
    }
