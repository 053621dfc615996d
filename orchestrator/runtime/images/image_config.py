"""The image config: what a container of an image starts with.

Docker and OCI write the same JSON (OCI's is Docker's minus a few fields), so
one reader serves both. The container layer needs the run settings (Env,
Entrypoint, Cmd, WorkingDir, User, ExposedPorts, Volumes, Healthcheck,
StopSignal, Labels); the store needs `rootfs.diff_ids`, which name the
uncompressed layers and so are checked against every unpacked layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from orchestrator.runtime.images.digests import sha256_digest, validate_digest
from orchestrator.runtime.images.manifest import JsonFields, Manifest, canonical_json, load_object
from orchestrator.runtime.images.platform import Platform, parse_platform
from orchestrator.spec.errors import StackError

_EMPTY: Mapping[str, str] = MappingProxyType({})


class Healthcheck(NamedTuple):
    """The image's HEALTHCHECK; durations in nanoseconds, 0 meaning the default."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ):
            if value:
                document[key] = value
        return document


class HistoryEntry(NamedTuple):
    created: str = ""
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            key: value
            for key, value in (
                ("created", self.created),
                ("created_by", self.created_by),
                ("author", self.author),
                ("comment", self.comment),
            )
            if value
        }
        if self.empty_layer:
            document["empty_layer"] = True
        return document


@dataclass(frozen=True)
class ImageConfig:
    """What a container of this image starts with, plus the layer identities.

    `entrypoint` and `cmd` are None when the image does not set them, which
    differs from an empty list: compose's `entrypoint: []` and an image's
    unset ENTRYPOINT combine differently. `raw` keeps every other field.
    """

    os: str
    architecture: str
    variant: str = ""
    created: str = ""
    author: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    healthcheck: Healthcheck | None = None
    stop_signal: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    diff_ids: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


def parse_image_config(data: bytes, *, where: str = "") -> ImageConfig:
    """Read an image config blob (Docker or OCI; the same JSON) into what we use."""
    reader = JsonFields(where or f"image config {sha256_digest(data)}")
    document = load_object(data, reader, "image config")
    run = reader.mapping(document.get("config"), "config")
    rootfs = reader.mapping(document.get("rootfs"), "rootfs")
    if rootfs.get("type") != "layers":
        raise reader.error('rootfs.type must be "layers"')
    diff_ids = reader.strings(rootfs.get("diff_ids"), "rootfs.diff_ids")
    for i, diff_id in enumerate(diff_ids):
        validate_digest(diff_id, f"{reader.where}: rootfs.diff_ids[{i}]")
    healthcheck = None
    check = reader.mapping(run.get("Healthcheck"), "config.Healthcheck")
    if check:
        healthcheck = Healthcheck(
            reader.strings(check.get("Test"), "config.Healthcheck.Test"),
            *(
                reader.integer(check.get(key), f"config.Healthcheck.{key}")
                for key in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")
            ),
        )
    entries = document.get("history")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise reader.error("history must be a list")
    history = []
    for i, entry in enumerate(entries):
        entry = reader.mapping(entry, f"history[{i}]")
        history.append(
            HistoryEntry(
                *(
                    reader.string(entry.get(key), f"history[{i}].{key}", optional=True)
                    for key in ("created", "created_by", "author", "comment")
                ),
                bool(entry.get("empty_layer")),
            )
        )
    return ImageConfig(
        os=reader.string(document.get("os"), "os"),
        architecture=reader.string(document.get("architecture"), "architecture"),
        variant=reader.string(document.get("variant"), "variant", optional=True),
        created=reader.string(document.get("created"), "created", optional=True),
        author=reader.string(document.get("author"), "author", optional=True),
        env=reader.strings(run.get("Env"), "config.Env"),
        entrypoint=(
            None
            if run.get("Entrypoint") is None
            else reader.strings(run["Entrypoint"], "config.Entrypoint")
        ),
        cmd=None if run.get("Cmd") is None else reader.strings(run["Cmd"], "config.Cmd"),
        working_dir=reader.string(run.get("WorkingDir"), "config.WorkingDir", optional=True),
        user=reader.string(run.get("User"), "config.User", optional=True),
        exposed_ports=tuple(sorted(reader.mapping(run.get("ExposedPorts"), "config.ExposedPorts"))),
        volumes=tuple(sorted(reader.mapping(run.get("Volumes"), "config.Volumes"))),
        healthcheck=healthcheck,
        stop_signal=reader.string(run.get("StopSignal"), "config.StopSignal", optional=True),
        labels=reader.annotations(run.get("Labels"), "config.Labels"),
        diff_ids=diff_ids,
        history=tuple(history),
        raw=MappingProxyType(document),
    )


def check_config_matches(manifest: Manifest, config: ImageConfig, *, where: str = "") -> None:
    """A manifest and its config must agree on the layer count, or the rootfs is wrong."""
    if len(manifest.layers) != len(config.diff_ids):
        raise StackError(
            f"{where or 'manifest ' + manifest.digest}: {len(manifest.layers)} "
            f"layers but the config lists {len(config.diff_ids)} diff_ids"
        )


def build_config(
    diff_ids: Iterable[str],
    *,
    platform: Platform | str = "linux/amd64",
    created: str = "",
    author: str = "",
    env: Iterable[str] = (),
    entrypoint: Iterable[str] | None = None,
    cmd: Iterable[str] | None = None,
    working_dir: str = "",
    user: str = "",
    exposed_ports: Iterable[str] = (),
    volumes: Iterable[str] = (),
    healthcheck: Healthcheck | None = None,
    stop_signal: str = "",
    labels: Mapping[str, str] | None = None,
    history: Iterable[HistoryEntry] = (),
) -> bytes:
    """An image config as canonical JSON; empty fields are left out, as Docker does."""
    target = parse_platform(platform) if isinstance(platform, str) else platform
    run: dict[str, Any] = {}
    for key, value in (
        ("Env", list(env)),
        ("WorkingDir", working_dir),
        ("User", user),
        ("StopSignal", stop_signal),
        ("Labels", dict(labels or {})),
    ):
        if value:
            run[key] = value
    if entrypoint is not None:
        run["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        run["Cmd"] = list(cmd)
    if ports := {port: {} for port in exposed_ports}:
        run["ExposedPorts"] = ports
    if mounts := {path: {} for path in volumes}:
        run["Volumes"] = mounts
    if healthcheck is not None:
        run["Healthcheck"] = healthcheck.to_json()
    document: dict[str, Any] = {
        "architecture": target.architecture,
        "os": target.os,
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": [validate_digest(d, "diff id") for d in diff_ids]},
    }
    if entries := [entry.to_json() for entry in history]:
        document["history"] = entries
    if target.variant:
        document["variant"] = target.variant
    if created:
        document["created"] = created
    if author:
        document["author"] = author
    return canonical_json(document)
