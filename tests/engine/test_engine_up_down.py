"""`up` and `down` through the engine library, with real containers and networks."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from support.host_network import root_leftovers

from orchestrator.engine.engine import Engine
from orchestrator.engine.planner import UpOptions
from orchestrator.engine.projects import ProjectRecord
from orchestrator.spec.discovery import ProjectOptions
from orchestrator.spec.loader import load_stack

pytestmark = pytest.mark.trio


@pytest.fixture
async def engine(container_root: Path, nursery: trio.Nursery,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    monkeypatch.setenv("STACK_ADDRESS_POOLS", "10.217.0.0/16:24")
    engine = Engine(container_root)
    await nursery.start(engine.run)
    try:
        yield engine
    finally:
        for project in engine.projects.names():
            await engine.down(project, _ignore, volumes=True)
        nursery.cancel_scope.cancel()
    assert root_leftovers(container_root) == []


async def _ignore(event: dict[str, Any]) -> None:
    pass


def record(tmp_path: Path, text: str, name: str) -> ProjectRecord:
    (tmp_path / "compose.yaml").write_text(text)
    stack = load_stack(ProjectOptions(files=[str(tmp_path / "compose.yaml")], project_name=name,
                                      cwd=str(tmp_path)))
    hashes = {service: stack.config_hash(service) for service in stack.model["services"]}
    return ProjectRecord(stack.name, stack.model, hashes, str(tmp_path))


STACK = """
services:
  db:
    image: busybox
    command: sh -c 'touch /tmp/ready; sleep 600'
    stop_signal: SIGKILL  # sleep as PID 1 ignores SIGTERM: do not wait out the grace period
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      start_interval: 200ms
      start_period: 5s
  web:
    image: busybox
    command: sleep 600
    stop_signal: SIGKILL
    environment: {DEBUG: "0"}
    depends_on: {db: {condition: service_healthy}}
"""


async def test_up_twice_changes_nothing_and_an_edit_recreates_only_that_service(
    engine: Engine, tmp_path: Path
):
    name = f"e{secrets.token_hex(3)}"
    events: list[dict[str, Any]] = []

    async def emit(event: dict[str, Any]) -> None:
        events.append(event)

    assert await engine.up(record(tmp_path, STACK, name), UpOptions(), emit)
    first = {c.name: c.id for c in engine.containers(name)}
    assert sorted(first) == [f"{name}-db-1", f"{name}-web-1"]
    assert all(c.state.status == "running" for c in engine.containers(name))

    events.clear()
    assert await engine.up(record(tmp_path, STACK, name), UpOptions(), emit)
    assert {c.name: c.id for c in engine.containers(name)} == first
    assert [e for e in events if e.get("action") in ("create", "remove", "stop")] == []

    edited = STACK.replace('DEBUG: "0"', 'DEBUG: "1"')
    assert await engine.up(record(tmp_path, edited, name), UpOptions(), emit)
    after = {c.name: c.id for c in engine.containers(name)}
    assert after[f"{name}-db-1"] == first[f"{name}-db-1"]
    assert after[f"{name}-web-1"] != first[f"{name}-web-1"]

    assert await engine.down(name, emit)
    assert engine.containers(name) == []
    assert not [n for n in engine.networks.list() if n.name.startswith(name)]
