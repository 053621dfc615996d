"""The pull/push progress display: one live line per layer on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from orchestrator.cli.progress import ProgressPrinter
from orchestrator.runtime.images.progress import ProgressEvent


def events() -> list[ProgressEvent]:
    return [
        ProgressEvent("busybox:latest", "manifest", "resolving", 0, None),
        ProgressEvent("busybox:latest", "0a1b2c3d4e5f", "downloading", 0, 2_000_000),
        ProgressEvent("busybox:latest", "0a1b2c3d4e5f", "downloading", 1_000_000, 2_000_000),
        ProgressEvent("busybox:latest", "0a1b2c3d4e5f", "pull complete", 2_000_000, 2_000_000),
    ]


def test_plain_output_writes_a_line_per_status_change() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, live=False)
    for event in events():
        printer(event)
    lines = out.getvalue().splitlines()
    assert lines[0] == "manifest: Resolving"
    assert lines[1] == "0a1b2c3d4e5f: Downloading"
    assert lines[2] == "0a1b2c3d4e5f: Pull complete"
    assert len(lines) == 3  # the second "downloading" is not a change


def test_terminal_output_redraws_one_line_per_layer_with_bytes_and_speed() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, live=True)
    for event in events()[:3]:
        printer(event)
    screen = out.getvalue()
    assert "\x1b[2F" in screen  # moved back up over the two lines drawn before
    last_frame = screen.rsplit("\x1b[2F", 1)[1]
    layer_line = last_frame.split("\n")[1].removeprefix("\x1b[2K")
    assert layer_line.startswith("0a1b2c3d4e5f: Downloading 1.0MB/2.0MB ")
    assert layer_line.endswith("/s")
