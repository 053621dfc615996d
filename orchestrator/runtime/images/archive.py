"""Image archives as people have them: `docker save` tars and OCI image layouts.

`read_archive` takes a file, a directory or a stream and returns the images in
it, whatever the format: the classic docker archive (`manifest.json`,
`<id>/layer.tar`), the docker 25+ variant (an OCI layout plus `manifest.json`),
or an OCI image layout as a directory or tar. Nothing is extracted: blobs are
read in place and verified against their digest as they stream, so a 2 GB
layer never sits in memory and a tampered one is caught before the store keeps
it. When an archive has an OCI `index.json` we read the manifests it holds, so
manifest digests survive a save/load round trip; a classic archive has none,
so one is written from its config and layer tars, the same way every time.

`write_docker_archive` writes what docker 25 writes (OCI layout files and the
classic `manifest.json`/`repositories`), which old and new `docker load` accept.
`read_rootfs_tar` turns a plain filesystem tar into a one-layer image.

This module knows nothing of the store: the caller copies `open_blob` streams
into it. That keeps every format decision here testable without root.
"""

from __future__ import annotations

import io
import json
import os
import platform as host
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.runtime.images.archive_members import (
    CHUNK,
    Members,
    Source,
    TarMembers,
    open_members,
    open_verified,
)
from orchestrator.runtime.images.archive_save import (
    CONTAINERD_NAME,
    OCI_REF_NAME,
    ExportImage,
    blob_name,
    write_docker_archive,
)
from orchestrator.runtime.images.digests import HashingReader, sha256_digest, validate_digest
from orchestrator.runtime.images.manifest import (
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_ZSTD,
    DOCKER_MANIFEST,
    Descriptor,
    Manifest,
    ManifestIndex,
    build_manifest,
    canonical_json,
    parse_manifest,
)
from orchestrator.runtime.images.platform import Platform, normalize_platform, platform_rank
from orchestrator.runtime.images.reference import (
    normalize_reference,
)
from orchestrator.spec.errors import StackError

_MAGIC_TYPES = {b"\x1f\x8b": DOCKER_LAYER_GZIP, b"\x28\xb5\x2f\xfd": DOCKER_LAYER_ZSTD}


