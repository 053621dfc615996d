"""Moving images between the store and archives: load, save, import.

The archive module reads and writes formats and the store keeps blobs; this
is the small piece that copies one into the other. Every blob is verified as
it streams in, and an image is recorded only once all its blobs are stored,
so a bad archive leaves the store as it was (bar blobs no image names yet,
which `prune` removes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import BinaryIO

from orchestrator.spec.errors import StackError

from .archive import ArchiveImage, ExportImage, read_archive, read_rootfs_tar, write_docker_archive
from .records import ImageRecord
from .reference import normalize_reference
from .store import ImageStore

_CHUNK = 1 << 20

Source = str | os.PathLike | BinaryIO


def load_archive(store: ImageStore, source: Source) -> list[ImageRecord]:
    """Every image of the archive (file, directory or stream) added to the store."""
    return [_add(store, image) for image in read_archive(source, spool_dir=store.tmp_dir)]


def import_rootfs(store: ImageStore, source: Source, reference: str) -> ImageRecord:
    """A root filesystem tar made into a one-layer image named `reference`."""
    name = normalize_reference(reference)
    image = read_rootfs_tar(source, spool_dir=store.tmp_dir)
    return _add(store, image, [name])


def save_archive(
    store: ImageStore, names: Sequence[str], out: str | os.PathLike | BinaryIO
) -> None:
    """The named images written as one archive that `docker load` reads."""
    exports = []
    for name in names:
        record = store.image(name)
        wanted = _references_named(record, name)
        exports.append(ExportImage(
            references=wanted,
            manifest=store.read_blob(record.manifest_digest),
            config=store.read_blob(record.config_digest),
            open_blob=lambda digest: store.blob_path(digest).open("rb"),
        ))
    write_docker_archive(out, exports)


def _references_named(record: ImageRecord, name: str) -> list[str]:
    """The references to write for `name`: that one, when it is a reference, else all."""
    try:
        reference = normalize_reference(name)
    except StackError:  # an id or digest, not a name: keep every reference the image has
        return list(record.references)
    return [reference] if reference in record.references else list(record.references)


def _add(store: ImageStore, image: ArchiveImage, references: Sequence[str] = ()) -> ImageRecord:
    for layer in image.layers:
        if store.has_blob(layer.digest):
            continue
        with image.open_blob(layer.digest) as stream, store.blob_writer(layer.digest) as out:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
            out.commit()
    store.put_blob(image.config, image.config_digest)
    store.put_blob(image.manifest, image.manifest_digest)
    return store.add_image(image.manifest_digest, [*image.references, *references])
