"""cgroups: the pure translation of limits for both layouts, then real groups on this host.

The host tests need root and a writable cgroup filesystem. Every group and
process they make is killed and removed by the `groups` fixture, even when a
test fails; ids carry a random suffix so parallel runs never share a group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtime.containers.cgroup_limits import (
    Host,
    format_cpu_list,
    limit_writes,
    parse_cpu_list,
    shares_to_weight,
)
from orchestrator.runtime.containers.cgroupfs import CgroupLayout, detect_layout
from orchestrator.runtime.containers.cgroups import Cgroup, remove_stale
from orchestrator.runtime.containers.launchspec import Resources
from orchestrator.spec.errors import StackError

MB = 1024 * 1024
HOST = Host(cpus=frozenset({0, 1}), mems=frozenset({0}))
CGROUP_ROOT = "/sys/fs/cgroup"


def writes(kind: str, **resources: Any) -> list[tuple[str, str, str]]:
    return [tuple(w) for w in limit_writes(Resources(**resources), kind, HOST)]  # type: ignore[arg-type, misc]


# --- limits, v1 -----------------------------------------------------------------------------


def test_no_limits_write_nothing() -> None:
    assert writes("v1") == []
    assert writes("v2") == []


def test_v1_memory_limit_and_swap() -> None:
    assert writes("v1", memory=64 * MB, memory_swap=128 * MB) == [
        ("memory", "memory.limit_in_bytes", str(64 * MB)),
        ("memory", "memory.memsw.limit_in_bytes", str(128 * MB)),
    ]


def test_v1_unlimited_memory_and_swap_are_minus_one() -> None:
    assert writes("v1", memory=-1, memory_swap=-1) == [
        ("memory", "memory.limit_in_bytes", "-1"),
        ("memory", "memory.memsw.limit_in_bytes", "-1"),
    ]


def test_zero_memory_means_not_set() -> None:
    assert writes("v1", memory=0, memory_swap=0, memory_reservation=0) == []


def test_v1_reservation_is_the_soft_limit() -> None:
    assert writes("v1", memory_reservation=32 * MB) == [
        ("memory", "memory.soft_limit_in_bytes", str(32 * MB))
    ]


def test_v1_cpus_become_a_cfs_quota_over_a_100ms_period() -> None:
    assert writes("v1", cpus=1.5) == [
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "150000"),
    ]


def test_cpus_quota_is_rounded_not_truncated() -> None:
    assert writes("v1", cpus=0.29)[1] == ("cpu", "cpu.cfs_quota_us", "29000")
    assert writes("v2", cpus=0.29) == [("cpu", "cpu.max", "29000 100000")]


def test_v1_cpu_shares_are_written_as_given() -> None:
    assert writes("v1", cpu_shares=512) == [("cpu", "cpu.shares", "512")]


def test_cpu_shares_outside_the_kernel_range_are_clamped_like_docker() -> None:
    assert writes("v1", cpu_shares=1) == [("cpu", "cpu.shares", "2")]
    assert writes("v1", cpu_shares=10**6) == [("cpu", "cpu.shares", "262144")]
    assert writes("v2", cpu_shares=10**6) == [("cpu", "cpu.weight", "10000")]


def test_cpuset_cpus_and_mems_are_written_in_both_layouts() -> None:
    expected = [("cpuset", "cpuset.cpus", "0-1"), ("cpuset", "cpuset.mems", "0")]
    assert writes("v1", cpuset_cpus="0-1", cpuset_mems="0") == expected
    assert writes("v2", cpuset_cpus="0-1", cpuset_mems="0") == expected


@pytest.mark.parametrize(("limit", "value"), [(5, "5"), (0, "max"), (-1, "max")])
def test_pids_limit_zero_or_minus_one_is_unlimited(limit: int, value: str) -> None:
    assert writes("v1", pids_limit=limit) == [("pids", "pids.max", value)]
    assert writes("v2", pids_limit=limit) == [("pids", "pids.max", value)]


# --- limits, v2 -----------------------------------------------------------------------------


def test_v2_swap_max_is_swap_beyond_memory() -> None:
    assert writes("v2", memory=64 * MB, memory_swap=96 * MB) == [
        ("memory", "memory.max", str(64 * MB)),
        ("memory", "memory.swap.max", str(32 * MB)),
    ]


def test_v2_swap_equal_to_memory_forbids_swapping() -> None:
    assert writes("v2", memory=64 * MB, memory_swap=64 * MB)[1] == (
        "memory",
        "memory.swap.max",
        "0",
    )


def test_v2_unlimited_is_max() -> None:
    assert writes("v2", memory=-1, memory_swap=-1) == [
        ("memory", "memory.max", "max"),
        ("memory", "memory.swap.max", "max"),
    ]
    assert writes("v2", memory=64 * MB, memory_swap=-1)[1] == ("memory", "memory.swap.max", "max")


def test_v2_reservation_is_memory_low() -> None:
    assert writes("v2", memory_reservation=32 * MB) == [("memory", "memory.low", str(32 * MB))]


def test_v2_cpus_are_cpu_max() -> None:
    assert writes("v2", cpus=0.5) == [("cpu", "cpu.max", "50000 100000")]


@pytest.mark.parametrize(
    ("shares", "weight"),
    [(2, 1), (512, 20), (1024, 39), (2048, 79), (131072, 5000), (262144, 10000)],
)
def test_cpu_shares_convert_to_weight_as_runc_does(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight
    assert writes("v2", cpu_shares=shares) == [("cpu", "cpu.weight", str(weight))]


def test_every_limit_at_once_keeps_memory_before_swap() -> None:
    files = [w[1] for w in writes("v1", memory=64 * MB, memory_swap=-1, cpus=1, pids_limit=3)]
    assert files == [
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "cpu.cfs_period_us",
        "cpu.cfs_quota_us",
        "pids.max",
    ]


# --- Docker's refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "words"),
    [
        ({"memory": 4 * MB}, "mem_limit 4194304: Minimum memory limit allowed is 6MB"),
        ({"memory": -5}, "mem_limit -5 is negative"),
        ({"memory": 64 * MB, "memory_swap": 32 * MB}, "memswap_limit 33554432: Minimum memoryswap"),
        ({"memory_swap": 64 * MB}, "You should always set the Memory limit"),
        ({"memory": -1, "memory_swap": 64 * MB}, "You should always set the Memory limit"),
        ({"memory_reservation": MB}, "Minimum memory reservation allowed is 6MB"),
        ({"memory": 16 * MB, "memory_reservation": 32 * MB}, "mem_reservation 33554432"),
        ({"cpus": 3}, "cpus 3: Range of CPUs is from 0.01 to 2.00"),
        ({"cpus": 0.001}, "Range of CPUs is from 0.01"),
        ({"cpus": -1}, "Range of CPUs"),
        ({"cpuset_cpus": "1-2"}, "cpuset: Requested CPUs are not available - requested 1-2"),
        ({"cpuset_cpus": "0,x"}, "cpuset: Invalid value '0,x'"),
        ({"cpuset_cpus": "3-1"}, "Invalid value"),
        ({"cpuset_mems": "1"}, "cpuset_mems: Requested memory nodes are not available"),
    ],
)
def test_limits_docker_refuses_are_refused(resources: dict[str, Any], words: str) -> None:
    for kind in ("v1", "v2"):
        with pytest.raises(StackError) as caught:
            writes(kind, **resources)
        assert words in str(caught.value)
        assert "\n" not in str(caught.value)


def test_available_cpus_are_named_when_a_cpuset_is_refused() -> None:
    host = Host(cpus=frozenset({0, 1, 2, 4}), mems=frozenset({0}))
    with pytest.raises(StackError, match="available: 0-2,4"):
        limit_writes(Resources(cpuset_cpus="3"), "v1", host)


def test_cpus_equal_to_the_host_count_are_allowed() -> None:
    assert writes("v1", cpus=2)[1] == ("cpu", "cpu.cfs_quota_us", "200000")


def test_cpu_lists_parse_and_format() -> None:
    assert parse_cpu_list("0-2,4, 7-8") == frozenset({0, 1, 2, 4, 7, 8})
    assert format_cpu_list(frozenset({0, 1, 2, 4, 7, 8})) == "0-2,4,7-8"
    for bad in ("", "a", "1-", "-1", "2-1", "1,,2"):
        with pytest.raises(ValueError):
            parse_cpu_list(bad)


# --- layout detection on made-up trees ------------------------------------------------------


def test_pure_v2_layout_uses_one_hierarchy_for_every_controller(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    layout = detect_layout(str(tmp_path), base="stack")
    assert layout.kind == "v2"
    assert layout.unified == str(tmp_path)
    assert dict(layout.controllers) == dict.fromkeys(
        ["cpu", "cpuset", "memory", "pids"], str(tmp_path)
    )
    group = Cgroup("abc", layout)
    assert group.hierarchy_dirs == (str(tmp_path / "stack" / "abc"),)
    assert group.procs_files() == [str(tmp_path / "stack" / "abc" / "cgroup.procs")]


def test_v1_layout_shares_one_directory_for_co_mounted_controllers(tmp_path: Path) -> None:
    for name in ("cpu,cpuacct", "memory", "pids"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cgroup.procs").write_text("")
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    (tmp_path / "cpuacct").symlink_to("cpu,cpuacct")
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    layout = detect_layout(str(tmp_path), base="stack")
    assert layout.kind == "v1"
    assert layout.unified == str(tmp_path / "unified")
    assert set(layout.controllers) == {"cpu", "cpuacct", "memory", "pids"}
    assert layout.controllers["cpu"] == layout.controllers["cpuacct"]
    dirs = Cgroup("abc", layout).hierarchy_dirs
    assert sorted(dirs) == sorted(
        str(tmp_path / name / "stack" / "abc")
        for name in ("cpu,cpuacct", "memory", "pids", "unified")
    )


def test_a_folder_without_cgroups_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no cgroup filesystem"):
        detect_layout(str(tmp_path), base="stack")


def test_a_container_id_must_be_one_path_component() -> None:
    layout = CgroupLayout("v2", "/x", {}, "/x")
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError):
            Cgroup(bad, layout)


# --- real groups on this host ---------------------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(CGROUP_ROOT, os.W_OK),
    reason="needs root and a writable cgroup filesystem",
)


def new_id() -> str:
    return "test" + secrets.token_hex(6)


class Groups:
    """Makes groups and processes in them; `cleanup` kills and removes all of it."""

    def __init__(self) -> None:
        self.made: list[Cgroup] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.bases: list[CgroupLayout] = []

    def create(
        self, layout: CgroupLayout | None = None, host: Host | None = None, **resources: Any
    ) -> Cgroup:
        layout = layout or detect_layout()
        container_id = new_id()
        # Known before create runs, so a half-made group is still removed.
        self.made.append(Cgroup(container_id, layout))
        return Cgroup.create(container_id, Resources(**resources), layout, host)

    def spawn(self, group: Cgroup, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        """Start `argv` already inside `group`: the child joins before it execs."""
        files = group.procs_files()

        def join() -> None:
            for path in files:
                with open(path, "w") as file:
                    file.write("0")

        process = subprocess.Popen(argv, preexec_fn=join, **options)
        self.processes.append(process)
        return process

    def cleanup(self) -> None:
        for group in self.made:
            with contextlib.suppress(Exception):
                group.kill(timeout=2)
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
        for group in self.made:
            group.remove()
        for layout in self.bases:
            for mount in {*layout.controllers.values(), layout.unified}:
                if mount:
                    with contextlib.suppress(FileNotFoundError):
                        os.rmdir(os.path.join(mount, layout.base))


@pytest.fixture
def groups() -> Iterator[Groups]:
    made = Groups()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def v2_layout() -> CgroupLayout:
    """A real cgroup2 hierarchy: the root on a v2 host, else the hybrid's controller-less one."""
    for root in (CGROUP_ROOT, os.path.join(CGROUP_ROOT, "unified")):
        if os.path.isfile(os.path.join(root, "cgroup.controllers")):
            return detect_layout(root, base="stack")
    pytest.skip("no cgroup2 hierarchy on this host")


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("State:"):
                return line.split()[1]
    return ""


