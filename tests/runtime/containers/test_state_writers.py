"""Two processes change a container's `state.json`: the keeper (start, exit) and the engine
(stopped by the user, pause, unpause). Whatever order their changes come in, none is lost:
an exit recorded by the keeper is never undone by the engine writing back what it read."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from support.containers import ServiceRunner

from orchestrator.runtime.containers.runtime import ContainerError
from orchestrator.runtime.containers.state import ContainerDir

pytestmark = pytest.mark.trio

# Exits with 7 on SIGTERM; `wait` lets the trap run at once, unlike a foreground sleep.
EXITS_7_ON_TERM = """
    services:
      app:
        image: busybox
        command: ["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 1 & wait; done"]
"""


def _hammer(action: Callable[[int], None], stop: threading.Event) -> None:
    """Call `action(0)`, `action(1)`, ... as fast as it goes until told to stop."""
    calls = 0
    while not stop.is_set():
        with contextlib.suppress(ContainerError, OSError):
            action(calls)
        calls += 1


async def test_an_exit_is_kept_while_the_engine_marks_the_container_again_and_again(
    runner: ServiceRunner,
):
    for _ in range(5):
        container = await runner.start("""
            services:
              app: {image: busybox, command: sh -c 'sleep 0.2; exit 7'}
        """)
        stop = threading.Event()

        def toggle(i: int, container_id: str = container.id) -> None:
            runner.runtime.mark_stopped_by_user(container_id, i % 2 == 0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, _hammer, toggle, stop)
            try:
                with trio.fail_after(20):
                    await runner.runtime.wait(container.id)
            finally:
                stop.set()
        state = runner.runtime.get(container.id).state
        assert (state.status, state.exit_code, state.pid) == ("exited", 7, 0)
        assert state.finished_at is not None
        await runner.runtime.remove(container.id)


async def test_an_exit_is_kept_while_the_engine_pauses_and_unpauses(runner: ServiceRunner):
    for _ in range(5):
        container = await runner.start("""
            services:
              app: {image: busybox, command: sh -c 'sleep 0.2; exit 7'}
        """)
        with trio.fail_after(20):
            while runner.runtime.get(container.id).state.status == "running":
                with contextlib.suppress(ContainerError, OSError):
                    await runner.runtime.pause(container.id)
                with contextlib.suppress(ContainerError, OSError):
                    await runner.runtime.unpause(container.id)
            await runner.runtime.wait(container.id)
        state = runner.runtime.get(container.id).state
        assert (state.status, state.exit_code, state.pid) == ("exited", 7, 0)
        await runner.runtime.remove(container.id)


def _lock_waiters(path: Path) -> set[int]:
    """Pids blocked (as /proc/locks lists them) waiting for a flock on the folder at `path`."""
    stat = os.stat(path)
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    with open("/proc/locks") as locks:
        rows = [line.split() for line in locks]
    return {int(r[5]) for r in rows if len(r) > 6 and r[1:3] == ["->", "FLOCK"] and r[6] == inode}


async def _until_waiting(path: Path, pid: int) -> None:
    with trio.fail_after(10):
        while pid not in _lock_waiters(path):
            await trio.sleep(0.01)


@pytest.mark.parametrize("engine_change", ["stopped by user", "unpause"])
async def test_engine_and_keeper_wait_for_each_other_and_both_changes_are_kept(
    runner: ServiceRunner, engine_change: str
):
    container = await runner.start(EXITS_7_ON_TERM)
    if engine_change == "unpause":
        await runner.runtime.pause(container.id)
    folder = ContainerDir(runner.runtime.root, container.id)
    keeper_pid = int((await runner.runtime.keeper.request({"op": "ping"}))["pid"])
    async with trio.open_nursery() as nursery:
        # The test plays a writer in the middle of its change: until it lets go, neither the
        # engine's change nor the keeper's record of the exit may touch the state.
        with folder.state_lock():
            if engine_change == "unpause":
                nursery.start_soon(runner.runtime.unpause, container.id)
            else:
                nursery.start_soon(
                    trio.to_thread.run_sync,
                    runner.runtime.mark_stopped_by_user, container.id, True,
                )
            await _until_waiting(folder.path, os.getpid())
            os.kill(container.state.pid, signal.SIGTERM)  # thawed by now when unpausing
            await _until_waiting(folder.path, keeper_pid)
            before = "paused" if engine_change == "unpause" else "running"
            assert folder.read_state().status == before
    with trio.fail_after(10):
        final = await runner.runtime.wait(container.id)
    assert (final.status, final.exit_code, final.pid) == ("exited", 7, 0)
    assert final.finished_at is not None
    assert final.stopped_by_user is (engine_change == "stopped by user")
