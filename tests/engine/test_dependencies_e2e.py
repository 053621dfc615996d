"""Dependencies and concurrent `up`s, through the real CLI against a real stackd: a one-shot
dependency that fails keeps its dependents from starting and says why; two `up`s of one
project at once serialize into one set of containers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack_cli import StackCli, cli_engine

pytestmark = pytest.mark.slow

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
def stack(tmp_path: Path, container_root: Path) -> Iterator[StackCli]:
    project = tmp_path / "proj"
    project.mkdir()
    with cli_engine(container_root, tmp_path / "stack.sock", "10.234.0.0/16:24") as engine:
        yield engine.project(project)


def states(stack: StackCli) -> dict[str, str]:
    return {name: container["state"] for name, container in stack.containers().items()}


def test_a_failing_one_shot_dependency_keeps_its_dependents_from_starting(
    stack: StackCli, tmp_path: Path
) -> None:
    (tmp_path / "proj" / "compose.yaml").write_text(FAILING_MIGRATION)
    up = stack("up", "-d", check=False)
    assert up.returncode == 1
    assert ("service migrate didn't complete successfully: container proj-migrate-1 exited "
            "with code 3") in up.stderr
    assert states(stack) == {"proj-migrate-1": "exited", "proj-app-1": "created"}


def test_two_ups_of_one_project_at_once_make_one_set_of_containers(
    stack: StackCli, tmp_path: Path
) -> None:
    services = "".join(f"  s{i}:\n    image: busybox\n    command: sleep 600\n"
                       f"    stop_signal: SIGKILL\n" for i in range(6))
    (tmp_path / "proj" / "compose.yaml").write_text("services:\n" + services)
    stack("ls")  # the engine runs before both start
    ups = [stack.popen("up", "-d", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
    progress = []
    for up in ups:
        _, err = up.communicate(timeout=120)
        assert up.returncode == 0, err
        progress.append(err)
    assert states(stack) == {f"proj-s{i}-1": "running" for i in range(6)}
    # One of them did the work; the other, run after it, found nothing left to do.
    created = [err.count("  Created") for err in progress]
    assert sorted(created) == [0, 7], progress  # six containers and the network, once
