"""Real container images for tests, built here from Debian's `busybox-static`.

No registry is reachable on the build machines, so every test that needs an
image makes one: a `FROM scratch` rootfs holding `/bin/busybox` and its applet
links, optionally with later layers that add, change, white out and opaque
files. Images come back as `BuiltImage` (blobs in memory) and are written in
the formats people actually have: `docker save` archives (classic and the OCI
variant docker 25+ writes), OCI image layouts (directory or tar).

This module is deliberately independent of `orchestrator.runtime.images`: it is
the oracle the runtime's readers are checked against, so it writes the formats
from their specifications with nothing but `tarfile`, `gzip` and `json`.
Everything is deterministic (fixed mtimes, gzip without timestamps, fixed JSON
order) so digests are stable from run to run.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import platform
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000  # a fixed instant, so layer tars hash the same every run
CREATED = "2023-11-14T22:13:20Z"  # the same instant, for configs and history

APPLETS = (
    "[", "ash", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dd", "df",
    "dirname", "du", "echo", "env", "false", "find", "free", "grep", "gunzip", "gzip", "head",
    "hexdump", "hostname", "httpd", "id", "ifconfig", "ip", "kill", "ln", "ls", "md5sum",
    "mkdir", "mount", "mv", "nc", "nproc", "nslookup", "od", "ping", "printf", "ps", "pwd",
    "readlink", "realpath", "rm", "rmdir", "sed", "seq", "setsid", "sh", "sha256sum", "sleep",
    "sort", "stat", "sync", "tail", "tar", "tee", "test", "timeout", "top", "touch", "tr",
    "true", "umount", "uname", "uniq", "usleep", "vi", "wc", "wget", "which", "whoami",
    "xargs", "yes", "zcat",
)  # fmt: skip

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnobody:x:65534:\n"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = {
    "oci": {
        "plain": "application/vnd.oci.image.layer.v1.tar",
        "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
        "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    },
    "docker": {
        "plain": "application/vnd.docker.image.rootfs.diff.tar",
        "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",  # docker has no zstd type
    },
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_architecture() -> str:
    """The OCI name of this machine's architecture, so images run here."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


# --- layer tars ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar, built by the helpers below."""

    info: tarfile.TarInfo
    data: bytes = b""


