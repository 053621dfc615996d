"""`--progress` for the engine's operations, and the colored log prefixes: what each mode
writes, checked on in-memory streams (no engine, no terminal)."""

from __future__ import annotations

import io
import json
import re

import pytest

from orchestrator.cli.attached import PALETTE, LogLines
from orchestrator.cli.stack_progress import Entry, ProgressDisplay, render_frame, resolve_mode
from orchestrator.spec.errors import StackError

UP = [
    {"resource": "Network p_default", "action": "Create", "status": "working"},
    {"resource": "Network p_default", "action": "Create", "status": "done"},
    {"resource": "Container p-web-1", "action": "Start", "status": "working"},
    {"resource": "Container p-web-1", "action": "Start", "status": "done"},
]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.2
        return self.now


def shown(mode: str, events: list[dict], **options: object) -> tuple[str, str, bool]:
    out, err = io.StringIO(), io.StringIO()
    display = ProgressDisplay(mode, out=out, err=err, clock=Clock(), **options)
    ok = display.show(events)
    return out.getvalue(), err.getvalue(), ok


def test_plain_mode_prints_a_line_per_change_as_compose_does() -> None:
    out, err, ok = shown("plain", UP, color=False)
    assert out == (" Network p_default  Creating\n Network p_default  Created\n"
                   " Container p-web-1  Starting\n Container p-web-1  Started\n")
    assert (err, ok) == ("", True)


def test_json_mode_prints_one_object_per_change() -> None:
    failing = [*UP, {"resource": "Container p-db-1", "action": "Start", "status": "error",
                     "message": "no such image"}]
    out, _, ok = shown("json", failing)
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"id": "Network p_default", "status": "Creating"}
    assert lines[3] == {"id": "Container p-web-1", "status": "Started"}
    assert lines[4] == {"id": "Container p-db-1", "status": "Error", "text": "no such image"}
    assert not ok


def test_quiet_mode_prints_only_errors() -> None:
    out, err, ok = shown("quiet", UP)
    assert (out, err, ok) == ("", "", True)
    out, err, ok = shown("quiet", [{"resource": "Container p-db-1", "action": "Stop",
                                    "status": "error", "message": "timed out"}])
    assert out == ""
    assert err == "error: Container p-db-1: timed out\n"
    assert not ok


def test_warnings_go_to_stderr_and_a_plan_to_stdout_in_every_mode() -> None:
    events = [{"resource": "", "action": "warn", "status": "warning", "message": "orphans"},
              {"resource": "", "action": "plan", "status": "planned", "message": "create web"}]
    for mode in ("plain", "quiet", "json", "tty"):
        out, err, answer = io.StringIO(), io.StringIO(), io.StringIO()
        ProgressDisplay(mode, out=out, err=err, answer=answer, clock=Clock()).show(events)
        assert "WARN orphans\n" in err.getvalue()
        assert answer.getvalue() == "create web\n"
        assert "create web" not in out.getvalue()


def test_progress_goes_to_stderr_unless_told_otherwise(
        capsys: pytest.CaptureFixture[str]) -> None:
    ProgressDisplay("plain", color=False).show(UP[:2])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == " Network p_default  Creating\n Network p_default  Created\n"


def test_tty_mode_redraws_the_block_in_place_and_leaves_the_final_frame() -> None:
    out, _, ok = shown("tty", UP)
    assert ok
    frames = out.split("\x1b[0G")
    assert "\x1b[3A" in out  # moved back up over the header and two resources
    last = ANSI.sub("", frames[-1]).splitlines()
    assert last[0] == "[+] Running 2/2"
    assert re.fullmatch(r" ✔ Network p_default  Created +\d+\.\ds ", last[1])
    assert re.fullmatch(r" ✔ Container p-web-1  Started +\d+\.\ds ", last[2])
    assert "\x1b[34m[+] Running 2/2\x1b[0m" in frames[-1]  # blue once all is done
    assert out.endswith("\x1b[?25h")  # the cursor is shown again
    middle = ANSI.sub("", frames[3])  # while the container starts
    assert "[+] Running 1/2" in middle and "Container p-web-1  Starting" in middle


def test_a_frame_fills_the_width_with_the_timer_flush_right() -> None:
    entries = [Entry("Network p_default", "Created", "done", 0.0, 0.04),
               Entry("Container p-cache-1", "Starting", "working", 0.0)]
    lines = [ANSI.sub("", line) for line in render_frame(entries, 0.9, 80, spinner=0)]
    assert lines[0] == "[+] Running 1/2"
    assert lines[1].startswith(" ✔ Network p_default    Created ")
    assert lines[1].endswith(" 0.0s ") and len(lines[1]) == 80
    assert lines[2].startswith(" ⠋ Container p-cache-1  Starting ")
    assert lines[2].endswith(" 0.9s ") and len(lines[2]) == 80


def test_a_frame_taller_than_the_screen_keeps_the_working_lines() -> None:
    entries = [Entry(f"Container p-s{i}-1", "Started", "done", 0.0, 0.1) for i in range(30)]
    entries.append(Entry("Container p-last-1", "Starting", "working", 0.0))
    lines = render_frame(entries, 1.0, 80, max_lines=10)
    assert len(lines) == 10
    assert "Container p-last-1" in lines[-1]
    assert "[+] Running 30/31" in lines[0]


def test_auto_is_plain_off_a_terminal_and_a_bad_mode_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPOSE_PROGRESS", raising=False)
    assert resolve_mode(io.StringIO()) == "plain"
    monkeypatch.setenv("COMPOSE_PROGRESS", "json")
    assert resolve_mode(io.StringIO()) == "json"
    monkeypatch.setenv("COMPOSE_PROGRESS", "fancy")
    with pytest.raises(StackError, match='unsupported --progress value "fancy"'):
        resolve_mode(io.StringIO())


def test_log_prefixes_are_padded_and_colored_in_compose_palette_order() -> None:
    containers = [{"service": s, "number": 1} for s in ("web", "cache", "db")]
    lines = LogLines(containers, color=True)
    entry = {"line": "hello\n", "time": "2024-01-01T00:00:00Z"}
    assert lines.format(containers[1], entry) == f"\x1b[{PALETTE[0]}mcache-1  | \x1b[0mhello\n"
    assert lines.format(containers[2], entry) == f"\x1b[{PALETTE[1]}mdb-1     | \x1b[0mhello\n"
    assert lines.format(containers[0], entry) == f"\x1b[{PALETTE[2]}mweb-1    | \x1b[0mhello\n"
    plain = LogLines(containers, color=False)
    assert plain.format(containers[0], entry) == "web-1    | hello\n"
    bare = LogLines(containers, color=True, prefix=False, timestamps=True)
    assert bare.format(containers[0], entry) == "2024-01-01T00:00:00Z hello\n"