def wait_until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def all_dirs_gone(group: Cgroup) -> bool:
    return not any(os.path.exists(path) for path in group.hierarchy_dirs)


@needs_root
def test_limits_are_readable_from_the_group(groups: Groups) -> None:
    group = groups.create(
        memory=64 * MB,
        memory_swap=128 * MB,
        memory_reservation=32 * MB,
        cpus=0.5,
        cpu_shares=512,
        cpuset_cpus="0",
        pids_limit=20,
    )
    if group.layout.kind == "v1":
        assert group.read("memory", "memory.limit_in_bytes") == str(64 * MB)
        assert group.read("memory", "memory.soft_limit_in_bytes") == str(32 * MB)
        if os.path.exists(os.path.join(group.dirs["memory"], "memory.memsw.limit_in_bytes")):
            assert group.read("memory", "memory.memsw.limit_in_bytes") == str(128 * MB)
        assert group.read("cpu", "cpu.cfs_period_us") == "100000"
        assert group.read("cpu", "cpu.cfs_quota_us") == "50000"
        assert group.read("cpu", "cpu.shares") == "512"
    else:
        assert group.read("memory", "memory.max") == str(64 * MB)
        assert group.read("memory", "memory.low") == str(32 * MB)
        assert group.read("cpu", "cpu.max") == "50000 100000"
        assert group.read("cpu", "cpu.weight") == "20"
    assert group.read("cpuset", "cpuset.cpus") == "0"
    assert group.read("pids", "pids.max") == "20"


