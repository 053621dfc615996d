"""cgroup limits as a user sees them: enforced inside the container, visible in its cgroup."""

from __future__ import annotations

import pytest
import trio
from support.containers import ServiceRunner

from orchestrator.runtime.containers.cgroups import Cgroup
from orchestrator.runtime.containers.runtime import Container

pytestmark = pytest.mark.trio

MB = 1024 * 1024


def cgroup_of(container: Container) -> Cgroup:
    cgroup = Cgroup.open(container.id)
    assert cgroup is not None, "a running container has a cgroup"
    return cgroup


async def test_allocating_past_mem_limit_is_oom_killed_and_reported(runner: ServiceRunner):
    # The shell keeps the whole output of $(...) in memory: 100 MB against a 16 MB limit.
    ran = await runner.run("""
        services:
          app:
            image: busybox
            mem_limit: 16m
            command: ["sh", "-c", "x=$$(head -c 100000000 /dev/zero | tr '\\\\0' a); echo kept"]
    """)
    assert ran.exit_code == 137
    assert ran.state.oom_killed is True
    assert "kept" not in ran.stdout


async def test_a_container_within_its_memory_limit_is_not_reported_oom(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            mem_limit: 16m
            command: ["sh", "-c", "x=$$(head -c 1000000 /dev/zero | tr '\\\\0' a); echo kept"]
    """)
    assert ran.exit_code == 0
    assert ran.state.oom_killed is False
    assert ran.stdout == "kept\n"


async def test_pids_limit_contains_a_fork_bomb_and_the_container_survives(
    runner: ServiceRunner,
):
    # The subshell forks sleepers until a fork fails, then gives up; the main shell then
    # waits on a fifo (no fork needed) so it keeps running with the pids it has.
    container = await runner.start("""
        services:
          app:
            image: busybox
            pids_limit: 10
            command:
              - sh
              - -c
              - >-
                mkfifo /tmp/f;
                (while :; do sleep 60 & done);
                echo contained; read x <> /tmp/f
    """)
    cgroup = cgroup_of(container)
    assert cgroup.read("pids", "pids.max") == "10"
    peak = 0
    with trio.fail_after(10):
        while "contained" not in runner.output(container.id)[0]:
            peak = max(peak, int(cgroup.read("pids", "pids.current")))
            await trio.sleep(0.02)
    for _ in range(10):
        peak = max(peak, int(cgroup.read("pids", "pids.current")))
        await trio.sleep(0.02)
    assert 5 <= peak <= 10
    assert "can't fork" in runner.output(container.id)[1]
    assert runner.runtime.get(container.id).state.status == "running"


async def test_cpus_sets_the_cfs_quota(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app: {image: busybox, cpus: 0.5, command: sleep 30}
    """)
    cgroup = cgroup_of(container)
    assert cgroup.read("cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup.read("cpu", "cpu.cfs_period_us") == "100000"


async def test_cpu_shares_and_mem_reservation_reach_the_cgroup(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app:
            image: busybox
            cpu_shares: 512
            mem_limit: 64m
            memswap_limit: 96m
            mem_reservation: 32m
            command: sleep 30
    """)
    cgroup = cgroup_of(container)
    assert cgroup.read("cpu", "cpu.shares") == "512"
    assert cgroup.read("memory", "memory.limit_in_bytes") == str(64 * MB)
    assert cgroup.read("memory", "memory.memsw.limit_in_bytes") == str(96 * MB)
    assert cgroup.read("memory", "memory.soft_limit_in_bytes") == str(32 * MB)


async def test_cpuset_pins_the_container_to_its_cpus(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, cpuset: "0", command: grep Cpus_allowed_list /proc/self/status}
    """)
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.split() == ["Cpus_allowed_list:", "0"]


async def test_deploy_resources_limits_and_reservations_apply(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app:
            image: busybox
            command: sleep 30
            deploy:
              resources:
                limits: {cpus: "0.25", memory: 32M, pids: 20}
                reservations: {memory: 8M}
    """)
    cgroup = cgroup_of(container)
    assert cgroup.read("cpu", "cpu.cfs_quota_us") == "25000"
    assert cgroup.read("memory", "memory.limit_in_bytes") == str(32 * MB)
    assert cgroup.read("memory", "memory.soft_limit_in_bytes") == str(8 * MB)
    assert cgroup.read("pids", "pids.max") == "20"


async def test_the_cgroup_is_gone_once_the_container_exits(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app: {image: busybox, mem_limit: 32m, command: sleep 30}
    """)
    assert Cgroup.open(container.id) is not None
    await runner.runtime.stop(container.id, timeout=0)
    assert Cgroup.open(container.id) is None
