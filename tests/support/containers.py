"""Running services as real containers in tests, the way the engine will.

`ServiceRunner` takes a service written as a stack file would write it (YAML
text), normalizes it with the real stack-file loader, creates the container
from the stored busybox image, and runs it; tests then look at what a user
would see: exit codes, output, files.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from orchestrator.runtime.containers.cgroupfs import detect_layout
from orchestrator.runtime.containers.log_reader import read_log
from orchestrator.runtime.containers.runtime import Container, ContainerRuntime
from orchestrator.runtime.containers.service_container import (
    create_service_container,
    start_container,
)
from orchestrator.runtime.containers.state import ContainerState, container_ids
from orchestrator.runtime.images.store import ImageStore
from orchestrator.runtime.network.manager import NetworkManager
from orchestrator.runtime.volumes import VolumeStore
from orchestrator.spec.discovery import ProjectOptions
from orchestrator.spec.loader import load_stack


@dataclass
class Ran:
    state: ContainerState
    stdout: str
    stderr: str

    @property
    def exit_code(self) -> int | None:
        return self.state.exit_code


TRAPS_SIGHUP = """
    services:
      app:
        image: busybox
        command: >-
          sh -c 'trap "echo hup; exit 7" HUP; echo ready;
          while :; do sleep 1 & wait; done'
"""
"""A service that prints "ready" once its trap is set, and exits 7 on SIGHUP."""


class ServiceRunner:
    def __init__(
        self, state_root: Path, project_dir: Path, project: str = "test",
        networks: NetworkManager | None = None,
    ):
        self.networks = networks
        self.state_root = state_root
        self.project_dir = project_dir
        self.project = project
        self.runtime = ContainerRuntime(state_root)
        self.images = ImageStore(state_root / "images")
        self.volumes = VolumeStore(state_root / "volumes")
        self.created: list[str] = []

    def model(self, stack_yaml: str) -> dict[str, Any]:
        """The normalized model of a stack file written by the test."""
        path = self.project_dir / "compose.yaml"
        path.write_text(textwrap.dedent(stack_yaml))
        options = ProjectOptions(
            files=[str(path)], project_name=self.project, cwd=str(self.project_dir)
        )
        return load_stack(options).model

    def create(self, stack_yaml: str, service: str | None = None, number: int = 1) -> Container:
        model = self.model(stack_yaml)
        name = service or next(iter(model["services"]))
        container = create_service_container(
            self.runtime, self.images, self.volumes, model["services"][name],
            project=self.project, project_dir=str(self.project_dir), service_name=name,
            number=number, project_model=model, project_environment=dict(os.environ),
            networks=self.networks,
        )
        self.created.append(container.id)
        return container

    async def create_networks(self, stack_yaml: str) -> None:
        """The stack's networks, as the engine will create them before its containers."""
        assert self.networks is not None
        for declaration in self.model(stack_yaml).get("networks", {}).values():
            ipam = declaration.get("ipam") or {}
            await self.networks.create(
                declaration["name"], ipam_config=ipam.get("config"),
                internal=bool(declaration.get("internal")),
                labels=declaration.get("labels"), driver_opts=declaration.get("driver_opts"),
            )

    async def start(
        self, stack_yaml: str, service: str | None = None, number: int = 1
    ) -> Container:
        if self.networks is not None:
            await self.create_networks(stack_yaml)
        container = self.create(stack_yaml, service, number)
        await start_container(self.runtime, self.networks, container.id)
        return self.runtime.get(container.id)

    async def run(self, stack_yaml: str, service: str | None = None, timeout: float = 20) -> Ran:
        container = await self.start(stack_yaml, service)
        with trio.fail_after(timeout):
            state = await self.runtime.wait(container.id)
        return Ran(state, *self.output(container.id))

    def output(self, container_id: str) -> tuple[str, str]:
        entries = read_log(self.runtime.root / container_id)
        stdout = "".join(e.text for e in entries if e.stream == "stdout")
        stderr = "".join(e.text for e in entries if e.stream == "stderr")
        return stdout, stderr

    async def exec(
        self, container: Container, argv: list[str], **overrides: Any
    ) -> tuple[int, str, str]:
        """Run argv in the container; (exit code, stdout, stderr)."""
        process = self.runtime.exec_process(self.runtime.get(container.id), argv, **overrides)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin = os.open("/dev/null", os.O_RDONLY)
        try:
            code = await self.runtime.exec(container.id, process, (stdin, out_w, err_w))
        finally:
            for fd in (stdin, out_w, err_w):
                os.close(fd)
        return code, _drain(out_r), _drain(err_r)

    async def remove_all(self) -> None:
        for container_id in container_ids(self.runtime.root):
            await self.runtime.remove(container_id, force=True)
            if self.networks is not None:
                await self.networks.release(container_id)
        for volume in self.volumes.list():
            self.volumes.remove(volume.name)


def _drain(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def remove_cgroup_parent() -> list[str]:
    """Remove this session's cgroup parent (STACK_CGROUP_PARENT); the container groups
    still in it, which should be none."""
    layout = detect_layout()
    left: set[str] = set()
    for directory in [*layout.controllers.values(), layout.unified or ""]:
        parent = Path(directory) / layout.base if directory else None
        if parent is None or not parent.is_dir():
            continue
        left.update(p.name for p in parent.iterdir() if p.is_dir())
        if not left:
            parent.rmdir()
    return sorted(left)
