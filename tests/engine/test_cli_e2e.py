"""The real CLI against a real stackd: up, ps, logs, down, ls, engine — as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.host_network import free_port
from support.stack_cli import StackCli, cli_engine

pytestmark = pytest.mark.slow

STACK = """
services:
  web:
    image: busybox
    command: >-
      sh -c 'mkdir -p /www && echo hi-from-web > /www/index.html &&
      httpd -f -p 8080 -h /www'
    ports: ["PORT:8080"]
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 1s
      start_interval: 100ms
      start_period: 10s
  client:
    image: busybox
    command: sh -c 'wget -qO- http://web:8080/; sleep 600'
    environment: {MODE: one}
    depends_on: {web: {condition: service_healthy}}
    stop_signal: SIGKILL
"""


@pytest.fixture
def stack(container_root: Path, tmp_path: Path) -> Iterator[StackCli]:
    project = tmp_path / "proj"
    project.mkdir()
    with cli_engine(container_root, tmp_path / "stack.sock", "10.218.0.0/16:24") as engine:
        yield engine.project(project)


def write(project: Path, port: int, mode: str = "one") -> None:
    text = STACK.replace("PORT", str(port)).replace("MODE: one", f"MODE: {mode}")
    (project / "compose.yaml").write_text(text)


def ids(stack: StackCli) -> dict[str, str]:
    return {c["name"]: c["id"] for c in json.loads(stack("ps", "--format", "json").stdout)}


def test_up_ps_logs_and_down_as_a_user_runs_them(stack: StackCli, tmp_path: Path) -> None:
    port = free_port()
    write(tmp_path / "proj", port)
    up = stack("up", "-d")
    assert " Container proj-web-1  Started" in up.stderr  # progress goes to stderr
    assert " Container proj-client-1  Started" in up.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
        assert answer.read() == b"hi-from-web\n"
    rows = stack("ps").stdout.splitlines()
    assert rows[0].split()[:3] == ["NAME", "IMAGE", "COMMAND"]
    assert any(r.startswith("proj-web-1") and "(healthy)" in r and f":{port}->8080/tcp" in r
               for r in rows)
    deadline = time.monotonic() + 10
    while "hi-from-web" not in stack("logs", "client").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert stack("logs", "client").stdout == "client-1  | hi-from-web\n"
    assert stack("logs", "--since", "10m", "client").stdout == "client-1  | hi-from-web\n"
    assert stack("logs", "--until", "10m", "client").stdout == ""
    assert stack("ps", "-q", "--status", "exited").stdout == ""
    assert len(stack("ps", "-q", "--status", "running").stdout.split()) == 2
    assert "proj" in stack("ls").stdout
    down = stack("down")
    assert " Network proj_default  Removed" in down.stderr
    assert json.loads(stack("ps", "-a", "--format", "json").stdout) == []


def test_up_twice_keeps_ids_and_an_edit_recreates_only_that_service(
    stack: StackCli, tmp_path: Path
) -> None:
    port = free_port()
    write(tmp_path / "proj", port)
    stack("up", "-d")
    first = ids(stack)
    again = stack("up", "-d")
    assert again.stdout == ""
    # Nothing to do; as compose, each container is shown running.
    assert " Container proj-web-1  Running" in again.stderr.splitlines()
    assert "Start" not in again.stderr and "Creat" not in again.stderr
    assert ids(stack) == first
    write(tmp_path / "proj", port, mode="two")
    dry = stack("up", "-d", "--dry-run")
    assert "Container proj-client-1  Recreate (environment.MODE changed)" in dry.stdout
    assert ids(stack) == first
    stack("up", "-d")
    after = ids(stack)
    assert after["proj-web-1"] == first["proj-web-1"]
    assert after["proj-client-1"] != first["proj-client-1"]


def test_scale_up_then_down_converges(stack: StackCli, tmp_path: Path) -> None:
    write(tmp_path / "proj", free_port())
    (tmp_path / "proj" / "compose.yaml").write_text(
        (tmp_path / "proj" / "compose.yaml").read_text().replace('    ports: ["', '    #')
    )
    stack("up", "-d", "--scale", "client=3")
    assert sorted(ids(stack)) == ["proj-client-1", "proj-client-2", "proj-client-3",
                                  "proj-web-1"]
    stack("up", "-d", "--scale", "client=1")
    assert sorted(ids(stack)) == ["proj-client-1", "proj-web-1"]


def test_killed_engine_leaves_containers_running_and_the_next_one_adopts_them(
    stack: StackCli, tmp_path: Path, container_root: Path
) -> None:
    write(tmp_path / "proj", free_port())
    stack("up", "-d")
    before = ids(stack)
    pid = int((container_root / "stackd.lock").read_text())
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert ids(stack) == before  # a new engine, the same running containers
    assert stack("up", "-d").stdout == ""
    assert ids(stack) == before


def test_attached_up_shows_output_and_exits_with_the_chosen_services_code(
    stack: StackCli, tmp_path: Path
) -> None:
    (tmp_path / "proj" / "compose.yaml").write_text("""
services:
  job:
    image: busybox
    command: sh -c 'echo working; sleep 0.5; exit 3'
  server:
    image: busybox
    command: sh -c 'echo serving; sleep 600'
    stop_signal: SIGKILL
""")
    up = stack("up", "--exit-code-from", "job", check=False)
    assert up.returncode == 3
    assert "job-1     | working" in up.stdout
    assert "server-1  | serving" in up.stdout
    states = {c["service"]: c["state"]
              for c in json.loads(stack("ps", "-a", "--format", "json").stdout)}
    assert states == {"job": "exited", "server": "exited"}


def test_engine_killed_in_the_middle_of_up_then_up_converges_without_duplicates(
    stack: StackCli, tmp_path: Path, container_root: Path
) -> None:
    services = "".join(
        f"  s{i}:\n    image: busybox\n    command: sleep 600\n    stop_signal: SIGKILL\n"
        for i in range(12)
    )
    (tmp_path / "proj" / "compose.yaml").write_text("services:\n" + services)
    stack("ls")  # the engine runs
    pid = int((container_root / "stackd.lock").read_text())
    up = stack.popen("up", "-d", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while "Created" not in (up.stderr.readline() if up.stderr else ""):
        assert time.monotonic() < deadline
    os.kill(pid, 9)
    up.wait(20)
    stack("up", "-d")
    containers = json.loads(stack("ps", "-a", "--format", "json").stdout)
    assert sorted(c["name"] for c in containers) == sorted(f"proj-s{i}-1" for i in range(12))
    assert all(c["state"] == "running" for c in containers)
    assert not [p for p in (container_root / "containers").iterdir()
                if p.name.startswith((".new-", ".removing-"))]


def test_unless_stopped_container_the_user_stopped_stays_stopped_across_an_engine_restart(
    stack: StackCli, tmp_path: Path, container_root: Path
) -> None:
    (tmp_path / "proj" / "compose.yaml").write_text("""
services:
  app:
    image: busybox
    command: sleep 600
    restart: unless-stopped
    stop_signal: SIGKILL
""")
    stack("up", "-d")
    stack("stop", "app")
    stack("engine", "stop")
    containers = json.loads(stack("ps", "-a", "--format", "json").stdout)  # a new engine
    assert [c["state"] for c in containers] == ["exited"]
