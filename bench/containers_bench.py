"""Time container starts and measure what running containers cost, with the real runtime.

    python bench/containers_bench.py [--runs 50] [--running 50] [--workdir DIR]

Loads the busybox test image (tests/support/images.py) into a fresh state
root, then prints:
- `true`: create + start + exit, waited for (the keeper has recorded the exit
  code and removed the cgroup), p50 / p95 / max over --runs;
- `sleep`: create + start of a sleeping container, then its stop. `sleep` as
  PID 1 has no SIGTERM handler, so the kernel ignores SIGTERM for it (as with
  Docker); the stop is timed with a grace period of 0, i.e. the SIGKILL path;
- --running containers running `sleep` at once: the host's used memory (after
  dropping caches: what is neither free nor a droppable cache) before and
  after, the workloads' own memory (the sum of their processes' Pss), and the
  difference per container: what the runtime adds beyond the workload. That
  host-wide figure moves with anything else the machine does, so the memory
  charged to each container's own memory cgroup is printed too: a launch joins
  the cgroup before it creates namespaces and mounts, so the kernel objects
  made for a container are charged to it. The keeper's own RSS is printed as
  well: it is one process per host, not per container.
Targets (issue 4): start p50 <= 60 ms; added memory <= 1 MB per container.
For reference on this machine: a bare `runc run` 34 ms, `docker run` 400 ms,
dockerd + containerd 834 MB for 50 running containers.
Everything it starts is stopped and removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from support.images import busybox_image, write_docker_archive_classic  # noqa: E402

from orchestrator.runtime.containers.cgroups import Cgroup  # noqa: E402
from orchestrator.runtime.containers.runtime import ContainerRuntime  # noqa: E402
from orchestrator.runtime.containers.service_container import (  # noqa: E402
    create_service_container,
)
from orchestrator.runtime.images.exchange import load_archive  # noqa: E402
from orchestrator.runtime.images.store import ImageStore  # noqa: E402
from orchestrator.runtime.volumes import VolumeStore  # noqa: E402


def service(command: list[str]) -> dict:
    return {"image": "busybox", "entrypoint": None, "command": command}


class Bench:
    def __init__(self, root: Path):
        self.root = root
        self.runtime = ContainerRuntime(root)
        self.images = ImageStore(root / "images")
        self.volumes = VolumeStore(root / "volumes")
        self.counter = 0

    def create(self, command: list[str]) -> str:
        self.counter += 1
        container = create_service_container(
            self.runtime, self.images, self.volumes, service(command),
            project="bench", project_dir=str(self.root), service_name="app",
            number=self.counter,
        )
        return container.id

    async def time_true(self, runs: int) -> list[float]:
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            container_id = self.create(["true"])
            await self.runtime.start(container_id)
            state = await self.runtime.wait(container_id)
            times.append(time.perf_counter() - began)
            assert state.exit_code == 0, state
            await self.runtime.remove(container_id)
        return times

    async def time_sleep(self, runs: int) -> tuple[list[float], list[float]]:
        starts, stops = [], []
        for _ in range(runs):
            began = time.perf_counter()
            container_id = self.create(["sleep", "600"])
            await self.runtime.start(container_id)
            started = time.perf_counter()
            await self.runtime.stop(container_id, timeout=0)
            stops.append(time.perf_counter() - started)
            starts.append(started - began)
            await self.runtime.remove(container_id)
        return starts, stops

    async def many(self, count: int) -> dict[str, float]:
        await trio.sleep(2)
        before = min(used_memory() for _ in range(3))
        ids = []
        for _ in range(count):
            container_id = self.create(["sleep", "600"])
            await self.runtime.start(container_id)
            ids.append(container_id)
        await trio.sleep(2)  # let the kernel settle (lazy frees, per-cpu caches)
        after = min(used_memory() for _ in range(3))
        workload = sum(pss(self.runtime.get(i).state.pid) for i in ids)
        charged = sum(group.memory_usage() for i in ids if (group := Cgroup.open(i)))
        keeper = keeper_rss(self.root / "containers")
        for container_id in ids:
            await self.runtime.stop(container_id, timeout=0)
            await self.runtime.remove(container_id)
        return {"before": before, "after": after, "workload": workload, "keeper": keeper,
                "charged": charged}


def used_memory() -> int:
    """Memory in use that is not a cache the kernel could drop: after dropping the
    caches, total - free - buffers - (page cache - shmem) - reclaimable slab. Shmem
    stays counted: a container's tmpfs (/dev, /dev/shm) is memory it costs."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as drop:
        drop.write("3")
    info = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            key, value = line.split(":")
            info[key] = int(value.split()[0]) * 1024
    cache = info["Cached"] - info["Shmem"]
    return info["MemTotal"] - info["MemFree"] - info["Buffers"] - cache - info["SReclaimable"]


def pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def keeper_rss(containers_root: Path) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
            if b"orchestrator.runtime.containers.keeper" in argv and \
                    str(containers_root).encode() in argv:
                with open(f"/proc/{entry}/status") as status:
                    for line in status:
                        if line.startswith("VmRSS:"):
                            return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def report(label: str, values: list[float]) -> None:
    print(
        f"{label:<34} p50 {statistics.median(values) * 1000:6.1f} ms   "
        f"p95 {percentile(values, 0.95) * 1000:6.1f} ms   max {max(values) * 1000:6.1f} ms"
    )


async def main_async(args: argparse.Namespace, root: Path) -> None:
    with ImageStore(root / "images") as store:
        archive = write_docker_archive_classic(root / "busybox.tar", [busybox_image()])
        load_archive(store, str(archive))
    bench = Bench(root)
    try:
        await bench.runtime.keeper.request({"op": "ping"})  # the keeper starts once per host
        await bench.time_true(3)  # warm the page cache
        report("create+start+exit `true`", await bench.time_true(args.runs))
        starts, stops = await bench.time_sleep(args.runs)
        report("create+start `sleep`", starts)
        report("stop (kill) `sleep`", stops)
        figures = await bench.many(args.running)
        added = figures["after"] - figures["before"] - figures["workload"]
        mib = 1024 * 1024
        print(f"{args.running} running `sleep` containers:")
        print(f"  host memory used before {figures['before'] / mib:8.1f} MiB, "
              f"after {figures['after'] / mib:8.1f} MiB")
        print(f"  the workloads' own processes (Pss) {figures['workload'] / mib:8.1f} MiB")
        print(f"  added by the runtime, host-wide: {added / mib:.1f} MiB in all, "
              f"{added / args.running / 1024:.0f} KiB per container (noisy unless idle)")
        kernel = figures["charged"] - figures["workload"]
        print(f"  charged to the containers' memory cgroups {figures['charged'] / mib:.1f} MiB: "
              f"beyond the workloads {kernel / args.running / 1024:.0f} KiB per container "
              "(namespaces, mounts, page tables, logs)")
        print(f"  keeper process RSS (one per host) {figures['keeper'] / mib:.1f} MiB")
    finally:
        for container in bench.runtime.list():
            await bench.runtime.remove(container.id, force=True)
        await bench.runtime.shutdown_keeper()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--running", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="stack-bench-", dir=args.workdir))
    try:
        trio.run(main_async, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
