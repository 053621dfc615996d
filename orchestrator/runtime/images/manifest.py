"""Image manifests, indexes and configs: read, validated, chosen and written.

Registries, `docker save` archives and OCI layouts all hand us the same few
JSON documents (Docker schema 2 or OCI). Everything here is pure, so the
registry client, the archive loader and the store share one reading of them
and one set of error lines, and it is all tested without a network.

A document is checked before anything is fetched on its word: schemaVersion
2, every digest well formed, every size a non-negative integer. Anything we
could not run (schema 1, artifacts, unknown layer types) is refused here, in
one line that says so, rather than half-way through a pull.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from orchestrator.runtime.images.digests import sha256_digest, validate_digest
from orchestrator.runtime.images.platform import (
    DEFAULT_PLATFORM,
    Platform,
    parse_platform,
    platform_rank,
)
from orchestrator.spec.errors import StackError

# --- media types ------------------------------------------------------------------

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDISTRIBUTABLE_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDISTRIBUTABLE_LAYER_GZIP = OCI_NONDISTRIBUTABLE_LAYER + "+gzip"
OCI_NONDISTRIBUTABLE_LAYER_ZSTD = OCI_NONDISTRIBUTABLE_LAYER + "+zstd"

MANIFEST_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
CONFIG_TYPES = frozenset({DOCKER_CONFIG, OCI_CONFIG})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST})

ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
"""The registry `Accept` header: every manifest kind we can read, and only those."""

LAYER_COMPRESSION: Mapping[str, str | None] = MappingProxyType(
    {
        OCI_LAYER: None,
        OCI_LAYER_GZIP: "gzip",
        OCI_LAYER_ZSTD: "zstd",
        OCI_NONDISTRIBUTABLE_LAYER: None,
        OCI_NONDISTRIBUTABLE_LAYER_GZIP: "gzip",
        OCI_NONDISTRIBUTABLE_LAYER_ZSTD: "zstd",
        DOCKER_LAYER: None,
        DOCKER_LAYER_GZIP: "gzip",
        DOCKER_LAYER_ZSTD: "zstd",
        DOCKER_FOREIGN_LAYER: None,
        DOCKER_FOREIGN_LAYER_GZIP: "gzip",
    }
)
"""Every layer media type we can unpack, and the compression of its blob."""

FOREIGN_LAYER_TYPES = frozenset(
    {
        OCI_NONDISTRIBUTABLE_LAYER,
        OCI_NONDISTRIBUTABLE_LAYER_GZIP,
        OCI_NONDISTRIBUTABLE_LAYER_ZSTD,
        DOCKER_FOREIGN_LAYER,
        DOCKER_FOREIGN_LAYER_GZIP,
    }
)
"""Layers a registry may not serve (fetched from the descriptor's `urls`) nor take on push."""

# The same bytes under the other family's name, for writing a manifest of one family.
_TO_DOCKER = {
    OCI_LAYER: DOCKER_LAYER,
    OCI_LAYER_GZIP: DOCKER_LAYER_GZIP,
    OCI_LAYER_ZSTD: DOCKER_LAYER_ZSTD,
    OCI_NONDISTRIBUTABLE_LAYER: DOCKER_FOREIGN_LAYER,
    OCI_NONDISTRIBUTABLE_LAYER_GZIP: DOCKER_FOREIGN_LAYER_GZIP,
}
_TO_OCI = {docker: oci for oci, docker in _TO_DOCKER.items()}
# Content types a server may send that say nothing about the manifest kind.
_GENERIC_TYPES = frozenset({"", "application/json", "text/plain", "application/octet-stream"})

_EMPTY: Mapping[str, str] = MappingProxyType({})
_SCHEMA1_UNSUPPORTED = (
    "Docker schema 1 manifests are not supported "
    "(push the image again with a current Docker, which writes schema 2)"
)


def layer_compression(media_type: str) -> str | None:
    """`gzip`, `zstd` or None (plain tar) for a layer; StackError for a type we cannot unpack."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise StackError(f"layer media type {media_type!r} is not supported") from None


def is_foreign_layer(media_type: str) -> bool:
    return media_type in FOREIGN_LAYER_TYPES


def layer_media_type_for(manifest_type: str, layer_type: str) -> str:
    """`layer_type` renamed for a manifest of `manifest_type`; the blob is the same."""
    table = _TO_DOCKER if manifest_type == DOCKER_MANIFEST else _TO_OCI
    return table.get(layer_type, layer_type)


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same document always gets the same digest."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- documents ------------------------------------------------------------------------


class Descriptor(NamedTuple):
    """A pointer to a blob: what it is, its digest and size, and (in an index) its platform."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = _EMPTY
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            document["urls"] = list(self.urls)
        if self.annotations:
            document["annotations"] = dict(self.annotations)
        if self.platform is not None:
            document["platform"] = self.platform.to_json()
        return document


@dataclass(frozen=True)
class Manifest:
    """One image: its config blob and its layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    digest: str
    raw: bytes = field(repr=False)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class ManifestIndex:
    """A multi-platform image (Docker manifest list or OCI index)."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    digest: str
    raw: bytes = field(repr=False)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


class JsonFields:
    """Field checks that all name the document they are reading."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, message: str) -> StackError:
        return StackError(f"{self.where}: {message}")

    def string(self, value: Any, key: str, *, optional: bool = False) -> str:
        if value is None and optional:
            return ""
        if not isinstance(value, str):
            raise self.error(f"{key} must be a string")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{key} must be a list of strings")
        return tuple(value)

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(f"{key} must be an object")
        return value

    def annotations(self, value: Any, key: str) -> Mapping[str, str]:
        found = self.mapping(value, key)
        if not all(isinstance(v, str) for v in found.values()):
            raise self.error(f"{key} values must be strings")
        return MappingProxyType(dict(found)) if found else _EMPTY

    def integer(self, value: Any, key: str) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{key} must be an integer")
        return value

    def descriptor(self, value: Any, key: str) -> Descriptor:
        found = self.mapping(value, key)
        if not found:
            raise self.error(f"{key} is missing")
        media_type = self.string(found.get("mediaType"), f"{key}.mediaType")
        digest = validate_digest(found.get("digest"), f"{self.where}: {key}.digest")
        size = found.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise self.error(f"{key}.size must be a non-negative integer")
        platform = None
        if found.get("platform") is not None:
            platform = self.platform(found["platform"], f"{key}.platform")
        return Descriptor(
            media_type,
            digest,
            size,
            platform,
            self.annotations(found.get("annotations"), f"{key}.annotations"),
            self.strings(found.get("urls"), f"{key}.urls"),
        )

    def platform(self, value: Any, key: str) -> Platform:
        found = self.mapping(value, key)
        return Platform(
            self.string(found.get("os"), f"{key}.os"),
            self.string(found.get("architecture"), f"{key}.architecture"),
            self.string(found.get("variant"), f"{key}.variant", optional=True),
            self.string(found.get("os.version"), f"{key}.os.version", optional=True),
            self.strings(found.get("os.features"), f"{key}.os.features"),
        )


def _content_type(media_type: str | None) -> str | None:
    """`application/json; charset=utf-8` -> None: only a real manifest type tells us anything."""
    if media_type is None:
        return None
    bare = media_type.split(";", 1)[0].strip().lower()
    return None if bare in _GENERIC_TYPES else bare


def load_object(data: bytes, reader: JsonFields, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise reader.error(f"{what} is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise reader.error(f"{what} must be a JSON object")
    return document


def parse_manifest(
    data: bytes, media_type: str | None = None, *, where: str = ""
) -> Manifest | ManifestIndex:
    """Read a manifest or index; `media_type` is the Content-Type it came with, if any.

    `where` names it in errors (a reference or file); by default, its digest.
    """
    digest = sha256_digest(data)
    reader = JsonFields(where or f"manifest {digest}")
    header_type = _content_type(media_type)
    if header_type in SCHEMA1_TYPES:
        raise reader.error(_SCHEMA1_UNSUPPORTED)
    document = load_object(data, reader, "manifest")
    version = document.get("schemaVersion")
    if version == 1 and type(version) is int:
        raise reader.error(_SCHEMA1_UNSUPPORTED)
    if type(version) is not int or version != 2:
        raise reader.error(f"schemaVersion must be 2, not {version!r}")
    body_type = _content_type(reader.string(document.get("mediaType"), "mediaType", optional=True))
    if header_type and body_type and header_type != body_type:
        raise reader.error(f"served as {header_type} but its mediaType says {body_type}")
    kind = header_type or body_type
    if kind is None:
        # OCI lets mediaType be left out; the fields tell an index from a manifest.
        kind = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    annotations = reader.annotations(document.get("annotations"), "annotations")
    if kind in INDEX_TYPES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise reader.error("manifests must be a list")
        manifests = tuple(reader.descriptor(e, f"manifests[{i}]") for i, e in enumerate(entries))
        return ManifestIndex(kind, manifests, digest, data, annotations)
    if kind not in MANIFEST_TYPES:
        raise reader.error(
            f"manifest media type {kind!r} is not supported "
            "(supported: Docker schema 2 and OCI image manifests and indexes)"
        )
    config = reader.descriptor(document.get("config"), "config")
    if config.media_type not in CONFIG_TYPES:
        raise reader.error(
            f"config media type {config.media_type!r} is not a container image "
            "config (this is an artifact, not an image)"
        )
    entries = document.get("layers")
    if not isinstance(entries, list):
        raise reader.error("layers must be a list")
    layers = tuple(reader.descriptor(e, f"layers[{i}]") for i, e in enumerate(entries))
    for i, layer in enumerate(layers):
        if layer.media_type not in LAYER_COMPRESSION:
            raise reader.error(f"layers[{i}] media type {layer.media_type!r} is not supported")
    return Manifest(kind, config, layers, digest, data, annotations)


# --- platform selection ---------------------------------------------------------------

ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
"""BuildKit marks provenance/SBOM manifests in an index with this annotation."""


def _is_runnable_entry(entry: Descriptor) -> bool:
    """An image manifest for a real platform, not an attestation or a nested artifact."""
    if entry.media_type not in MANIFEST_TYPES:
        return False
    if entry.annotations.get(ATTESTATION_ANNOTATION) == "attestation-manifest":
        return False
    return entry.platform is None or "unknown" not in (
        entry.platform.os,
        entry.platform.architecture,
    )


def select_platform(
    index: ManifestIndex, platform: Platform | str = DEFAULT_PLATFORM, *, where: str = ""
) -> Descriptor:
    """The manifest of `index` to run on `platform`: the best-suited variant, first on ties.

    An index with one image manifest and no platforms at all (some OCI layouts
    are written that way) has nothing to choose between, so that one is it.
    """
    wanted = parse_platform(platform) if isinstance(platform, str) else platform
    runnable = [entry for entry in index.manifests if _is_runnable_entry(entry)]
    if len(runnable) == 1 and runnable[0].platform is None:
        return runnable[0]
    best: Descriptor | None = None
    best_rank = 0
    for entry in runnable:
        if entry.platform is None:
            continue
        rank = platform_rank(entry.platform, wanted)
        if rank is not None and (best is None or rank < best_rank):
            best, best_rank = entry, rank
    if best is not None:
        return best
    available = list(dict.fromkeys(str(e.platform) for e in runnable if e.platform is not None))
    raise StackError(
        f"{where or 'image index ' + index.digest}: no image for platform {wanted}; "
        f"available: {', '.join(available) or 'none'}"
        + (" (choose one with `platform:`)" if available else "")
    )


# --- writing ----------------------------------------------------------------------------


def build_manifest(
    config_digest: str,
    config_size: int,
    layers: Iterable[Descriptor],
    media_type: str = OCI_MANIFEST,
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """An image manifest of `media_type` (OCI or Docker schema 2) as canonical JSON.

    Layer media types are renamed to the manifest's family: the blobs are the
    same bytes, and a Docker manifest with OCI layer types confuses old clients.
    """
    if media_type not in MANIFEST_TYPES:
        raise ValueError(f"not an image manifest media type: {media_type}")
    config_type = DOCKER_CONFIG if media_type == DOCKER_MANIFEST else OCI_CONFIG
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": Descriptor(
            config_type, validate_digest(config_digest, "config digest"), config_size
        ).to_json(),
        "layers": [
            layer._replace(media_type=layer_media_type_for(media_type, layer.media_type)).to_json()
            for layer in layers
        ],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return canonical_json(document)


def build_index(
    manifests: Iterable[Descriptor],
    media_type: str = OCI_INDEX,
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """An OCI index or Docker manifest list of `manifests`, as canonical JSON."""
    if media_type not in INDEX_TYPES:
        raise ValueError(f"not an index media type: {media_type}")
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [m.to_json() for m in manifests],
    }
    if annotations:
        document["annotations"] = dict(annotations)
    return canonical_json(document)
