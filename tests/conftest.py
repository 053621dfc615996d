"""Real containers for the tests that run them (runtime, networks, engine): a busybox image, a
state root, a clean slate.

One state root and one keeper serve the whole session (starting a keeper is
the slowest part of a container's first start). After every test each
container is removed; at the end the keeper is stopped, and the session fails
if anything of ours is left: a process in our cgroups, a cgroup, a container
folder, a link or nftables table of any state root the session made (other
sessions' and engines' roots may have theirs on the host meanwhile).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from support.containers import ServiceRunner, remove_cgroup_parent
from support.host_network import session_leftovers
from support.images import busybox_image, write_docker_archive_classic

from orchestrator.runtime.containers.runtime import ContainerRuntime
from orchestrator.runtime.images.exchange import load_archive
from orchestrator.runtime.images.store import ImageStore

# This session's containers get their cgroups under a parent of its own, so the
# leak check below sees exactly them, whatever else runs on the machine.
os.environ["STACK_CGROUP_PARENT"] = f"stack/test-{os.getpid()}"


@pytest.fixture(scope="session", autouse=True)
def no_network_leftovers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    if os.geteuid() == 0:
        assert session_leftovers(tmp_path_factory.getbasetemp()) == {}, "host links left behind"


@pytest.fixture(scope="session", autouse=True)
def no_cgroup_leftovers() -> Iterator[None]:
    """The session's cgroup parent goes at the end of every session, also one that never
    made a container root (tests that create cgroups directly make the parent too)."""
    yield
    if os.geteuid() == 0:
        assert remove_cgroup_parent() == [], "cgroups left behind"


@pytest.fixture(scope="session")
def container_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("containers need root")
    root = tmp_path_factory.mktemp("stack-root")
    with ImageStore(root / "images") as store:
        archive = write_docker_archive_classic(root / "busybox.tar", [busybox_image()])
        load_archive(store, str(archive))
    yield root
    trio.run(ContainerRuntime(root).shutdown_keeper)
    assert remove_cgroup_parent() == [], "cgroups left behind"


@pytest.fixture
async def runner(container_root: Path, tmp_path: Path) -> AsyncIterator[ServiceRunner]:
    runner = ServiceRunner(container_root, project_dir=tmp_path)
    try:
        yield runner
    finally:
        await runner.remove_all()
    assert runner.runtime.list() == []
