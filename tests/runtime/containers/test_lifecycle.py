"""A container's life as a user drives it: exit codes, stop, kill, restart, pause, remove, and
containers that outlive the processes that started them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio
from support.containers import TRAPS_SIGHUP, ServiceRunner

from orchestrator.runtime.containers.runtime import ContainerError, ContainerRuntime
from orchestrator.runtime.containers.state import is_alive

pytestmark = pytest.mark.trio

# A PID 1 that stops when asked: sh runs a trap only between commands, and `wait` is one
# that a signal interrupts, unlike a foreground sleep.
TICKING = """
    services:
      app:
        image: busybox
        command:
          - sh
          - -c
          - >-
            trap 'echo stopping; exit 0' TERM;
            i=0; while :; do echo tick $$i; i=$$((i+1)); sleep 0.05 & wait; done
"""


async def wait_for_output(runner: ServiceRunner, container_id: str, text: str) -> str:
    with trio.fail_after(10):
        while text not in (stdout := runner.output(container_id)[0]):
            await trio.sleep(0.02)
    return stdout


async def test_the_exit_code_of_the_command_is_kept(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, command: sh -c 'exit 3'}
    """)
    assert ran.exit_code == 3
    assert ran.state.status == "exited"
    assert ran.state.oom_killed is False


async def test_state_records_pid_and_start_and_finish_times(runner: ServiceRunner):
    container = runner.create("""
        services:
          app: {image: busybox, command: sleep 0.3}
    """)
    assert container.state.status == "created"
    assert container.state.pid == 0 and container.state.started_at is None
    before = time.time()
    pid = await runner.runtime.start(container.id)
    running = runner.runtime.get(container.id).state
    assert running.status == "running"
    assert running.pid == pid and os.path.exists(f"/proc/{pid}")
    assert running.started_at is not None and before <= running.started_at <= time.time()
    assert running.finished_at is None
    final = await runner.runtime.wait(container.id)
    assert final.status == "exited" and final.exit_code == 0 and final.pid == 0
    assert final.finished_at is not None and final.finished_at >= running.started_at + 0.25
    assert runner.runtime.get(container.id).state == final


async def test_wait_on_an_exited_container_returns_its_exit_code_at_once(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, command: sh -c 'exit 5'}
    """)
    container_id = runner.created[-1]
    with trio.fail_after(1):
        assert (await runner.runtime.wait(container_id)).exit_code == 5
    assert ran.exit_code == 5


async def test_stop_sends_the_stop_signal(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app:
            image: busybox
            stop_signal: SIGUSR1
            command: sh -c 'trap "echo got usr1; exit 0" USR1; while :; do sleep 1 & wait; done'
    """)
    with trio.fail_after(5):
        state = await runner.runtime.stop(container.id)
    assert state.exit_code == 0
    assert runner.output(container.id)[0] == "got usr1\n"


async def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period_not_before(
    runner: ServiceRunner,
):
    container = await runner.start("""
        services:
          app:
            image: busybox
            stop_grace_period: 2s
            command: sh -c 'trap "" TERM; echo ready; while :; do sleep 1; done'
    """)
    await wait_for_output(runner, container.id, "ready")
    started = time.monotonic()
    state = await runner.runtime.stop(container.id)
    elapsed = time.monotonic() - started
    assert state.exit_code == 137
    assert 1.9 <= elapsed < 5, elapsed


async def test_stop_with_a_timeout_overrides_the_grace_period(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app:
            image: busybox
            stop_grace_period: 1m
            command: sh -c 'trap "" TERM; while :; do sleep 1; done'
    """)
    started = time.monotonic()
    state = await runner.runtime.stop(container.id, timeout=0.2)
    assert state.exit_code == 137
    assert time.monotonic() - started < 3


async def test_kill_sends_the_signal_asked_for(runner: ServiceRunner):
    container = await runner.start(TRAPS_SIGHUP)
    await wait_for_output(runner, container.id, "ready")
    await runner.runtime.kill(container.id, "SIGHUP")
    with trio.fail_after(5):
        state = await runner.runtime.wait(container.id)
    assert state.exit_code == 7
    assert runner.output(container.id)[0] == "ready\nhup\n"


async def test_kill_defaults_to_sigkill_and_refuses_a_stopped_container(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app: {image: busybox, command: sleep 30}
    """)
    await runner.runtime.kill(container.id)
    with trio.fail_after(5):
        assert (await runner.runtime.wait(container.id)).exit_code == 137
    with pytest.raises(ContainerError, match="is not running"):
        await runner.runtime.kill(container.id, "SIGTERM")


async def test_restart_starts_a_new_process_on_the_same_filesystem(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app:
            image: busybox
            command: >-
              sh -c 'trap "exit 0" TERM; echo run >> /runs; echo runs=$$(wc -l < /runs);
              while :; do sleep 1 & wait; done'
    """)
    await wait_for_output(runner, container.id, "runs=1")
    first_pid = runner.runtime.get(container.id).state.pid
    second_pid = await runner.runtime.restart(container.id)
    assert second_pid != first_pid
    assert runner.runtime.get(container.id).state.status == "running"
    stdout = await wait_for_output(runner, container.id, "runs=2")
    assert stdout == "runs=1\nruns=2\n"


async def test_pause_stops_progress_and_unpause_resumes_it(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app:
            image: busybox
            command: sh -c 'while :; do echo x >> /progress; sleep 0.02; done'
    """)
    progress = runner.runtime.root / container.id / "upper" / "progress"

    def size() -> int:
        return progress.stat().st_size if progress.exists() else 0

    with trio.fail_after(5):
        while size() < 10:
            await trio.sleep(0.02)
    await runner.runtime.pause(container.id)
    assert runner.runtime.get(container.id).state.status == "paused"
    frozen_at = size()
    await trio.sleep(0.3)
    assert size() == frozen_at
    await runner.runtime.unpause(container.id)
    assert runner.runtime.get(container.id).state.status == "running"
    with trio.fail_after(5):
        while size() <= frozen_at:
            await trio.sleep(0.02)


