"""`docker save` as docker 25+ writes it, so that any `docker load` takes our archives.

The archive holds both forms at once: an OCI image layout (`oci-layout`,
`index.json`, `blobs/sha256/`) that docker 25+ and other OCI tools read with
manifest digests kept, and the classic `manifest.json` + `repositories` that
older docker reads (it decompresses layer blobs itself, so they are written as
stored). Blobs stream from the caller into the tar, each checked against its
digest on the way: an archive is never made from a corrupt store.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from orchestrator.runtime.images.digests import HashingReader, sha256_digest
from orchestrator.runtime.images.manifest import OCI_INDEX, Descriptor, Manifest, parse_manifest
from orchestrator.runtime.images.reference import familiar_name, parse_reference
from orchestrator.spec.errors import StackError

CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"


def blob_name(digest: str) -> str:
    """Where a blob lives in an OCI layout."""
    return "blobs/sha256/" + digest.removeprefix("sha256:")


@dataclass(frozen=True)
class ExportImage:
    """What `write_docker_archive` needs of one image; `open_blob` serves its layers."""

    references: Sequence[str]
    manifest: bytes
    config: bytes
    open_blob: Callable[[str], BinaryIO]


def write_docker_archive(out: str | os.PathLike | BinaryIO, images: Sequence[ExportImage]) -> None:
    """Write `images` as `docker save` (docker 25+) does; a path is written atomically."""
    if not isinstance(out, str | os.PathLike):
        _write(out, images)
        return
    path = Path(out)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as stream:
            _write(stream, images)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _write(stream: BinaryIO, images: Sequence[ExportImage]) -> None:
    manifests = []
    for image in images:
        parsed = parse_manifest(image.manifest, where=f"image {', '.join(image.references)}")
        if not isinstance(parsed, Manifest):
            raise StackError(f"{parsed.digest}: an image index cannot be saved, only an image")
        manifests.append(parsed)
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "blobs/", None)
        _add(tar, "blobs/sha256/", None)
        written: set[str] = set()
        for image, manifest in zip(images, manifests, strict=True):
            for layer in manifest.layers:
                if layer.digest not in written:
                    with image.open_blob(layer.digest) as blob:
                        _add_blob(tar, layer, blob)
                    written.add(layer.digest)
            for blob_bytes in (image.config, image.manifest):
                digest = sha256_digest(blob_bytes)
                if digest not in written:
                    _add(tar, blob_name(digest), blob_bytes)
                    written.add(digest)
        index, entries, repositories = [], [], {}
        for image, manifest in zip(images, manifests, strict=True):
            descriptor = {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": len(manifest.raw),
            }
            tagged = [parse_reference(r) for r in image.references]
            tagged = [r for r in tagged if r.tag is not None and r.digest is None]
            index += [
                {**descriptor, "annotations": {CONTAINERD_NAME: str(r), OCI_REF_NAME: r.tag}}
                for r in tagged
            ] or [descriptor]
            entries.append(
                {
                    "Config": blob_name(manifest.config.digest),
                    "RepoTags": [familiar_name(r) for r in tagged] or None,
                    "Layers": [blob_name(layer.digest) for layer in manifest.layers],
                }
            )
            top = manifest.layers[-1].digest.removeprefix("sha256:") if manifest.layers else ""
            for r in tagged:
                repositories.setdefault(r.familiar_repository, {})[r.tag] = top
        oci_index = {"schemaVersion": 2, "mediaType": OCI_INDEX}
        _add(tar, "index.json", json.dumps({**oci_index, "manifests": index}).encode())
        _add(tar, "manifest.json", json.dumps(entries).encode())
        _add(tar, "repositories", json.dumps(repositories).encode())


def _add(tar: tarfile.TarFile, name: str, data: bytes | None) -> None:
    info = tarfile.TarInfo(name.rstrip("/"))
    info.mode = 0o644 if data is not None else 0o755
    if data is None:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _add_blob(tar: tarfile.TarFile, layer: Descriptor, blob: BinaryIO) -> None:
    """Stream one layer into the tar, checking its digest (the store might be corrupt)."""
    info = tarfile.TarInfo(blob_name(layer.digest))
    info.mode, info.size = 0o644, layer.size
    hashing = HashingReader(blob)
    try:
        tar.addfile(info, hashing)  # type: ignore[arg-type]
    except OSError as exc:
        raise StackError(f"layer {layer.digest}: cannot be read to save it ({exc})") from None
    if hashing.digest != layer.digest or hashing.read(1):
        raise StackError(
            f"layer {layer.digest}: its content does not match its digest; nothing usable was saved"
        )