@needs_root
def test_a_group_without_cpuset_takes_the_parents_cpus_and_accepts_a_process(
    groups: Groups,
) -> None:
    group = groups.create()
    if group.layout.kind == "v1" and "cpuset" in group.dirs:
        root = group.layout.controllers["cpuset"]
        assert group.read("cpuset", "cpuset.cpus") == Path(root, "cpuset.cpus").read_text().strip()
        assert group.read("cpuset", "cpuset.mems") == Path(root, "cpuset.mems").read_text().strip()
    process = subprocess.Popen(["sleep", "30"])
    groups.processes.append(process)
    group.add(process.pid)
    assert group.pids() == [process.pid]
    assert group.populated()
    for path in group.hierarchy_dirs:
        assert Path(path, "cgroup.procs").read_text().split() == [str(process.pid)]


@needs_root
def test_open_finds_a_group_made_earlier(groups: Groups) -> None:
    group = groups.create(pids_limit=7)
    process = groups.spawn(group, ["sleep", "30"])
    found = Cgroup.open(group.id)
    assert found is not None
    assert found.dirs == group.dirs
    assert found.pids() == [process.pid]
    assert found.read("pids", "pids.max") == "7"
    assert Cgroup.open(new_id()) is None


@needs_root
def test_freeze_stops_the_processes_and_thaw_resumes_them(groups: Groups) -> None:
    group = groups.create()
    process = groups.spawn(group, ["sleep", "0.3"])
    group.freeze()
    assert group.frozen()
    if group.layout.kind == "v1" and "freezer" in group.dirs:
        assert group.read("freezer", "freezer.state") == "FROZEN"
        assert process_state(process.pid) == "D"
    time.sleep(0.6)
    assert process.poll() is None, "a frozen sleep finished"
    group.thaw()
    assert not group.frozen()
    assert process.wait(timeout=5) == 0


