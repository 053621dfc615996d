"""The real CLI against a real stackd: `--progress` modes, compose's live display and colored
log prefixes on a terminal (a pseudo-terminal here), attached `up`'s Ctrl-C, `down --rmi`."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.host_network import root_leftovers

pytestmark = pytest.mark.slow

Stack = Callable[..., subprocess.CompletedProcess[str]]
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

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        master, slave = pty.openpty()
        self.master = master
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli.main", *args], cwd=cwd, env=env,
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
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
def env(container_root: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "STACK_ROOT": str(container_root),
            "STACK_SOCKET": str(tmp_path / "stack.sock"),
            "STACK_ADDRESS_POOLS": f"{POOL_PREFIX}0.0/16:24"}


@pytest.fixture
def stack(env: dict[str, str], tmp_path: Path, container_root: Path) -> Iterator[Stack]:
    (tmp_path / "proj").mkdir()
    (tmp_path / "other").mkdir()
    terminals: list[Terminal] = []

    def run(*args: str, check: bool = True, cwd: str = "proj") -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args],
                                cwd=tmp_path / cwd, env=env, capture_output=True, text=True,
                                timeout=120)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def on_terminal(*args: str) -> Terminal:
        terminal = Terminal(list(args), tmp_path / "proj", env)
        terminals.append(terminal)
        return terminal

    run.on_terminal = on_terminal  # type: ignore[attr-defined]
    try:
        yield run
    finally:
        for terminal in terminals:
            terminal.close()
        for project in ("proj", "other"):
            if (tmp_path / project / "compose.yaml").exists():
                with contextlib.suppress(subprocess.TimeoutExpired):  # the engine goes
                    run("down", check=False, cwd=project)
        for tag in ("rmi-web:1", "rmi-shared:1"):
            run("image", "rm", tag, check=False)
        run("engine", "stop", check=False)
    assert root_leftovers(container_root) == []


def write(directory: Path, image: str = "busybox") -> None:
    (directory / "compose.yaml").write_text(STACK.replace("IMAGE", image))


def states(stack: Stack) -> dict[str, str]:
    return {c["name"]: c["state"]
            for c in json.loads(stack("ps", "-a", "--format", "json").stdout)}


def test_progress_modes_plain_json_quiet_as_options_or_environment(
        stack: Stack, tmp_path: Path) -> None:
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
        stack: Stack, tmp_path: Path) -> None:
    write(tmp_path / "proj")
    terminal = stack.on_terminal("up", "-d")  # type: ignore[attr-defined]
    assert terminal.finish() == 0
    screen = terminal.output
    assert "\x1b[?25h" in screen and re.search(r"\x1b\[\d+A", screen)  # redrawn in place
    final = ANSI.sub("", screen.rsplit("\x1b[0G", 1)[1]).replace("\r", "").splitlines()
    assert final[0] == "[+] Running 3/3"
    assert sorted(line.split("  ")[0] for line in final[1:]) == [
        " ✔ Container proj-db-1", " ✔ Container proj-web-1", " ✔ Network proj_default"]
    assert all(re.search(r"(Created|Started) +\d+\.\ds $", line) for line in final[1:])
    down = stack.on_terminal("--progress", "plain", "down")  # type: ignore[attr-defined]
    assert down.finish() == 0
    assert " Container proj-web-1  \x1b[32mRemoved\x1b[0m" in down.output
    assert "[+]" not in down.output


def test_attached_up_colors_prefixes_and_the_first_ctrl_c_stops_gracefully(
        stack: Stack, tmp_path: Path) -> None:
    write(tmp_path / "proj")
    terminal = stack.on_terminal("up")  # type: ignore[attr-defined]
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

    logs = stack.on_terminal("logs", "web")  # type: ignore[attr-defined]
    assert logs.finish() == 0
    assert "\x1b[36mweb-1  | \x1b[0mweb-says-hi" in logs.output
    monochrome = stack.on_terminal("logs", "--no-color", "web")  # type: ignore[attr-defined]
    assert monochrome.finish() == 0
    assert "web-1  | web-says-hi" in monochrome.output and "\x1b[36m" not in monochrome.output
    assert stack("logs").stdout.splitlines() == ["db-1   | db-says-hi", "web-1  | web-says-hi"]
    assert stack("logs", "--no-log-prefix", "db").stdout == "db-says-hi\n"


def test_a_second_ctrl_c_kills_what_a_graceful_stop_still_waits_for(
        stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "proj" / "compose.yaml").write_text("""
services:
  stubborn:
    image: busybox
    command: sh -c 'trap "echo ignoring-term" TERM; echo ready; while true; do sleep 1; done'
    stop_grace_period: 2m
""")
    terminal = stack.on_terminal("up")  # type: ignore[attr-defined]
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
        stack: Stack, tmp_path: Path) -> None:
    stack("image", "tag", "busybox", "rmi-web:1")
    stack("image", "tag", "busybox", "rmi-shared:1")
    (tmp_path / "proj" / "compose.yaml").write_text(
        STACK.replace("IMAGE", "rmi-web:1", 1).replace("IMAGE", "rmi-shared:1"))
    write(tmp_path / "other", "rmi-shared:1")
    stack("up", "-d")
    stack("up", "-d", cwd="other")
    local = stack("down", "--rmi", "local")  # no service was built: no image goes
    assert "Image" not in local.stderr
    stack("up", "-d")
    down = stack("down", "--rmi", "all")
    assert " Image rmi-web:1  Removing\n Image rmi-web:1  Removed\n" in down.stderr
    assert "WARN image rmi-shared:1 is still used by other-db-1, other-web-1: kept" \
        in down.stderr
    images = stack("image", "ls").stdout
    assert "rmi-web" not in images and "rmi-shared" in images and "busybox" in images
    stack("down", "--rmi", "all", cwd="other")
    assert "rmi-shared" not in stack("image", "ls").stdout
