"""The real CLI against a real stackd: `--progress` modes, compose's live display and colored
log prefixes on a terminal (a pseudo-terminal here), attached `up`'s Ctrl-C, `down --rmi`."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.stack_cli import CliEngine, StackCli, cli_engine

pytestmark = pytest.mark.slow
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
POOL_PREFIX = "10.231."  # this file's networks, apart from other tests'

STACK = """
services:
  web:
    image: IMAGE
    command: sh -c 'echo web-says-hi; exec sleep 600'
    stop_signal: SIGKILL
  db:
    image: IMAGE
    command: sh -c 'echo db-says-hi; exec sleep 600'
    stop_signal: SIGKILL
"""


class Terminal:
    """The CLI on a pseudo-terminal: what it draws, and Ctrl-C as a signal."""

    def __init__(self, stack: StackCli, args: list[str]):
        master, slave = pty.openpty()
        self.master = master
        self.process = stack.popen(*args, stdin=slave, stdout=slave, stderr=slave,
                                   start_new_session=True)
        os.close(slave)
        self.output = ""

    def read_until(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, f"no {text!r} in {self.output!r}"
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the CLI exited and closed the terminal
                    break
        assert text in self.output, f"no {text!r} in {self.output!r}"
        return self.output

    def interrupt(self) -> None:
        os.kill(self.process.pid, signal.SIGINT)

    def finish(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self.read_until("")
        while select.select([self.master], [], [], 0.1)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                break
            if not data:
                break
            self.output += data.decode(errors="replace")
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def engine(tmp_path: Path, container_root: Path) -> Iterator[CliEngine]:
    with cli_engine(container_root, tmp_path / "stack.sock", f"{POOL_PREFIX}0.0/16:24"
                    ) as engine:
        for tag in ("rmi-web:1", "rmi-shared:1"):
            engine.run_before_stop("image", "rm", tag)
        yield engine


@pytest.fixture
def stack(engine: CliEngine, tmp_path: Path) -> StackCli:
    (tmp_path / "proj").mkdir()
    return engine.project(tmp_path / "proj")


@pytest.fixture
def other(engine: CliEngine, tmp_path: Path) -> StackCli:
    """A second project on the same engine."""
    (tmp_path / "other").mkdir()
    return engine.project(tmp_path / "other")


@pytest.fixture
def on_terminal(stack: StackCli) -> Iterator[Callable[..., Terminal]]:
    """`on_terminal("up")`: the CLI in proj/ on a terminal; still running at the end, it is
    killed before the project is taken down."""
    terminals: list[Terminal] = []

    def start(*args: str) -> Terminal:
        terminals.append(Terminal(stack, list(args)))
        return terminals[-1]

    try:
        yield start
    finally:
        for terminal in terminals:
            terminal.close()


def write(directory: Path, image: str = "busybox") -> None:
    (directory / "compose.yaml").write_text(STACK.replace("IMAGE", image))


def states(stack: StackCli) -> dict[str, str]:
    return {name: container["state"] for name, container in stack.containers().items()}


def test_progress_modes_plain_json_quiet_as_options_or_environment(
        stack: StackCli, tmp_path: Path) -> None:
    write(tmp_path / "proj")
    up = stack("--progress", "json", "up", "-d")
    events = [json.loads(line) for line in up.stderr.splitlines()]
    assert up.stdout == ""  # progress is not output: it goes to stderr, as compose has it
    assert {"id": "Container proj-web-1", "status": "Started"} in events
    assert {"id": "Network proj_default", "status": "Created"} in events
    stop = stack("--progress", "quiet", "stop")
    assert (stop.stdout, stop.stderr) == ("", "")
    assert set(states(stack).values()) == {"exited"}
    start = stack("start")  # piped: plain lines
    assert " Container proj-db-1  Started\n" in start.stderr
    assert "\x1b" not in start.stderr
    bad = stack("--progress", "fancy", "ps", check=False)
    assert bad.returncode == 2 and "invalid choice: 'fancy'" in bad.stderr


def test_tty_progress_redraws_a_line_per_resource_and_leaves_the_final_state(
        stack: StackCli, tmp_path: Path, on_terminal: Callable[..., Terminal]) -> None:
    write(tmp_path / "proj")
    terminal = on_terminal("up", "-d")
    assert terminal.finish() == 0
    screen = terminal.output
    assert "\x1b[?25h" in screen and re.search(r"\x1b\[\d+A", screen)  # redrawn in place
    final = ANSI.sub("", screen.rsplit("\x1b[0G", 1)[1]).replace("\r", "").splitlines()
    assert final[0] == "[+] Running 3/3"
    assert sorted(line.split("  ")[0] for line in final[1:]) == [
        " ✔ Container proj-db-1", " ✔ Container proj-web-1", " ✔ Network proj_default"]
    assert all(re.search(r"(Created|Started) +\d+\.\ds $", line) for line in final[1:])
    down = on_terminal("--progress", "plain", "down")
    assert down.finish() == 0
    assert " Container proj-web-1  \x1b[32mRemoved\x1b[0m" in down.output
    assert "[+]" not in down.output


def test_attached_up_colors_prefixes_and_the_first_ctrl_c_stops_gracefully(
        stack: StackCli, tmp_path: Path, on_terminal: Callable[..., Terminal]) -> None:
    write(tmp_path / "proj")
    terminal = on_terminal("up")
    terminal.read_until("web-says-hi")
    terminal.read_until("db-says-hi")
    assert "Attaching to db-1, web-1" in terminal.output
    assert "\x1b[36mdb-1   | \x1b[0mdb-says-hi" in terminal.output  # cyan, then yellow
    assert "\x1b[33mweb-1  | \x1b[0mweb-says-hi" in terminal.output
    terminal.interrupt()
    assert terminal.finish() == 130
    assert "Gracefully Stopping... press Ctrl+C again to force" in terminal.output
    assert " Container proj-web-1  \x1b[32mStopped\x1b[0m" in terminal.output
    assert set(states(stack).values()) == {"exited"}

    logs = on_terminal("logs", "web")
    assert logs.finish() == 0
    assert "\x1b[36mweb-1  | \x1b[0mweb-says-hi" in logs.output
    monochrome = on_terminal("logs", "--no-color", "web")
    assert monochrome.finish() == 0
    assert "web-1  | web-says-hi" in monochrome.output and "\x1b[36m" not in monochrome.output
    assert stack("logs").stdout.splitlines() == ["db-1   | db-says-hi", "web-1  | web-says-hi"]
    assert stack("logs", "--no-log-prefix", "db").stdout == "db-says-hi\n"


def test_a_second_ctrl_c_kills_what_a_graceful_stop_still_waits_for(
        stack: StackCli, tmp_path: Path, on_terminal: Callable[..., Terminal]) -> None:
    (tmp_path / "proj" / "compose.yaml").write_text("""
