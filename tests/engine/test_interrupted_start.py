"""An engine killed half-way through starting a container leaves it held before its
command, its network not plugged yet; the next engine finishes that start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from support.containers import ServiceRunner
from support.stack_cli import engine_env, engine_process

from orchestrator.runtime.network.manager import NetworkManager

pytestmark = [pytest.mark.slow, pytest.mark.trio]

POOLS = "10.233.0.0/16:24"
STACK = """
services:
  app:
    image: busybox
    command: ["sh", "-c", "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; echo ran; sleep 600"]
    stop_signal: SIGKILL
"""


async def test_the_next_engine_plugs_and_releases_a_container_left_held(
    container_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACK_ADDRESS_POOLS", POOLS)
    networks = NetworkManager(container_root)
    runner = ServiceRunner(container_root, project_dir=tmp_path, project="held",
                           networks=networks)
    await runner.create_networks(STACK)
    container = runner.create(STACK)
    # What an engine does first when it starts a container; it died before the rest.
    await runner.runtime.start(container.id, hold=True)
    await trio.sleep(0.3)
    assert runner.output(container.id) == ("", "")  # held: its command has not run
    assert await runner.runtime.held() == [container.id]

    env = engine_env(container_root, tmp_path / "stack.sock", POOLS)
    try:
        with engine_process(env, wait_for_socket=False) as daemon:
            deadline = time.monotonic() + 15
            while "ran" not in runner.output(container.id)[0]:
                assert daemon.poll() is None, "the engine did not start"
                assert time.monotonic() < deadline, "the held container never ran its command"
                await trio.sleep(0.05)
            stdout = runner.output(container.id)[0]
            assert stdout.startswith("inet 10.233."), stdout  # with its network, plugged
            assert await runner.runtime.held() == []
            assert runner.runtime.get(container.id).state.status == "running"
    finally:
        await runner.remove_all()
        for network in networks.list():
            if network.name.startswith("held_"):
                await networks.remove(network.name)
