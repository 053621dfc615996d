"""`stack exec` and `stack run`: the real CLI against a real stackd, as a user types them —
on pipes, and on a terminal of its own."""

from __future__ import annotations

import fcntl
import json
import os
import select
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.stack_cli import StackCli, cli_engine

from orchestrator.runtime.network import links

pytestmark = pytest.mark.slow

STACK = """
services:
  app:
    image: busybox
    command: sleep 600
    working_dir: /srv
    environment: {BASE: from-service}
    stop_signal: SIGKILL
    depends_on:
      db: {condition: service_healthy}
  db:
    image: busybox
    command: sleep 600
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      start_interval: 100ms
      start_period: 10s
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "compose.yaml").write_text(STACK)
    return folder


@pytest.fixture
def stack(project: Path, container_root: Path, tmp_path: Path) -> Iterator[StackCli]:
    with cli_engine(container_root, tmp_path / "stack.sock", "10.226.0.0/16:24") as engine:
        try:
            yield engine.project(project)
        finally:
            made = host_links(container_root)
    # Only this state root's links: other engines on the host may have theirs.
    assert made and set(made).isdisjoint(links.our_links())


def host_links(root: Path) -> list[str]:
    """The bridges and veths this state root's networks have on the host."""
    names = []
    for path in (root / "networks").glob("*.json"):
        network = json.loads(path.read_text())
        names.append(network["bridge"])
        names += [endpoint["veth"] for endpoint in network["endpoints"].values()]
    return names


def containers(stack: StackCli) -> list[dict[str, Any]]:
    return list(stack.containers().values())