def _info(name: str, kind: bytes, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = MTIME
    return info


def file(name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    info = _info(name, tarfile.REGTYPE, mode, uid, gid)
    info.size = len(data)
    return Entry(info, data)


def directory(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_info(name, tarfile.DIRTYPE, mode, uid, gid))


def symlink(name: str, target: str) -> Entry:
    info = _info(name, tarfile.SYMTYPE, 0o777, 0, 0)
    info.linkname = target
    return Entry(info)


def hardlink(name: str, target: str) -> Entry:
    info = _info(name, tarfile.LNKTYPE, 0o644, 0, 0)
    info.linkname = target
    return Entry(info)


def whiteout(path: str) -> Entry:
    """Deletes `path` from the layers below (OCI `.wh.` marker)."""
    parent, _, name = path.rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", b"")


def opaque(directory_path: str) -> Entry:
    """Hides everything the layers below put in `directory_path`."""
    return file(f"{directory_path.rstrip('/')}/.wh..wh..opq", b"")


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """An uncompressed layer tar holding `entries` in order (PAX, like docker's)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            tar.addfile(entry.info, io.BytesIO(entry.data) if entry.info.isreg() else None)
    return out.getvalue()


def busybox_entries(links: str = "symlink") -> list[Entry]:
    """A minimal userland: busybox, its applets (symlinks or hardlinks), passwd, group, /tmp."""
    entries = [
        directory("bin"),
        file("bin/busybox", BUSYBOX.read_bytes(), mode=0o755),
    ]
    for applet in APPLETS:
        if links == "hardlink":
            entries.append(hardlink(f"bin/{applet}", "bin/busybox"))
        else:
            entries.append(symlink(f"bin/{applet}", "busybox"))
    entries += [
        directory("dev"),
        directory("etc"),
        file("etc/passwd", PASSWD),
        file("etc/group", GROUP),
        directory("proc"),
        directory("root", mode=0o700),
        directory("sys"),
        directory("tmp", mode=0o1777),
        directory("var"),
        directory("var/www"),
        file("var/www/index.html", b"hello from busybox\n"),
    ]
    return entries


@functools.cache
def busybox_layer(links: str = "symlink") -> bytes:
    return layer_tar(busybox_entries(links))


def compress(tar: bytes, compression: str) -> bytes:
    """`tar` as a layer blob: "plain", "gzip" (no timestamp, so stable) or "zstd"."""
    if compression == "plain":
        return tar
    if compression == "gzip":
        return gzip.compress(tar, compresslevel=6, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(tar)
    raise ValueError(f"unknown compression {compression!r}")


# --- images ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltLayer:
    tar: bytes  # the uncompressed tar (its sha256 is the diff id)
    blob: bytes  # as stored in a registry or layout (maybe compressed)
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.blob)

    @property
    def diff_id(self) -> str:
        return sha256(self.tar)


@dataclass(frozen=True)
class BuiltImage:
    """An image held in memory: every blob, plus the names it should be loaded under."""

    references: tuple[str, ...]
    layers: tuple[BuiltLayer, ...]
    config: bytes
    manifest: bytes
    media_type: str
    extra_blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    def blobs(self) -> dict[str, bytes]:
        """Every blob of the image by digest: manifest, config and layers."""
        found = {self.manifest_digest: self.manifest, self.config_digest: self.config}
        found.update({layer.digest: layer.blob for layer in self.layers})
        found.update(self.extra_blobs)
        return found

    def open_blob(self, digest: str) -> BinaryIO:
        return io.BytesIO(self.blobs()[digest])


def build_image(
    layer_tars: Sequence[bytes],
    *,
    references: Sequence[str] = (),
    compression: str | Sequence[str] = "gzip",
    manifest_format: str = "oci",
    config: dict | None = None,
    architecture: str | None = None,
) -> BuiltImage:
    """An image from uncompressed layer tars, bottom first.

    `compression` is one for all layers or one per layer; `manifest_format` is
    "oci" or "docker" (schema 2); `config` is the container config (Env, Cmd...).
    """
    kinds = [compression] * len(layer_tars) if isinstance(compression, str) else compression
    types = LAYER_TYPES[manifest_format]
    layers = tuple(
        BuiltLayer(tar, compress(tar, kind), types[kind])
        for tar, kind in zip(layer_tars, kinds, strict=True)
    )
    image_config = {
        "architecture": architecture or host_architecture(),
        "os": "linux",
        "created": CREATED,
        "config": config if config is not None else {"Env": [PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": CREATED, "created_by": f"test layer {i}"} for i in range(len(layers))
        ],
    }
    config_bytes = json.dumps(image_config, separators=(",", ":")).encode()
    oci = manifest_format == "oci"
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
            "digest": sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": layer.media_type, "digest": layer.digest, "size": len(layer.blob)}
            for layer in layers
        ],
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    return BuiltImage(
        tuple(references), layers, config_bytes, manifest_bytes, manifest["mediaType"]
    )


def busybox_image(
    references: Sequence[str] = ("busybox:latest",),
    *,
    compression: str = "gzip",
    manifest_format: str = "oci",
    links: str = "symlink",
    architecture: str | None = None,
) -> BuiltImage:
    """The one-layer busybox image that most runtime tests start containers from."""
    return build_image(
        [busybox_layer(links)],
        references=references,
        compression=compression,
        manifest_format=manifest_format,
        architecture=architecture,
    )


# What a container of `multilayer_image` sees, beyond busybox (path -> content).
MULTILAYER_VISIBLE = {
    "data/keep.txt": b"changed in layer 3\n",
    "data/dir/a.txt": b"a\n",
    "opq/new.txt": b"only this survives in opq\n",
}
# What layer 2 wrote and layer 3 hid (by whiteout or opaque dir).
MULTILAYER_HIDDEN = ("data/gone.txt", "opq/old.txt", "opq/sub/old.txt")


def multilayer_layers() -> list[bytes]:
    """busybox, then a layer that adds files, then one with a whiteout and an opaque dir."""
    added = layer_tar([
        directory("data"),
        file("data/keep.txt", b"kept from layer 2\n"),
        file("data/gone.txt", b"removed by layer 3\n"),
        directory("data/dir"),
        file("data/dir/a.txt", b"a\n"),
        directory("opq"),
        file("opq/old.txt", b"hidden by the opaque dir\n"),
        directory("opq/sub"),
        file("opq/sub/old.txt", b"hidden too\n"),
    ])
    changed = layer_tar([
        directory("data"),
        whiteout("data/gone.txt"),
        file("data/keep.txt", b"changed in layer 3\n"),
        directory("opq"),
        opaque("opq"),
        file("opq/new.txt", b"only this survives in opq\n"),
    ])
    return [busybox_layer(), added, changed]


def multilayer_image(
    references: Sequence[str] = ("multi:latest",),
    *,
    compression: str | Sequence[str] = ("gzip", "zstd", "plain"),
    manifest_format: str = "oci",
) -> BuiltImage:
    """Three layers, one per compression by default, with a whiteout and an opaque dir."""
    return build_image(
        multilayer_layers(),
        references=references,
        compression=compression,
        manifest_format=manifest_format,
    )


# --- archive formats -------------------------------------------------------------------------


def _full_name(reference: str) -> str:
    """`busybox:latest` -> `docker.io/library/busybox:latest`, as containerd annotates it."""
    first, _, rest = reference.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        reference = f"docker.io/{reference if rest else 'library/' + reference}"
    return reference


def _tag_of(reference: str) -> str:
    name = reference.rpartition("/")[2]
    return name.partition(":")[2] or "latest"


def _repo_of(reference: str) -> str:
    last_slash = reference.rfind("/")
    colon = reference.rfind(":")
    return reference[:colon] if colon > last_slash else reference


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
         linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _repositories(images: Sequence[BuiltImage], top_ids: Sequence[str]) -> bytes:
    repositories: dict[str, dict[str, str]] = {}
    for image, top in zip(images, top_ids, strict=True):
        for reference in image.references:
            repositories.setdefault(_repo_of(reference), {})[_tag_of(reference)] = top
    return _json(repositories)


def write_docker_archive_classic(path: str | Path, images: Sequence[BuiltImage]) -> Path:
    """A `docker save` archive as docker before 25 wrote it.

    Layers are uncompressed `<v1 id>/layer.tar` (with legacy `VERSION` and `json`
    beside them); a layer already written for another v1 id becomes a symlink to
    it, as docker does; configs are `<hex>.json`.
    """
    path = Path(path)
    entries = []
    top_ids = []
    written: dict[str, str] = {}  # diff id -> path of the layer.tar holding it
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for image in images:
            parent = ""
            layer_paths = []
            for layer in image.layers:
                v1_id = hashlib.sha256(f"{parent} {layer.diff_id}".encode()).hexdigest()
                layer_path = f"{v1_id}/layer.tar"
                if v1_id + "/" not in tar.getnames() and f"{v1_id}" not in tar.getnames():
                    _add(tar, v1_id, kind=tarfile.DIRTYPE)
                    _add(tar, f"{v1_id}/VERSION", b"1.0")
                    legacy = {"id": v1_id, "created": CREATED, "os": "linux"}
                    if parent:
                        legacy["parent"] = parent
                    _add(tar, f"{v1_id}/json", _json(legacy))
                    if layer.diff_id in written:
                        target = f"../{written[layer.diff_id]}"
                        _add(tar, layer_path, kind=tarfile.SYMTYPE, linkname=target)
                    else:
                        _add(tar, layer_path, layer.tar)
                        written[layer.diff_id] = layer_path
                layer_paths.append(layer_path)
                parent = v1_id
            config_name = image.config_digest.removeprefix("sha256:") + ".json"
            if config_name not in tar.getnames():
                _add(tar, config_name, image.config)
            entries.append(
                {"Config": config_name, "RepoTags": list(image.references) or None,
                 "Layers": layer_paths}
            )
            top_ids.append(parent)
        _add(tar, "manifest.json", _json(entries))
        _add(tar, "repositories", _repositories(images, top_ids))
    return path


def _index(images: Sequence[BuiltImage], names: str) -> bytes:
    """An OCI index.json: one entry per reference (one unnamed entry for an untagged image).

    `names` is how references are annotated: "containerd" (full name plus tag, as
    docker 25 and buildkit write), "tag" (the tag alone) or "full" (ref.name holds all).
    """
    manifests = []
    for image in images:
        descriptor = {
            "mediaType": image.media_type,
            "digest": image.manifest_digest,
            "size": len(image.manifest),
        }
        if not image.references:
            manifests.append(descriptor)
        for reference in image.references:
            annotations = {
                "containerd": {
                    "io.containerd.image.name": _full_name(reference),
                    "org.opencontainers.image.ref.name": _tag_of(reference),
                },
                "tag": {"org.opencontainers.image.ref.name": _tag_of(reference)},
                "full": {"org.opencontainers.image.ref.name": reference},
            }[names]
            manifests.append({**descriptor, "annotations": annotations})
    return _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def _blobs(images: Sequence[BuiltImage]) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    for image in images:
        blobs.update(image.blobs())
    return blobs


def write_docker_archive_oci(path: str | Path, images: Sequence[BuiltImage]) -> Path:
    """A `docker save` archive as docker 25+ writes it: an OCI layout plus manifest.json.

    Docker itself stores uncompressed layers there; build the images with
    `compression="plain"` to match it exactly (compressed ones load all the same).
    """
    path = Path(path)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "blobs", kind=tarfile.DIRTYPE)
        _add(tar, "blobs/sha256", kind=tarfile.DIRTYPE)
        for digest, blob in sorted(_blobs(images).items()):
            _add(tar, "blobs/sha256/" + digest.removeprefix("sha256:"), blob)
        _add(tar, "index.json", _index(images, "containerd"))
        entries = [
            {
                "Config": "blobs/sha256/" + image.config_digest.removeprefix("sha256:"),
                "RepoTags": list(image.references) or None,
                "Layers": ["blobs/sha256/" + layer.digest.removeprefix("sha256:")
                           for layer in image.layers],
            }
            for image in images
        ]
        _add(tar, "manifest.json", _json(entries))
        _add(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        top_ids = [image.layers[-1].digest.removeprefix("sha256:") for image in images]
        _add(tar, "repositories", _repositories(images, top_ids))
    return path


def write_oci_layout(
    directory_path: str | Path, images: Sequence[BuiltImage], *, names: str = "containerd"
) -> Path:
    """An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`)."""
    root = Path(directory_path)
    blob_dir = root / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for digest, blob in _blobs(images).items():
        (blob_dir / digest.removeprefix("sha256:")).write_bytes(blob)
    (root / "index.json").write_bytes(_index(images, names))
    (root / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    return root


def write_oci_layout_tar(
    path: str | Path, images: Sequence[BuiltImage], *, names: str = "containerd"
) -> Path:
    """The same OCI image layout, as one tar (what `skopeo copy oci-archive:` writes)."""
    path = Path(path)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add(tar, "index.json", _index(images, names))
        _add(tar, "blobs", kind=tarfile.DIRTYPE)
        _add(tar, "blobs/sha256", kind=tarfile.DIRTYPE)
        for digest, blob in sorted(_blobs(images).items()):
            _add(tar, "blobs/sha256/" + digest.removeprefix("sha256:"), blob)
    return path