services:
  stubborn:
    image: busybox
    command: sh -c 'trap "echo ignoring-term" TERM; echo ready; while true; do sleep 1; done'
    stop_grace_period: 2m
""")
    terminal = on_terminal("up")
    terminal.read_until("ready")
    terminal.interrupt()
    terminal.read_until("Container proj-stubborn-1  Stopping")
    began = time.monotonic()
    terminal.interrupt()
    assert terminal.finish() == 130
    assert time.monotonic() - began < 60  # not the two minutes of grace
    assert " Container proj-stubborn-1  \x1b[32mKilled\x1b[0m" in terminal.output
    assert states(stack) == {"proj-stubborn-1": "exited"}


def test_down_rmi_removes_the_services_images_but_keeps_one_another_project_uses(
        stack: StackCli, other: StackCli, tmp_path: Path) -> None:
    stack("image", "tag", "busybox", "rmi-web:1")
    stack("image", "tag", "busybox", "rmi-shared:1")
    (tmp_path / "proj" / "compose.yaml").write_text(
        STACK.replace("IMAGE", "rmi-web:1", 1).replace("IMAGE", "rmi-shared:1"))
    write(tmp_path / "other", "rmi-shared:1")
    stack("up", "-d")
    other("up", "-d")
    local = stack("down", "--rmi", "local")  # no service was built: no image goes
    assert "Image" not in local.stderr
    stack("up", "-d")
    down = stack("down", "--rmi", "all")
    assert " Image rmi-web:1  Removing\n Image rmi-web:1  Removed\n" in down.stderr
    assert "WARN image rmi-shared:1 is still used by other-db-1, other-web-1: kept" \
        in down.stderr
    images = stack("image", "ls").stdout
    assert "rmi-web" not in images and "rmi-shared" in images and "busybox" in images
    other("down", "--rmi", "all")
    assert "rmi-shared" not in stack("image", "ls").stdout