async def test_a_paused_container_can_still_be_stopped(runner: ServiceRunner):
    container = await runner.start(TICKING)
    await runner.runtime.pause(container.id)
    with trio.fail_after(5):
        state = await runner.runtime.stop(container.id)
    assert state.exit_code == 0
    assert state.status == "exited"


async def test_pause_and_unpause_refuse_a_container_in_the_wrong_state(runner: ServiceRunner):
    container = await runner.start(TICKING)
    with pytest.raises(ContainerError, match="is not paused"):
        await runner.runtime.unpause(container.id)
    await runner.runtime.pause(container.id)
    with pytest.raises(ContainerError, match="is already paused"):
        await runner.runtime.pause(container.id)
    with pytest.raises(ContainerError, match="is paused"):
        await runner.exec(container, ["true"])
    await runner.runtime.remove(container.id, force=True)  # paused: killed all the same
    assert not (runner.runtime.root / container.id).exists()


async def test_remove_refuses_a_running_container_unless_forced(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app: {image: busybox, command: sleep 30}
    """)
    with pytest.raises(ContainerError, match="it is running"):
        await runner.runtime.remove(container.id)
    assert runner.runtime.get(container.id).state.status == "running"
    await runner.runtime.remove(container.id, force=True)
    assert not (runner.runtime.root / container.id).exists()
    with pytest.raises(ContainerError, match="no such container"):
        runner.runtime.get(container.id)


async def test_a_container_outlives_the_process_that_started_it(
    runner: ServiceRunner, container_root: Path
):
    container = runner.create(TICKING)
    starter = textwrap.dedent(f"""
        import sys, trio
        from pathlib import Path
        from orchestrator.runtime.containers.runtime import ContainerRuntime
        trio.run(ContainerRuntime(Path({str(container_root)!r})).start, {container.id!r})
        print("started", flush=True)
        sys.stdin.read()
    """)
    process = subprocess.Popen(
        [sys.executable, "-c", starter], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[3],
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"started\n"
    finally:
        process.kill()
        process.wait()
    before = runner.output(container.id)[0].count("tick")
    await wait_for_output(runner, container.id, f"tick {before + 2}")
    assert is_alive(runner.runtime.get(container.id).state)
    with trio.fail_after(5):
        assert (await runner.runtime.stop(container.id)).exit_code == 0


async def test_a_restarted_keeper_adopts_running_containers(
    runner: ServiceRunner, container_root: Path
):
    container = await runner.start(TICKING)
    await wait_for_output(runner, container.id, "tick 1")
    old_keeper = await kill_keeper(runner.runtime)
    assert is_alive(runner.runtime.get(container.id).state)

    # A fresh runtime, as a restarted engine would make: it finds the container from state
    # and its requests start a new keeper.
    runtime = ContainerRuntime(container_root)
    new_keeper = (await runtime.keeper.request({"op": "ping"}))["pid"]
    assert new_keeper != old_keeper
    count = runner.output(container.id)[0].count("tick")
    await wait_for_output(runner, container.id, f"tick {count + 2}")
    with trio.fail_after(5):
        state = await runtime.stop(container.id)
    assert state.status == "exited"
    assert not is_alive(state)
    stdout = runner.output(container.id)[0]
    assert stdout.endswith("stopping\n")


async def test_an_exit_while_no_keeper_runs_is_recorded_when_one_starts_again(
    runner: ServiceRunner,
):
    container = await runner.start(TICKING)
    await kill_keeper(runner.runtime)
    await runner.runtime.kill(container.id)  # signals need no keeper
    assert not is_alive(runner.runtime.get(container.id).state)
    with trio.fail_after(5):
        state = await runner.runtime.stop(container.id)
    assert state.status == "exited"
    assert "exit status unknown" in state.error  # its parent was gone: nobody saw the code
    assert runner.runtime.get(container.id).state == state


async def kill_keeper(runtime: ContainerRuntime) -> int:
    pid = int((await runtime.keeper.request({"op": "ping"}))["pid"])
    os.kill(pid, signal.SIGKILL)
    with trio.fail_after(5):
        while os.path.exists(f"/proc/{pid}") and _state_of(pid) != "Z":
            await trio.sleep(0.01)
    return pid


def _state_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


async def test_a_stop_ends_even_when_the_state_file_lags_behind_the_keeper(
    runner: ServiceRunner,
):
    container = await runner.start("""
        services:
          app: {image: busybox, command: sleep 600, stop_grace_period: 1s}
    """)
    folder = runner.runtime.root / container.id
    state = json.loads((folder / "state.json").read_text())
    state["pid_start"] = 1  # a record that no longer matches the running process
    (folder / "state.json").write_text(json.dumps(state))
    began = time.monotonic()
    with trio.fail_after(10):
        stopped = await runner.runtime.stop(container.id)
    assert stopped.status == "exited"
    assert time.monotonic() - began < 5  # the grace period, then the cgroup is killed
    assert not is_alive(container.state)  # the real process is gone
