"""The verbs that act on a stack's existing containers — start, stop, restart, kill, rm,
pause, unpause, top, port, wait, events, images, cp — through the real CLI and a real stackd."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute
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
    restart: always
    tmpfs: [/scratch]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 1s
      start_interval: 100ms
      start_period: 10s
  worker:
    image: busybox
    command: sh -c 'while true; do echo tick; sleep 0.2; done'
    volumes: [/cache]
    stop_grace_period: 1s
    restart: always
    depends_on: {web: {condition: service_healthy}}
  job:
    image: busybox
    command: sh -c 'sleep 6; exit 3'
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    return folder


@pytest.fixture
def stack(container_root: Path, tmp_path: Path, project: Path) -> Iterator[StackCli]:
    bridges: list[str] = []
    with cli_engine(container_root, tmp_path / "stack.sock", "10.237.0.0/16:24") as engine:
        try:
            yield engine.project(project)
        finally:
            record = container_root / "networks" / "proj_default.json"
            if record.exists():
                bridges.append(json.loads(record.read_text()).get("bridge", ""))
    with IPRoute() as ip:  # this project's bridge is gone, by the name it was given
        assert not [b for b in bridges if b and ip.link_lookup(ifname=b)]


def write(project: Path, port: int) -> None:
    (project / "compose.yaml").write_text(STACK.replace("PORT", str(port)))


def healthy(stack: StackCli) -> bool:
    """The web server answers its own healthcheck (from inside: no host NAT involved)."""
    return stack.containers()["proj-web-1"]["health"] == "healthy"


def ticks(stack: StackCli) -> int:
    return stack("logs", "worker").stdout.count("tick")


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def running(stack: StackCli, project: Path) -> int:
    port = free_port()
    write(project, port)
    stack("up", "-d")
    return port


def test_stop_then_start_keeps_the_containers_and_no_restart_policy_undoes_the_stop(
    stack: StackCli, running: int
) -> None:
    before = {name: c["id"] for name, c in stack.containers().items()}
    stop = stack("stop", "web", "worker").stderr.splitlines()  # progress: stderr
    # Dependents first: the worker is stopped before the web server it needs.
    assert stop.index(" Container proj-worker-1  Stopped") < stop.index(
        " Container proj-web-1  Stopping")
    assert " Container proj-web-1  Stopped" in stop
    time.sleep(1.5)  # `restart: always` would have brought them back by now
    states = {name: c["state"] for name, c in stack.containers().items()}
    assert states["proj-web-1"] == "exited" and states["proj-worker-1"] == "exited"

    start = stack("start").stderr.splitlines()
    assert start.index(" Container proj-web-1  Started") < start.index(
        " Container proj-worker-1  Started")
    assert " Container proj-web-1  Healthy" in start  # the worker waited for it
    assert {name: c["id"] for name, c in stack.containers().items()} == before
    assert healthy(stack)


def test_restart_with_a_timeout_starts_the_container_again(
    stack: StackCli, running: int
) -> None:
    first = stack.containers()["proj-worker-1"]["started_at"]
    restart = stack("restart", "-t", "1", "worker").stderr
    assert restart == " Container proj-worker-1  Restarting\n Container proj-worker-1  Started\n"
    after = stack.containers()["proj-worker-1"]
    assert after["state"] == "running" and after["started_at"] > first


def test_pause_freezes_a_container_and_unpause_thaws_it(
    stack: StackCli, running: int
) -> None:
    assert stack("pause", "worker").stderr == (" Container proj-worker-1  Pausing\n"
                                               " Container proj-worker-1  Paused\n")
    assert stack.containers()["proj-worker-1"]["state"] == "paused"
    frozen = ticks(stack)
    time.sleep(1.0)
    assert ticks(stack) == frozen
    assert stack("unpause").stderr == (" Container proj-worker-1  Unpausing\n"
                                       " Container proj-worker-1  Unpaused\n")
    assert stack.containers()["proj-worker-1"]["state"] == "running"
    eventually(lambda: ticks(stack) > frozen)


def test_kill_stops_a_container_for_good(stack: StackCli, running: int) -> None:
    kill = stack("kill", "-s", "SIGKILL", "worker").stderr
    assert kill == " Container proj-worker-1  Killing\n Container proj-worker-1  Killed\n"
    time.sleep(1.5)
    assert stack.containers()["proj-worker-1"]["state"] == "exited"  # despite `restart: always`
    refused = stack("kill", "-s", "NOSUCHSIGNAL", check=False)
    assert refused.returncode == 1 and "NOSUCHSIGNAL" in refused.stderr


def test_rm_removes_only_stopped_containers(stack: StackCli, running: int) -> None:
    anonymous = set(stack("volume", "ls", "-q").stdout.split())  # with the worker's /cache
    nothing = stack("rm", "-f", "web")
    assert nothing.stdout == "" and "No stopped containers" in nothing.stderr
    stack("stop", "worker")
    declined = stack("rm", "worker", stdin="n\n")
    assert "Going to remove proj-worker-1" in declined.stdout
    assert "proj-worker-1" in stack.containers()
    removed = stack("rm", "-f", "worker")
    assert removed.stdout == "Going to remove proj-worker-1\n"
    assert removed.stderr == (" Container proj-worker-1  Removing\n"
                              " Container proj-worker-1  Removed\n")
    assert "proj-worker-1" not in stack.containers()
    assert set(stack("volume", "ls", "-q").stdout.split()) == anonymous  # no -v: kept
    stack("up", "-d", "worker")
    assert len(set(stack("volume", "ls", "-q").stdout.split()) - anonymous) == 1
    stack("rm", "-s", "-f", "-v", "worker")
    assert set(stack("volume", "ls", "-q").stdout.split()) == anonymous
    both = stack("rm", "-s", "-f", "-v", "web").stderr
    assert " Container proj-web-1  Stopped" in both and " Container proj-web-1  Removed" in both
    assert sorted(stack.containers()) == ["proj-job-1"]


def test_top_port_and_images_describe_the_running_containers(
    stack: StackCli, running: int
) -> None:
    top = stack("top", "web").stdout.splitlines()
    assert top[0] == "proj-web-1"
    assert top[1].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    httpd = next(line for line in top[2:] if "httpd -f -p 8080" in line)
    assert httpd.split()[0] == "root" and httpd.split()[5] == "?"

    assert stack("port", "web", "8080").stdout == f"0.0.0.0:{running}\n"
    missing = stack("port", "web", "9999", check=False)
    assert missing.returncode == 1 and "no port 9999/tcp" in missing.stderr
    assert stack("port", "nosuch", "80", check=False).returncode == 1

    images = stack("images").stdout.splitlines()
    assert images[0].split() == ["CONTAINER", "REPOSITORY", "TAG", "IMAGE", "ID", "SIZE"]
    row = next(line for line in images if line.startswith("proj-web-1 ")).split()
    assert row[1:3] == ["busybox", "latest"] and len(row[3]) == 12
    only = json.loads(stack("images", "--format", "json", "worker").stdout)
    assert [r["container"] for r in only] == ["proj-worker-1"]


def test_wait_exits_with_the_containers_exit_code(stack: StackCli, running: int) -> None:
    waited = stack("wait", "job", check=False)
    assert waited.stdout == 'container "proj-job-1" exited with status code 3\n'
    assert waited.returncode == 3
    nothing = stack("wait", "job", check=False)
    assert nothing.returncode == 1 and "no running containers" in nothing.stderr

    stack("start", "job")
    down = stack("wait", "--down-project", "job", "worker", check=False)
    assert down.returncode == 3  # the first to stop ended it, and the project with it
    assert " Network proj_default  Removed" in down.stderr
    assert stack.containers() == {}


def test_events_stream_what_the_verbs_do(stack: StackCli, running: int) -> None:
    watcher = stack.popen("events", "--json", "worker", stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # let it subscribe
        stack("stop", "worker")
        stack("start", "worker")
        stack("pause", "worker")
        stack("unpause", "worker")
        seen: list[str] = []
        assert watcher.stdout is not None
        while "unpause" not in seen:
            event = json.loads(watcher.stdout.readline())
            assert event["service"] == "worker" and event["type"] == "container"
            assert event["attributes"]["name"] == "proj-worker-1"
            seen.append(event["action"])
        assert seen[:2] == ["die", "stop"] and "start" in seen and "pause" in seen
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


def test_cp_copies_both_ways_and_sees_the_containers_mounts(
    stack: StackCli, running: int, project: Path
) -> None:
    (project / "note.txt").write_text("a note\n")
    tree = project / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "deep.txt").write_text("deep\n")
    os.symlink("sub/deep.txt", tree / "link")

    stack("cp", "note.txt", "web:/scratch/")  # a tmpfs: only the container's view has it
    stack("cp", "web:/scratch/note.txt", "back.txt")
    assert (project / "back.txt").read_text() == "a note\n"

    stack("cp", "tree", "web:/copied")  # a directory to a new name
    stack("cp", "web:/copied", "out")
    assert (project / "out" / "sub" / "deep.txt").read_text() == "deep\n"
    assert os.readlink(project / "out" / "link") == "sub/deep.txt"
    stack("cp", "proj-web-1:/copied/.", "contents")  # a container by name; `dir/.`
    assert sorted(os.listdir(project / "contents")) == ["link", "sub"]

    archive = stack("cp", "web:/www/index.html", "-").stdout
    assert "hi-from-web" in archive  # a tar on stdout
    missing = stack("cp", "web:/nothing/here", "x", check=False)
    assert missing.returncode == 1 and "could not find /nothing/here" in missing.stderr
    stack("stop", "web")
    stopped = stack("cp", "note.txt", "web:/tmp/", check=False)
    assert stopped.returncode == 1 and "no running container" in stopped.stderr