@needs_root
def test_kill_empties_the_group(groups: Groups) -> None:
    group = groups.create()
    shell = groups.spawn(group, ["sh", "-c", "sleep 30 & sleep 30 & wait"])
    assert wait_until(lambda: len(group.pids()) == 3)
    group.kill()
    assert group.pids() == []
    assert not group.populated()
    assert shell.wait(timeout=5) == -signal.SIGKILL


@needs_root
def test_kill_empties_a_frozen_group(groups: Groups) -> None:
    group = groups.create()
    process = groups.spawn(group, ["sleep", "30"])
    group.freeze()
    group.kill()
    assert not group.populated()
    assert process.wait(timeout=5) == -signal.SIGKILL
    assert not group.frozen()


@needs_root
def test_kill_with_another_signal_reaches_every_process(groups: Groups) -> None:
    group = groups.create()
    first = groups.spawn(group, ["sleep", "30"])
    second = groups.spawn(group, ["sleep", "30"])
    group.kill(signal.SIGTERM)
    assert first.wait(timeout=5) == -signal.SIGTERM
    assert second.wait(timeout=5) == -signal.SIGTERM


@needs_root
def test_allocation_past_the_memory_limit_is_oom_killed_and_reported(groups: Groups) -> None:
    group = groups.create(memory=16 * MB, memory_swap=16 * MB)
    assert not group.oom_killed()
    hog = groups.spawn(group, [sys.executable, "-c", "b = b'x' * (200 << 20)"])
    assert hog.wait(timeout=30) == -signal.SIGKILL
    assert group.oom_killed()