def on_terminal(stack: StackCli, args: list[str],
                replies: dict[bytes, bytes], size: tuple[int, int] = (33, 101),
                resize_to: tuple[int, int] | None = None) -> tuple[int, str, bool]:
    """Run the CLI with a terminal as its stdin, stdout and stderr (and controlling
    terminal); answer each prompt in `replies` when it appears, resizing the window first
    when asked. (exit code, screen, whether the terminal was left cooked and echoing)"""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    process = stack.popen(
        *args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    screen = b""
    pending = dict(replies)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the CLI closed the terminal's last slave end
                    break
                screen += chunk
                for prompt in [p for p in pending if p in screen]:
                    if resize_to:
                        fcntl.ioctl(master, termios.TIOCSWINSZ,
                                    struct.pack("HHHH", *resize_to, 0, 0))
                        resize_to = None
                        time.sleep(0.3)  # the resize frame goes before the typing
                    os.write(master, pending.pop(prompt))
            elif process.poll() is not None:
                break
        code = process.wait(timeout=10)
        flags = termios.tcgetattr(master)[3]
        cooked = bool(flags & termios.ICANON and flags & termios.ECHO)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, screen.decode(errors="replace"), cooked


# --- exec -----------------------------------------------------------------------------------


def test_exec_prints_the_output_and_exits_with_the_command_s_code(stack: StackCli) -> None:
    stack("up", "-d")
    done = stack("exec", "-T", "app", "sh", "-c", "pwd; echo $BASE; echo oops >&2; exit 3",
                 check=False)
    assert done.returncode == 3
    assert done.stdout == "/srv\nfrom-service\n"
    assert done.stderr == "oops\n"
    piped = stack("exec", "-T", "app", "sh", "-c", "cat; echo end", stdin="through stdin\n")
    assert piped.stdout == "through stdin\nend\n"


def test_exec_takes_environment_working_dir_and_user(stack: StackCli) -> None:
    stack("up", "-d")
    done = stack("exec", "-T", "-e", "EXTRA=added", "-e", "BASE=replaced", "-w", "/tmp",
                 "-u", "nobody", "app", "sh", "-c", "pwd; echo $BASE $EXTRA; id -u; id -g")
    assert done.stdout.split() == ["/tmp", "replaced", "added", "65534", "65534"]


def test_exec_on_a_terminal_has_a_tty_of_the_window_s_size_and_passes_keys(
    stack: StackCli,
) -> None:
    stack("up", "-d")
    code, screen, cooked = on_terminal(
        stack,
        ["exec", "app", "sh", "-c",
         "test -t 0 && test -t 1 && echo on-a-terminal; stty size; echo READY;"
         " read line; echo got-$line; stty size; exit 5"],
        {b"READY": b"typed\r"}, resize_to=(40, 120))
    assert code == 5, screen
    assert "on-a-terminal\r\n33 101\r\n" in screen
    assert "got-typed\r\n40 120\r\n" in screen
    assert cooked


def test_exec_of_a_missing_or_unexecutable_binary_fails_like_docker(stack: StackCli) -> None:
    stack("up", "-d")
    missing = stack("exec", "-T", "app", "nosuch", check=False)
    assert missing.returncode == 127
    assert 'exec: "nosuch": executable file not found in $PATH' in missing.stderr
    not_executable = stack("exec", "-T", "app", "/etc/passwd", check=False)
    assert not_executable.returncode == 126
    assert "permission denied" in not_executable.stderr
    assert stack("exec", "-T", "app", "echo", "still fine").stdout == "still fine\n"


def test_exec_detached_returns_at_once_and_the_command_runs_on(stack: StackCli) -> None:
    stack("up", "-d")
    started = time.monotonic()
    stack("exec", "-d", "app", "sh", "-c", "sleep 1; touch /srv/done")
    assert time.monotonic() - started < 1
    deadline = time.monotonic() + 10
    while stack("exec", "-T", "app", "ls", "/srv/done", check=False).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_exec_into_a_service_that_is_not_running_says_so(stack: StackCli) -> None:
    stack("up", "-d", "db")
    refused = stack("exec", "-T", "app", "true", check=False)
    assert refused.returncode == 1
    assert 'service "app" is not running' in refused.stderr
    second = stack("exec", "-T", "--index", "2", "db", "true", check=False)
    assert 'service "db" is not running container #2' in second.stderr


# --- run ------------------------------------------------------------------------------------


def test_run_rm_exits_with_the_container_s_code_and_leaves_nothing(stack: StackCli) -> None:
    done = stack("run", "--rm", "-T", "-e", "EXTRA=added", "app",
                 "sh", "-c", "echo $BASE $EXTRA; cat; exit 7", check=False, stdin="in\n")
    assert done.returncode == 7, done.stderr
    assert done.stdout == "from-service added\nin\n"
    assert [c for c in containers(stack) if c["oneoff"]] == []


def test_run_brings_its_dependencies_up_first(stack: StackCli) -> None:
    done = stack("run", "--rm", "-T", "app", "sh", "-c", "ping -c1 -W2 db >/dev/null && echo up")
    assert done.stdout == "up\n"
    assert " Container proj-db-1  Started" in done.stderr
    (db,) = containers(stack)
    assert (db["name"], db["state"], db["health"]) == ("proj-db-1", "running", "healthy")


def test_run_no_deps_starts_nothing_else(stack: StackCli) -> None:
    done = stack("run", "--rm", "--no-deps", "-T", "app", "echo", "alone")
    assert done.stdout == "alone\n"
    assert containers(stack) == []


def test_run_makes_the_volumes_and_networks_of_its_service_first(
    stack: StackCli, project: Path
) -> None:
    mount = "    working_dir: /srv\n    volumes: [data:/data]\n"
    with_data = STACK.replace("    working_dir: /srv\n", mount)
    (project / "compose.yaml").write_text(with_data + "volumes:\n  data: {}\n")
    stack("run", "--rm", "--no-deps", "-T", "app", "sh", "-c", "echo kept > /data/note")
    again = stack("run", "--rm", "--no-deps", "-T", "app", "cat", "/data/note")
    assert again.stdout == "kept\n"
    assert "proj_data" in stack("volume", "ls", "-q").stdout.split()
    networks = stack("network", "ls", "--format", "json").stdout.splitlines()
    assert "proj_default" in {json.loads(line)["Name"] for line in networks}


def test_run_detached_prints_the_id_of_a_named_one_off_container(stack: StackCli) -> None:
    started = stack("run", "-d", "--no-deps", "--entrypoint", "sh -c", "app", "echo by-entrypoint")
    container_id = started.stdout.strip()
    assert len(container_id) == 64 and int(container_id, 16) >= 0
    (oneoff,) = containers(stack)
    assert oneoff["id"] == container_id
    assert oneoff["oneoff"] and oneoff["name"].startswith("proj-app-run-")
    assert len(oneoff["name"]) == len("proj-app-run-") + 12
    assert oneoff["labels"]["com.docker.compose.oneoff"] == "True"
    deadline = time.monotonic() + 10
    while "by-entrypoint" not in stack("logs", "app").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    named = stack("run", "-d", "--no-deps", "--name", "my-job", "app", "true")
    assert {c["name"] for c in containers(stack)} == {oneoff["name"], "my-job"}
    assert named.stdout.strip() in {c["id"] for c in containers(stack)}


def test_run_of_a_missing_binary_exits_127_and_rm_removes_it(stack: StackCli) -> None:
    failed = stack("run", "--rm", "--no-deps", "-T", "app", "nosuch", check=False)
    assert failed.returncode == 127
    assert 'exec: "nosuch": executable file not found in $PATH' in failed.stderr
    assert containers(stack) == []


def test_run_on_a_terminal_gets_a_tty(stack: StackCli) -> None:
    code, screen, cooked = on_terminal(
        stack,
        ["run", "--rm", "--no-deps", "app", "sh", "-c",
         "test -t 0 && echo on-a-terminal; echo READY; read line; echo got-$line; exit 4"],
        {b"READY": b"keys\r"})
    assert code == 4, screen
    assert "on-a-terminal\r\n" in screen
    assert "got-keys\r\n" in screen
    assert cooked
    assert containers(stack) == []
