"""An engine operation's progress as compose shows it: `--progress auto|tty|plain|quiet|json`.

The engine streams one event per step (`{"resource": "Container demo-web-1",
"action": "Start", "status": "working"}`); this turns them into what a compose
user reads:

- tty: compose's live block — `[+] Running 2/3`, then one line per resource
  with a spinner or a check mark, its state and its elapsed time, redrawn in
  place (a thread ticks the spinner and the timers while the engine works);
  the final frame stays on screen.
- plain: one line per change, ` Container demo-web-1  Started`, readable in a log.
- quiet: nothing but errors.  json: one JSON object per change.

Progress goes to stderr, as compose writes it, so that stdout carries only
what a command answers (`run -d` its container id, a dry run its plan).
`auto` is tty when stderr is a terminal, plain otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from orchestrator.spec.errors import StackError

MODES = ("auto", "tty", "plain", "quiet", "json")
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
TICK = 0.1  # seconds between two frames while something is still working
GREEN, YELLOW, RED, BLUE, RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[34m", "\x1b[0m"

# action -> (while working, once done), as compose words them
WORDS: dict[str, tuple[str, str]] = {
    "Create": ("Creating", "Created"), "Recreate": ("Recreating", "Recreated"),
    "Start": ("Starting", "Started"), "Stop": ("Stopping", "Stopped"),
    "Remove": ("Removing", "Removed"), "Restart": ("Restarting", "Restarted"),
    "Ensure": ("Ensuring", "Ensured"), "Check": ("Checking", "Checked"),
    "Kill": ("Killing", "Killed"), "Pause": ("Pausing", "Paused"),
    "Unpause": ("Unpausing", "Unpaused"),
}

_chosen: str | None = None


def set_mode(mode: str | None) -> None:
    """The global `--progress` option, for every display this command makes."""
    global _chosen
    _chosen = mode


def resolve_mode(out: TextIO, requested: str | None = None) -> str:
    """tty, plain, quiet or json: the option, else COMPOSE_PROGRESS, else auto."""
    mode = requested or _chosen or os.environ.get("COMPOSE_PROGRESS") or "auto"
    if mode not in MODES:
        raise StackError(f'unsupported --progress value "{mode}"',
                         hint=f"use one of {', '.join(MODES)}")
    if mode == "auto":
        return "tty" if _is_terminal(out) else "plain"
    return mode


def word(action: str, status: str, words: dict[str, tuple[str, str]] = WORDS) -> str:
    """`Starting`, `Started` or `Error` for an action in a state."""
    if status == "error":
        return "Error"
    if action.startswith("Wait"):  # a dependency: "Waiting", then "Healthy" or "Exited"
        if status == "working":
            return "Waiting"
        return "Healthy" if "health" in action.lower() else "Exited"
    working, done = words.get(action, (action, action))
    return working if status == "working" else done


class Entry:
    """One resource's line: what it is doing and since when.

    A plain class: `dataclasses` imports `inspect`, which costs a short command
    more than everything else it shows."""

    __slots__ = ("resource", "word", "state", "began", "ended", "message")

    def __init__(self, resource: str, word: str, state: str, began: float,
                 ended: float | None = None, message: str = "") -> None:
        self.resource = resource
        self.word = word
        self.state = state  # working, done or error
        self.began = began
        self.ended = ended
        self.message = message

    def __repr__(self) -> str:
        return f"Entry({self.resource!r}, {self.word!r}, {self.state!r})"


class ProgressDisplay:
    """Receives the engine's progress events and shows them in one of the modes."""

    def __init__(self, mode: str | None = None, *, out: TextIO | None = None,
                 err: TextIO | None = None, answer: TextIO | None = None,
                 words: dict[str, tuple[str, str]] | None = None, color: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.out = out or sys.stderr
        self.err = err or sys.stderr
        self.answer = answer or sys.stdout  # what the command answers: a dry run's plan
        self.mode = resolve_mode(self.out, mode)
        self.words = {**WORDS, **(words or {})}
        # plain lines get a green state on a terminal, as compose's attached stop prints them
        self.color = _is_terminal(self.out) if color is None else color
        self.clock = clock
        self.ok = True
        self.entries: dict[str, Entry] = {}
        self._drawn = 0  # lines of the last frame, to move back up over
        self._frames = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- the stream -----------------------------------------------------------------------

    def show(self, events: Iterable[dict[str, Any]]) -> bool:
        """Every event of a stream; False when a step failed."""
        with self:
            for event in events:
                self.add(event)
        return self.ok

    def __enter__(self) -> ProgressDisplay:
        if self.mode == "tty":
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.mode == "tty" and self.entries:
            with self._lock:
                self._draw(final=True)
                self.out.write("\x1b[?25h")
                self.out.flush()

    def add(self, event: dict[str, Any]) -> None:
        if "error" in event:  # the operation failed as a whole
            self.ok = False
            self._aside(f"error: {event['error']}", self.err)
            return
        status = str(event.get("status") or "")
        if status == "warning":
            self._aside(f"WARN {event.get('message', '')}", self.err)
            return
        if status == "planned":  # a dry run's answer, not progress
            self._aside(str(event.get("message", "")), self.answer)
            return
        resource = str(event.get("resource", ""))
        state = status if status in ("working", "done") else "error"
        text = word(str(event.get("action", "")), state, self.words)
        message = str(event.get("message") or "") if state == "error" else ""
        if state == "error":
            self.ok = False
        with self._lock:
            self._record(resource, text, state, message)
            if self.mode == "tty":
                self._draw()
            elif self.mode == "plain":
                self._plain(resource, text, state, message)
            elif self.mode == "json":
                line = {"id": resource, "status": text}
                if message:
                    line["text"] = message
                self.out.write(json.dumps(line) + "\n")
                self.out.flush()
            elif state == "error":  # quiet
                self.err.write(f"error: {resource}: {message or text}\n")
                self.err.flush()

    def _record(self, resource: str, text: str, state: str, message: str) -> None:
        now = self.clock()
        entry = self.entries.get(resource)
        if entry is None:
            entry = self.entries[resource] = Entry(resource, text, state, now)
        entry.word, entry.state, entry.message = text, state, message
        entry.ended = None if state == "working" else now

    def _plain(self, resource: str, text: str, state: str, message: str) -> None:
        if self.color and state != "working":
            text = f"{GREEN if state == 'done' else RED}{text}{RESET}"
        line = f" {resource}  {text}"
        if message:
            line += f"  {message}"
        self.out.write(line + "\n")
        self.out.flush()

    def _aside(self, line: str, stream: TextIO) -> None:
        """A line that is not a resource's: above the live block, which is redrawn below."""
        with self._lock:
            if self.mode == "tty" and self._drawn:
                self.out.write(f"\x1b[{self._drawn}A\x1b[0G\x1b[J")
                self.out.flush()
                self._drawn = 0
            stream.write(line + "\n")
            stream.flush()
            if self.mode == "tty" and self.entries:
                self._draw()

    # --- the live block -------------------------------------------------------------------

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            with self._lock:
                if any(e.state == "working" for e in self.entries.values()):
                    self._frames += 1
                    self._draw()

    def _draw(self, final: bool = False) -> None:
        columns, rows = _terminal_size(self.out)
        lines = render_frame(list(self.entries.values()), self.clock(), columns,
                             spinner=self._frames,
                             # A frame taller than the screen could not be moved back over.
                             max_lines=None if final else max(rows - 1, 2))
        up = f"\x1b[{self._drawn}A" if self._drawn else ""
        self.out.write(f"{up}\x1b[0G\x1b[?25l" + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self._drawn = len(lines)


def render_frame(entries: list[Entry], now: float, columns: int, *, spinner: int = 0,
                 max_lines: int | None = None) -> list[str]:
    """compose's block: a header, then a line per resource with its elapsed time flush right.

    When the screen is too short, finished resources give their lines to those
    still working (the last frame, drawn once, shows them all).
    """
    done = sum(1 for e in entries if e.state == "done")
    header = f"[+] Running {done}/{len(entries)}"
    if all(e.state != "working" for e in entries):
        header = f"{BLUE}{header}{RESET}"
    shown = entries
    if max_lines is not None and len(entries) + 1 > max_lines:
        room = max_lines - 1
        working = [e for e in entries if e.state == "working"]
        keep = {id(e) for e in (working + [e for e in entries if e.state != "working"])[:room]}
        shown = [e for e in entries if id(e) in keep]
    width = max((len(e.resource) for e in shown), default=0)
    lines = [header]
    for entry in shown:
        if entry.state == "working":
            icon, text = f"{YELLOW}{SPINNER[spinner % len(SPINNER)]}{RESET}", entry.word
        elif entry.state == "done":
            icon, text = f"{GREEN}✔{RESET}", f"{GREEN}{entry.word}{RESET}"
        else:
            icon, text = f"{RED}✘{RESET}", f"{RED}{entry.word}{RESET}"
        timer = f"{(entry.ended or now) - entry.began:.1f}s "
        left = f" x {entry.resource.ljust(width)}  {entry.word}"
        message = f" {entry.message}" if entry.message else ""
        room = columns - len(left) - len(timer)
        message = message[:max(room, 0)]
        padding = " " * max(room - len(message), 1)
        lines.append(f" {icon} {entry.resource.ljust(width)}  {text}{message}{padding}"
                     f"{BLUE}{timer}{RESET}")
    return lines


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
        return size.columns or 80, size.lines or 24
    except (AttributeError, OSError, ValueError):
        return 80, 24