@needs_root
def test_memory_usage_counts_what_the_processes_touch(groups: Groups) -> None:
    group = groups.create()
    if "memory" not in group.dirs:
        pytest.skip("no memory controller")
    script = "import sys; b = b'x' * (32 << 20); print('ok', flush=True); sys.stdin.read()"
    process = groups.spawn(
        group, [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ok\n"
    assert group.memory_usage() >= 32 * MB
    assert not group.oom_killed()


@needs_root
def test_pids_limit_refuses_the_sixth_process(groups: Groups) -> None:
    group = groups.create(pids_limit=5)
    # The shell is the first process; it tries to start eight sleeps.
    shell = groups.spawn(
        group,
        ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 30 2>/dev/null & done; wait"],
        stderr=subprocess.PIPE,
    )
    _, stderr = shell.communicate(timeout=10)
    assert shell.returncode != 0
    assert b"fork" in stderr.lower()
    assert len(group.pids()) == 4  # the four sleeps that fit beside the shell
    group.kill()


@needs_root
def test_invalid_limits_leave_no_group_behind(groups: Groups) -> None:
    with pytest.raises(StackError, match="Minimum memory limit allowed is 6MB"):
        groups.create(memory=MB)
    assert all_dirs_gone(groups.made[-1])
    assert Cgroup.open(groups.made[-1].id) is None


@needs_root
def test_a_limit_the_kernel_refuses_names_its_key_and_leaves_nothing(groups: Groups) -> None:
    if (os.cpu_count() or 1) >= 64 or "cpuset" not in detect_layout().controllers:
        pytest.skip("needs a cpuset controller and fewer than 64 CPUs")
    pretend = Host(cpus=frozenset(range(64)), mems=frozenset({0}))
    with pytest.raises(StackError, match="^cpuset: the kernel refused '63'"):
        groups.create(host=pretend, memory=64 * MB, cpuset_cpus="63")
    assert all_dirs_gone(groups.made[-1])


@needs_root
def test_remove_deletes_every_directory_and_can_be_repeated(groups: Groups) -> None:
    group = groups.create(memory=64 * MB, pids_limit=10)
    process = groups.spawn(group, ["sleep", "30"])
    group.kill()
    process.wait()
    group.remove()
    assert all_dirs_gone(group)
    group.remove()
    assert Cgroup.open(group.id) is None


@needs_root
def test_remove_stale_keeps_live_and_wanted_groups(groups: Groups) -> None:
    layout = dataclasses.replace(detect_layout(), base=f"stack/{new_id()}")
    groups.bases.append(layout)
    wanted, stale, busy = (groups.create(layout) for _ in range(3))
    groups.spawn(busy, ["sleep", "30"])
    assert remove_stale({wanted.id}, layout) == [stale.id]
    assert all_dirs_gone(stale)
    assert Cgroup.open(wanted.id, layout) is not None
    assert Cgroup.open(busy.id, layout) is not None


@needs_root
def test_v2_group_freezes_kills_and_goes(groups: Groups, v2_layout: CgroupLayout) -> None:
    group = groups.create(v2_layout)
    assert group.hierarchy_dirs == (os.path.join(v2_layout.root, "stack", group.id),)
    process = groups.spawn(group, ["sleep", "0.3"])
    assert group.pids() == [process.pid]
    assert group.populated()
    group.freeze()
    assert group.frozen()
    assert "frozen 1" in group.read("unified", "cgroup.events")
    time.sleep(0.6)
    assert process.poll() is None, "a frozen sleep finished"
    group.thaw()
    assert process.wait(timeout=5) == 0
    sleeper = groups.spawn(group, ["sleep", "30"])
    group.kill()
    assert sleeper.wait(timeout=5) == -signal.SIGKILL
    assert not group.populated()
    group.remove()
    assert all_dirs_gone(group)


@needs_root
def test_v2_limit_without_its_controller_is_refused_before_anything_is_made(
    groups: Groups, v2_layout: CgroupLayout
) -> None:
    if "memory" in v2_layout.controllers:
        pytest.skip("this cgroup2 hierarchy has a memory controller")
    with pytest.raises(StackError, match="^mem_limit is not supported on this host"):
        groups.create(v2_layout, memory=64 * MB)
    assert all_dirs_gone(groups.made[-1])
