"""What pulls and pushes report while they run: events only, no rendering.

The runtime calls a `ProgressSink` with one `ProgressEvent` at a time; the CLI
draws them as Docker does (a line per layer), the engine streams them as JSON.
Keeping the events plain values means neither side knows about the other.

`layer` is the short digest (12 hex) of a blob, or "manifest" for events about
the image as a whole. `current` and `total` are bytes where bytes mean something
(`total` is None when unknown), else 0 and None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

Status = Literal[
    "resolving",
    "waiting",
    "downloading",
    "verifying",
    "extracting",
    "pull complete",
    "already exists",
    "pushing",
    "pushed",
    "mounted",
    "layer already exists",
]

IMAGE = "manifest"
"""The `layer` of events about the whole image (resolving it, finishing it)."""


class ProgressEvent(NamedTuple):
    image: str
    layer: str
    status: Status
    current: int = 0
    total: int | None = None


ProgressSink = Callable[[ProgressEvent], None]


def short_digest(digest: str) -> str:
    """The 12 hex characters Docker shows for a layer."""
    return digest.removeprefix("sha256:")[:12]


class ByteProgress:
    """Reports a transfer's bytes often enough to draw a speed, not on every chunk.

    A 200 MB layer arrives in ~800 chunks; one event per MiB (and the last one)
    keeps a terminal lively without making the callback the bottleneck.
    """

    STEP = 1 << 20

    def __init__(
        self, sink: ProgressSink | None, image: str, layer: str, status: Status, total: int | None
    ) -> None:
        self._sink = sink
        self._image = image
        self._layer = layer
        self._status: Status = status
        self._total = total
        self._reported = -1
        self.current = 0

    def add(self, count: int) -> None:
        self.current += count
        if self.current - self._reported >= self.STEP or self.current == self._total:
            self.report()

    def report(self) -> None:
        if self._sink is not None and self.current != self._reported:
            self._sink(
                ProgressEvent(self._image, self._layer, self._status, self.current, self._total)
            )
            self._reported = self.current
