"""Showing pull and push progress: a live line per layer on a terminal, plain lines elsewhere.

The runtime reports `ProgressEvent`s (image, layer, status, bytes done, total);
this turns them into what a Docker user expects to read. On a terminal every
layer keeps one line, redrawn in place with its bytes and speed; when output
goes to a file or a pipe only status changes are written, one line each, so
logs stay readable.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class ProgressPrinter:
    """Receives progress events; `live` redraws per-layer lines (a terminal)."""

    def __init__(self, out: TextIO | None = None, live: bool | None = None,
                 as_json: bool = False) -> None:
        self.out = out or sys.stderr
        self.live = self.out.isatty() if live is None else live
        self.as_json = as_json  # `--progress json`: an object per status change
        self.order: list[tuple[str, str]] = []
        self.lines: dict[tuple[str, str], str] = {}
        self.status: dict[tuple[str, str], str] = {}
        self.started: dict[tuple[str, str], float] = {}
        self.drawn = 0

    def __call__(self, event: Any) -> None:
        key = (event.image, event.layer)
        if key not in self.lines:
            self.order.append(key)
            self.started[key] = time.monotonic()
        self.lines[key] = self._describe(key, event)
        if self.as_json:
            if self.status.get(key) != event.status:
                line = {"id": event.layer, "parent_id": event.image,
                        "status": event.status[:1].upper() + event.status[1:]}
                if event.total:
                    line.update(current=event.current, total=event.total)
                self.out.write(json.dumps(line) + "\n")
                self.out.flush()
        elif self.live:
            self._redraw()
        elif self.status.get(key) != event.status:
            self.out.write(self.lines[key] + "\n")
            self.out.flush()
        self.status[key] = event.status

    def _describe(self, key: tuple[str, str], event: Any) -> str:
        text = f"{event.layer}: {event.status[:1].upper()}{event.status[1:]}"
        if event.status in ("downloading", "pushing") and event.current:
            elapsed = max(time.monotonic() - self.started[key], 1e-3)
            total = f"/{_size(event.total)}" if event.total else ""
            text += f" {_size(event.current)}{total} {_size(event.current / elapsed)}/s"
        return text

    def _redraw(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")
        for key in self.order:
            self.out.write("\x1b[2K" + self.lines[key] + "\n")
        self.drawn = len(self.order)
        self.out.flush()


def _size(value: float | None) -> str:
    """Decimal units, as docker prints transfer sizes."""
    number = float(value or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if number < 1000 or unit == "GB":
            return f"{number:.1f}{unit}" if unit != "B" else f"{int(number)}B"
        number /= 1000
    raise AssertionError("unreachable")
