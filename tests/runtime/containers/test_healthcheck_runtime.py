"""Healthchecks probing real containers: the engine's loop with the runtime's exec."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest
import trio
from support.containers import ServiceRunner

from orchestrator.engine.health import ExecProbe, HealthState, healthcheck_of, run_healthchecks
from orchestrator.runtime.containers.runtime import Container
from orchestrator.runtime.nurseries import open_nursery

pytestmark = pytest.mark.trio


def exec_in(runner: ServiceRunner, container: Container) -> ExecProbe:
    """A probe as the engine runs it: argv in the container, stdout and stderr together."""
    runtime = runner.runtime

    async def exec_probe(argv: Sequence[str], timeout: float) -> tuple[int, str]:
        process = runtime.exec_process(runtime.get(container.id), list(argv))
        read_end, write_end = os.pipe()
        stdin = os.open("/dev/null", os.O_RDONLY)
        output = bytearray()
        async with trio.lowlevel.FdStream(read_end) as stream, open_nursery() as nursery:

            async def drain() -> None:
                while chunk := await stream.receive_some():
                    output.extend(chunk)

            nursery.start_soon(drain)
            try:
                exit_code = await runtime.exec(container.id, process, (stdin, write_end, write_end))
            finally:
                os.close(write_end)
                os.close(stdin)
        return exit_code, output.decode(errors="replace")

    return exec_probe


async def watch(
    runner: ServiceRunner, stack_yaml: str, until: str
) -> tuple[list[str], HealthState]:
    """Start the service and probe it until its status is `until`; the changes seen."""
    spec = healthcheck_of(runner.model(stack_yaml)["services"]["app"], None, service_name="app")
    assert spec is not None
    container = await runner.start(stack_yaml)
    started_at = container.state.started_at
    assert started_at is not None
    state = HealthState(spec, started_at)
    seen: list[str] = []
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:

            async def on_change(changed: HealthState) -> None:
                seen.append(changed.status)
                if changed.status == until:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(
                lambda: run_healthchecks(
                    spec, exec_in(runner, container), on_change, started_at, state=state
                )
            )
    return seen, state


async def test_container_turns_healthy_once_its_probe_passes(runner: ServiceRunner):
    seen, state = await watch(
        runner,
        """
        services:
          app:
            image: busybox
            command: sh -c 'sleep 1; touch /tmp/ready; exec sleep 30'
            healthcheck:
              test: ["CMD-SHELL", "test -f /tmp/ready"]
              interval: 100ms
              retries: 2
              start_period: 10s
              start_interval: 100ms
        """,
        until="healthy",
    )
    # The probes that failed before the file existed fell in the start period.
    assert seen == ["healthy"]
    assert state.log[0].exit_code == 1
    assert state.log[-1].exit_code == 0
    assert state.failing_streak == 0


async def test_failing_probe_makes_it_unhealthy_with_its_output(runner: ServiceRunner):
    seen, state = await watch(
        runner,
        """
        services:
          app:
            image: busybox
            command: sleep 30
            healthcheck:
              test: ["CMD-SHELL", "echo checking; echo no database here >&2; exit 1"]
              interval: 100ms
              retries: 2
        """,
        until="unhealthy",
    )
    assert seen == ["unhealthy"]
    assert [(e.exit_code, e.output) for e in state.log] == [(1, "checking\nno database here\n")] * 2


async def test_probe_that_hangs_fails_at_its_timeout(runner: ServiceRunner):
    seen, state = await watch(
        runner,
        """
        services:
          app:
            image: busybox
            command: sleep 30
            healthcheck:
              test: ["CMD", "sleep", "10"]
              interval: 100ms
              timeout: 300ms
              retries: 1
        """,
        until="unhealthy",
    )
    assert seen == ["unhealthy"]
    assert state.log[0].exit_code == -1
    assert state.log[0].output == "Health check exceeded timeout (300ms)"
    assert state.log[0].end - state.log[0].start < 1


async def test_probe_command_missing_from_the_image_fails(runner: ServiceRunner):
    seen, state = await watch(
        runner,
        """
        services:
          app:
            image: busybox
            command: sleep 30
            healthcheck:
              test: ["CMD", "/no/such/probe"]
              interval: 100ms
              retries: 1
        """,
        until="unhealthy",
    )
    assert seen == ["unhealthy"]
    assert state.log[0].exit_code == -1
    assert "/no/such/probe" in state.log[0].output
    assert "no such file or directory" in state.log[0].output
