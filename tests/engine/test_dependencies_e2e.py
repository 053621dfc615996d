"""Dependencies and concurrent `up`s, through the real CLI against a real stackd: a one-shot
dependency that fails keeps its dependents from starting and says why; two `up`s of one
project at once serialize into one set of containers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.host_network import root_leftovers

pytestmark = pytest.mark.slow

Stack = Callable[..., subprocess.CompletedProcess[str]]

FAILING_MIGRATION = """
services:
  migrate:
    image: busybox
    command: ["sh", "-c", "echo migrating; exit 3"]
    network_mode: none
  app:
    image: busybox
    command: sleep 600
    network_mode: none
    stop_signal: SIGKILL
    depends_on:
      migrate: {condition: service_completed_successfully}
"""


@pytest.fixture
def env(container_root: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "STACK_ROOT": str(container_root),
            "STACK_SOCKET": str(tmp_path / "stack.sock"),
            "STACK_ADDRESS_POOLS": "10.234.0.0/16:24"}


@pytest.fixture
def stack(env: dict[str, str], tmp_path: Path, container_root: Path) -> Iterator[Stack]:
    project = tmp_path / "proj"
    project.mkdir()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args],
                                cwd=project, env=env, capture_output=True, text=True,
                                timeout=120)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    try:
        yield run
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):  # the engine goes regardless
            run("down", check=False)
        run("engine", "stop", check=False)
    assert root_leftovers(container_root) == []


def states(stack: Stack) -> dict[str, str]:
    return {c["name"]: c["state"]
            for c in json.loads(stack("ps", "-a", "--format", "json").stdout)}


def test_a_failing_one_shot_dependency_keeps_its_dependents_from_starting(
    stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "proj" / "compose.yaml").write_text(FAILING_MIGRATION)
    up = stack("up", "-d", check=False)
    assert up.returncode == 1
    assert ("service migrate didn't complete successfully: container proj-migrate-1 exited "
            "with code 3") in up.stderr
    assert states(stack) == {"proj-migrate-1": "exited", "proj-app-1": "created"}


def test_two_ups_of_one_project_at_once_make_one_set_of_containers(
    stack: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    services = "".join(f"  s{i}:\n    image: busybox\n    command: sleep 600\n"
                       f"    stop_signal: SIGKILL\n" for i in range(6))
    (tmp_path / "proj" / "compose.yaml").write_text("services:\n" + services)
    stack("ls")  # the engine runs before both start
    ups = [subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "up", "-d"],
                            cwd=tmp_path / "proj", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
    progress = []
    for up in ups:
        _, err = up.communicate(timeout=120)
        assert up.returncode == 0, err
        progress.append(err)
    assert states(stack) == {f"proj-s{i}-1": "running" for i in range(6)}
    # One of them did the work; the other, run after it, found nothing left to do.
    created = [err.count("  Created") for err in progress]
    assert sorted(created) == [0, 7], progress  # six containers and the network, once