@dataclass(frozen=True)
class LayerBlob:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, eq=False)
class ArchiveImage:
    """One image found in an archive; `open_blob` streams any of its blobs, verified.

    The archive stays open as long as an image from it is referenced.
    """

    references: tuple[str, ...]  # normalized: docker.io/library/busybox:latest
    manifest: bytes
    media_type: str
    config: bytes
    layers: tuple[LayerBlob, ...]
    _open: Callable[[str], BinaryIO] = field(repr=False)

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config)

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob as a stream; reading it to its end raises StackError if it was tampered."""
        if digest == self.manifest_digest:
            return io.BytesIO(self.manifest)
        if digest == self.config_digest:
            return io.BytesIO(self.config)
        try:
            return self._open(digest)
        except KeyError:
            raise StackError(f"blob {digest} is not part of this image") from None


def host_platform() -> Platform:
    return normalize_platform(Platform("linux", host.machine()))


def read_archive(
    source: Source,
    *,
    spool_dir: str | os.PathLike | None = None,
    platform: Platform | None = None,
) -> list[ArchiveImage]:
    """Every image in a docker archive or OCI layout (a path, a directory or a binary stream).

    A stream that cannot seek (stdin, a pipe) and a compressed archive are first
    copied to a temporary file in `spool_dir` (use the store's tmp/ for big ones).
    From a multi-platform index the image for `platform` (default: this host) is taken.
    """
    members = open_members(source, spool_dir)
    try:
        if members.has("index.json"):
            images = _read_layout(members, platform or host_platform())
        elif members.has("manifest.json"):
            images = _read_classic(members)
        else:
            raise StackError(
                f"{members.label}: not an image archive: it has neither manifest.json "
                "(docker save) nor index.json (OCI image layout)"
            )
        if not images:
            raise StackError(f"{members.label}: the archive holds no image")
    except BaseException:
        members.close()
        raise
    return images


def _read_blob(members: Members, descriptor: Descriptor, what: str) -> bytes:
    name = _check_blob(members, descriptor, what)
    data = members.read(name)
    if sha256_digest(data) != descriptor.digest:
        raise members.error(name, f"{what} does not match its digest {descriptor.digest}")
    return data


def _check_blob(members: Members, descriptor: Descriptor, what: str) -> str:
    name = blob_name(descriptor.digest)
    if not members.has(name):
        raise members.error(name, f"{what} {descriptor.digest} is missing from the archive")
    if members.size(name) != descriptor.size:
        raise members.error(
            name, f"{what} is {members.size(name)} bytes but its descriptor says {descriptor.size}"
        )
    return name


def _normalized(members: Members, where: str, names: Sequence[str]) -> list[str]:
    found = []
    for name in names:
        try:
            reference = normalize_reference(name)
        except StackError as exc:
            raise members.error(where, str(exc)) from None
        if "@" not in reference and reference not in found:
            found.append(reference)
    return found


def _annotated_names(annotations: Mapping[str, str]) -> list[str]:
    """The name an index entry gives its image: containerd's, else a full `ref.name`."""
    if CONTAINERD_NAME in annotations:
        return [annotations[CONTAINERD_NAME]]
    ref_name = annotations.get(OCI_REF_NAME, "")
    # A bare tag ("latest") names no repository: such an image loads untagged.
    return [ref_name] if "/" in ref_name or ":" in ref_name else []


def _select(members: Members, index: ManifestIndex, wanted: Platform, where: str) -> Descriptor:
    """The entry of a multi-platform index that runs on `wanted` and is in the archive."""
    ranked = [
        (rank, i, entry)
        for i, entry in enumerate(index.manifests)
        if entry.platform is not None
        and (rank := platform_rank(entry.platform, wanted)) is not None
        and members.has(blob_name(entry.digest))
    ]
    if not ranked:
        have = ", ".join(str(e.platform) for e in index.manifests if e.platform) or "none"
        raise members.error(where, f"no image for {wanted} in this index (it has: {have})")
    return min(ranked)[2]


def _load_manifest(
    members: Members, descriptor: Descriptor, wanted: Platform, where: str, depth: int = 0
) -> Manifest:
    data = _read_blob(members, descriptor, "manifest")
    parsed = parse_manifest(data, descriptor.media_type, where=f"{members.label}: {where}")
    if isinstance(parsed, Manifest):
        return parsed
    if depth > 2:
        raise members.error(where, "image indexes are nested too deeply")
    chosen = _select(members, parsed, wanted, where)
    return _load_manifest(members, chosen, wanted, f"{where} ({chosen.platform})", depth + 1)


def _read_layout(members: Members, wanted: Platform) -> list[ArchiveImage]:
    """An OCI image layout, or docker 25's archive (the same plus manifest.json)."""
    index = parse_manifest(members.read("index.json"), where=f"{members.label}: index.json")
    if not isinstance(index, ManifestIndex):
        raise members.error("index.json", "is an image manifest, not an image index")
    classic_tags = _classic_tags(members) if members.has("manifest.json") else {}
    found: dict[str, tuple[Manifest, list[str]]] = {}
    for i, entry in enumerate(index.manifests):
        where = f"index.json manifests[{i}]"
        manifest = _load_manifest(members, entry, wanted, where)
        names = found.setdefault(manifest.digest, (manifest, []))[1]
        names += _normalized(members, where, _annotated_names(entry.annotations))
    configs = [manifest.config.digest for manifest, _ in found.values()]
    images = []
    for manifest, names in found.values():
        config = _read_blob(members, manifest.config, "config")
        if not names and configs.count(manifest.config.digest) == 1:
            # manifest.json names images by config: only unambiguous when one manifest has it.
            tags = classic_tags.get(manifest.config.digest, [])
            names += _normalized(members, "manifest.json", tags)
        layer_names = {
            layer.digest: _check_blob(members, layer, "layer") for layer in manifest.layers
        }

        def open_layer(digest: str, layer_names: dict[str, str] = layer_names) -> BinaryIO:
            return open_verified(members, layer_names[digest], digest, "layer")

        images.append(
            ArchiveImage(
                tuple(dict.fromkeys(names)),
                manifest.raw,
                manifest.media_type,
                config,
                tuple(LayerBlob(x.digest, x.media_type, x.size) for x in manifest.layers),
                open_layer,
            )
        )
    return images


def _classic_entries(members: Members) -> list[dict[str, Any]]:
    entries = members.read_json("manifest.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise members.error("manifest.json", "must be a list of images")
    for i, entry in enumerate(entries):
        layers, tags = entry.get("Layers"), entry.get("RepoTags") or []
        if not isinstance(entry.get("Config"), str):
            raise members.error("manifest.json", f"[{i}].Config must name the config file")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise members.error("manifest.json", f"[{i}].Layers must be a list of file names")
        if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
            raise members.error("manifest.json", f"[{i}].RepoTags must be a list of names")
    return entries


def _classic_tags(members: Members) -> dict[str, list[str]]:
    """Config digest -> RepoTags from a docker archive's manifest.json."""
    tags: dict[str, list[str]] = {}
    for entry in _classic_entries(members):
        config = _member(members, entry["Config"], "manifest.json Config")
        tags.setdefault(sha256_digest(members.read(config)), []).extend(entry.get("RepoTags") or [])
    return tags


def _member(members: Members, name: str, named_by: str) -> str:
    clean = "/".join(p for p in name.split("/") if p not in ("", "."))
    if name.startswith("/") or ".." in clean.split("/"):
        raise members.error(name, f"{named_by} points outside the archive")
    if not members.has(clean):
        raise members.error(name, f"missing from the archive (named by {named_by})")
    return clean


def _read_classic(members: Members) -> list[ArchiveImage]:
    """`docker save` before docker 25: a manifest is written for each image, deterministically."""
    images = []
    for i, entry in enumerate(_classic_entries(members)):
        where = f"manifest.json[{i}]"
        config_name = _member(members, entry["Config"], f"{where}.Config")
        config = members.read(config_name)
        config_digest = sha256_digest(config)
        stem = Path(config_name).name.removesuffix(".json")
        if len(stem) == 64 and f"sha256:{stem}" != config_digest:
            raise members.error(config_name, f"config does not match its digest sha256:{stem}")
        diff_ids = _diff_ids(members, config_name, config)
        if len(diff_ids) != len(entry["Layers"]):
            raise members.error(
                config_name,
                f"config lists {len(diff_ids)} layers but {where} has {len(entry['Layers'])}",
            )
        files: dict[str, tuple[str, str]] = {}  # digest -> (member, what it is checked against)
        layers = []
        for j, (layer_name, diff_id) in enumerate(zip(entry["Layers"], diff_ids, strict=True)):
            name = _member(members, layer_name, f"{where}.Layers[{j}]")
            with members.open(name) as stream:
                head = stream.read(4)
            media_type = _MAGIC_TYPES.get(head[:2], _MAGIC_TYPES.get(head, DOCKER_LAYER))
            if media_type == DOCKER_LAYER:
                # A plain layer is its own diff id: trust it now, verify it as it streams.
                digest, what = diff_id, "layer (its config's diff id)"
            else:
                with members.open(name) as stream:
                    hashing = HashingReader(stream)
                    hashing.drain(CHUNK)
                digest, what = hashing.digest, "layer"
            files[digest] = (name, what)
            layers.append(LayerBlob(digest, media_type, members.size(name)))
        manifest = build_manifest(
            config_digest,
            len(config),
            [Descriptor(x.media_type, x.digest, x.size) for x in layers],
            DOCKER_MANIFEST,
        )

        def open_layer(digest: str, files: dict[str, tuple[str, str]] = files) -> BinaryIO:
            name, what = files[digest]
            return open_verified(members, name, digest, what)

        tags = _normalized(members, f"{where}.RepoTags", entry.get("RepoTags") or [])
        images.append(
            ArchiveImage(tuple(tags), manifest, DOCKER_MANIFEST, config, tuple(layers), open_layer)
        )
    return images


def _diff_ids(members: Members, name: str, config: bytes) -> list[str]:
    try:
        document = json.loads(config)
        diff_ids = document["rootfs"]["diff_ids"]
        assert isinstance(diff_ids, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise members.error(name, "is not an image config with rootfs.diff_ids") from None
    try:
        return [validate_digest(d, "diff id") for d in diff_ids]
    except StackError as exc:
        raise members.error(name, f"rootfs.diff_ids: {exc}") from None


# --- import: a filesystem tar as a one-layer image -----------------------------------------


def read_rootfs_tar(
    source: Source,
    *,
    spool_dir: str | os.PathLike | None = None,
    container_config: Mapping[str, Any] | None = None,
    created: datetime | None = None,
) -> ArchiveImage:
    """`docker import`: a root filesystem tar (plain, gzip or zstd) as a one-layer image.

    The layer is stored uncompressed, as docker does; `container_config` is the
    image's runtime config (Env, Cmd, WorkingDir... as `--change` would set).
    """
    members = open_members(source, spool_dir)
    if not isinstance(members, TarMembers):
        raise StackError(f"{members.label}: is a directory; import takes a tar of a filesystem")
    with members.open_all() as stream:
        hashing = HashingReader(stream)
        hashing.drain(CHUNK)
    diff_id, size = hashing.digest, hashing.size
    when = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    config = canonical_json(
        {
            "architecture": host_platform().architecture,
            "os": "linux",
            "created": when,
            "config": dict(container_config or {}),
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": when, "comment": f"Imported from {members.label}"}],
        }
    )
    layer = LayerBlob(diff_id, DOCKER_LAYER, size)
    manifest = build_manifest(
        sha256_digest(config), len(config), [Descriptor(DOCKER_LAYER, diff_id, size)],
        DOCKER_MANIFEST,
    )

    def open_layer(digest: str) -> BinaryIO:
        if digest != diff_id:
            raise KeyError(digest)
        return members.open_all()

    return ArchiveImage((), manifest, DOCKER_MANIFEST, config, (layer,), open_layer)


__all__ = [
    "ArchiveImage",
    "ExportImage",
    "LayerBlob",
    "read_archive",
    "read_rootfs_tar",
    "write_docker_archive",
]
