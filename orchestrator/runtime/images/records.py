"""What the image store hands out: plain values, safe to pass between threads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple


class LayerInfo(NamedTuple):
    """One unpacked layer; `path` is its `diff/` tree, ready to be an overlay lowerdir."""

    diff_id: str
    chain_id: str
    path: Path


class LayerRef(NamedTuple):
    """A layer as one image uses it: the blob (`digest`, compressed `size`) and its identity."""

    digest: str
    media_type: str
    size: int
    diff_id: str
    chain_id: str


@dataclass(frozen=True)
class ImageRecord:
    """An image in the store. Its id, as `docker images` shows it, is `config_digest`.

    `config` is the image config JSON as stored (Env, Entrypoint, Cmd, ... under
    "config"); `size` is the bytes of file content in its unpacked layers.
    """

    manifest_digest: str
    config_digest: str
    config: dict[str, Any] = field(repr=False)
    layers: list[LayerRef]
    references: list[str]
    size: int
    created: str


@dataclass
class PruneResult:
    """What `prune` deleted, and about how many bytes that freed."""

    blobs: list[str]
    layers: list[str]
    reclaimed: int
