"""Time `stack up -d`, a no-op `up -d`, `run --rm` and `down` on stacks of busybox services,
and measure the engine's memory with them all running; beside Docker Compose v2 + dockerd.

    python bench/stack_bench.py [--services 10,50] [--runs 3] [--workdir DIR]
                                [--docker [--compose PATH]]

Each stack has N services running `sleep`; every 5th depends on the one before
it. `sleep` as PID 1 ignores SIGTERM, so the file stops them with SIGKILL:
otherwise both engines would wait out the 10 s grace period and `down` would
time the grace period, not the engine. Every figure is the wall time of the
command as a user types it (interpreter or binary start included), the median
over --runs cycles of: `up -d` on nothing, `up -d` again (changes nothing),
`run --rm s01 true` (only when this `stack` has the `run` verb), `down`. The
engine is started before the first timing: its start is not an `up`'s cost.
The CLI is the interpreter running this script, so run it from a virtualenv
with the project installed as a user installs it, `pip install .`: an editable
install (`pip install -e .`) adds its import hook, some 20 ms, to every command
(the bench says which kind it runs).

Memory, with the N services running: the engine's own processes (stackd and the
keeper; for Docker dockerd, containerd and one containerd-shim per container),
RSS and Pss; and, as bench/containers_bench.py does, what is charged to the
containers' memory cgroups beyond what their workloads allocate (namespaces,
mounts, page tables, logs), per container.

Ours runs in a fresh state root with the busybox test image
(tests/support/images.py) loaded by `stack image load`, its subnets from
10.220.0.0/16. With --docker, a dockerd is started with scratch data, exec and
socket paths (as tests/support/dockerd.py does), the same archive is
`docker load`ed, and the same files are run by the compose binary given with
--compose (else $STACK_BENCH_COMPOSE, else `docker-compose` on the PATH); it
needs the test dependencies and refuses to run beside another dockerd.
Targets (issue 6, 50 services): up -d <= 2.0 s, down <= 1.0 s, no-op up <=
0.15 s, run --rm <= 0.15 s, engine memory <= 100 MB. Measured here for Docker
Compose v2 + dockerd: 9.0 s, 4.0 s, 0.10 s, 0.53 s, 834 MB.
Everything it starts is stopped and removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from support.images import busybox_image, write_docker_archive_classic  # noqa: E402

BENCH_POOLS = "10.220.0.0/16:24"  # away from Docker's defaults and the tests' subnets
TARGETS = {"up -d": 2.0, "no-op up -d": 0.15, "run --rm": 0.15, "down": 1.0}
MEMORY_TARGET = 100 * 1024 * 1024
MIB = 1024 * 1024
COMMAND_TIMEOUT = 300  # seconds: a command that takes longer has hung


def stack_file(count: int) -> str:
    lines = ["services:"]
    for number in range(1, count + 1):
        lines += [f"  s{number:02d}:", "    image: busybox",
                  '    command: ["sleep", "3600"]', "    stop_signal: SIGKILL"]
        if number % 5 == 0:
            lines.append(f"    depends_on: [s{number - 1:02d}]")
    return "\n".join(lines) + "\n"


# --- memory ----------------------------------------------------------------------------------


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss and Anonymous of a process, in bytes; zeros once it is gone."""
    found = {"Rss": 0, "Pss": 0, "Anonymous": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                key, _, value = line.partition(":")
                if key in found:
                    found[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return found


def processes_with(text: str) -> list[int]:
    """The processes whose command line mentions `text`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if text.encode() in cmdline.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def charged(groups: list[str]) -> int:
    """Bytes charged to these memory cgroup folders (cgroup v1 or v2)."""
    total = 0
    for group in groups:
        for name in ("memory.usage_in_bytes", "memory.current"):
            with contextlib.suppress(OSError):
                total += int(Path(group, name).read_text())
                break
    return total


@dataclass
class MemoryFigures:
    rss: int  # the engine's processes
    pss: int
    per_container: float  # charged to each container's memory cgroup beyond its workload
    detail: str  # RSS per part of the engine


@dataclass
class Memory:
    processes: dict[str, list[int]]  # engine part -> its pids
    workloads: list[int]  # the containers' own processes
    groups: list[str]  # the containers' memory cgroup folders

    def figures(self, count: int) -> MemoryFigures:
        parts = {part: [smaps(pid) for pid in pids] for part, pids in self.processes.items()}
        # The workloads' own memory is what they allocate (anonymous); the pages of their
        # binary are page cache, charged to whoever read them first and shared by all.
        workload = sum(smaps(pid)["Anonymous"] for pid in self.workloads)
        detail = ", ".join(f"{part} {sum(m['Rss'] for m in sizes) / MIB:.1f}"
                           + (f" ({len(sizes)} processes)" if len(sizes) > 1 else "")
                           for part, sizes in parts.items())
        return MemoryFigures(
            rss=sum(m["Rss"] for sizes in parts.values() for m in sizes),
            pss=sum(m["Pss"] for sizes in parts.values() for m in sizes),
            per_container=(charged(self.groups) - workload) / max(count, 1),
            detail=detail,
        )


# --- the two engines -------------------------------------------------------------------------


@dataclass
class Side:
    """One engine under test: how to run its CLI in a project, and what it has running."""

    label: str
    env: dict[str, str]
    argv: list[str]
    has_run: bool = True

    def command(self, project: Path, *args: str, check: bool = True) -> float:
        began = time.perf_counter()
        try:
            result = subprocess.run([*self.argv, *args], cwd=project, env=self.env,
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.label}: {' '.join(args)} hung for {COMMAND_TIMEOUT} s "
                               f"in {project}") from None
        took = time.perf_counter() - began
        if check and result.returncode != 0:
            errors = [line for line in result.stdout.splitlines() if "rror" in line]
            raise RuntimeError(f"{self.label}: {' '.join(args)} failed (exit code "
                               f"{result.returncode}):\n" + "\n".join([*errors, result.stderr]))
        return took

    def output(self, project: Path, *args: str) -> str:
        return subprocess.run([*self.argv, *args], cwd=project, env=self.env, check=True,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT).stdout

    def memory(self, project: Path) -> Memory:
        raise NotImplementedError


class StackSide(Side):
    def __init__(self, root: Path) -> None:
        env = {**os.environ, "STACK_ROOT": str(root), "STACK_SOCKET": str(root / "stack.sock"),
               "STACK_ADDRESS_POOLS": BENCH_POOLS,
               "STACK_CGROUP_PARENT": os.environ["STACK_CGROUP_PARENT"]}
        super().__init__("stack", env, [sys.executable, "-m", "orchestrator.cli.main"])
        self.root = root

    def start(self, archive: Path) -> None:
        self.root.mkdir()
        self.output(self.root, "image", "load", "-i", str(archive))
        self.output(self.root, "ls")  # starts the engine
        self.has_run = subprocess.run([*self.argv, "run", "--help"], env=self.env,
                                      capture_output=True).returncode == 0

    def memory(self, project: Path) -> Memory:
        from orchestrator.cli.engine_client import EngineClient
        from orchestrator.runtime.containers.cgroups import Cgroup

        client = EngineClient(self.env["STACK_SOCKET"])
        ids = self.output(project, "ps", "-q").split()
        pids = [client.request("GET", f"/v1/containers/{i}")[1]["pid"] for i in ids]
        client.close()
        groups = [group.dirs["memory"] for i in ids
                  if (group := Cgroup.open(i)) and "memory" in group.dirs]
        stackd = int((self.root / "stackd.lock").read_text())
        keeper = processes_with(f"orchestrator.runtime.containers.keeper\0{self.root}")
        return Memory({"stackd": [stackd], "keeper": keeper}, pids, groups)

    def close(self) -> None:
        """Stop the engine, remove every container and stop the keeper; then sweep what a
        launch that never finished can leave: processes in our cgroups, the keeper."""
        import trio

        from orchestrator.runtime.containers.runtime import ContainerRuntime

        with contextlib.suppress(subprocess.TimeoutExpired):  # the sweep below still runs
            subprocess.run([*self.argv, "engine", "stop"], env=self.env, capture_output=True,
                           timeout=30)

        async def remove_all() -> None:
            runtime = ContainerRuntime(self.root)
            for container in runtime.list():
                with trio.move_on_after(10):
                    await runtime.remove(container.id, force=True)
            with trio.move_on_after(10):
                await runtime.shutdown_keeper()

        trio.run(remove_all)
        sweep(self.root)


def sweep(root: Path) -> None:
    """Kill the processes still in this run's cgroups or serving its state root, by pid
    (they are all ours), and remove the groups."""
    from support.containers import remove_cgroup_parent

    from orchestrator.runtime.containers.cgroups import Cgroup, detect_layout

    layout = detect_layout()
    left: set[str] = set()
    for directory in {*layout.controllers.values(), layout.unified or ""} - {""}:
        parent = Path(directory) / layout.base
        if parent.is_dir():
            left.update(group.name for group in parent.iterdir() if group.is_dir())
    strays = processes_with(f"orchestrator.runtime.containers.keeper\0{root}")
    for name in left:
        group = Cgroup.open(name)
        for folder in group.hierarchy_dirs if group else ():
            with contextlib.suppress(OSError):
                strays += [int(pid) for pid in Path(folder, "cgroup.procs").read_text().split()]
    for pid in set(strays):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if strays:
        print(f"warning: killed {len(set(strays))} processes left running", file=sys.stderr)
    for name in left:
        if group := Cgroup.open(name):
            group.remove()
    if remove_cgroup_parent():
        print(f"warning: cgroups left under {layout.base}", file=sys.stderr)


class DockerSide(Side):
    def __init__(self, scratch: Path, compose: str) -> None:
        env = {**os.environ, "DOCKER_HOST": f"unix://{scratch}/docker.sock"}
        super().__init__("docker compose", env, [compose])
        self.scratch = scratch

    def memory(self, project: Path) -> Memory:
        ids = self.output(project, "ps", "-q", "--no-trunc").split()
        pids = [int(p) for p in subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Pid}}", *ids], env=self.env,
            check=True, capture_output=True, text=True).stdout.split()]
        # Where dockerd puts a container's group: cgroupfs or systemd driver, v1 or v2.
        groups = [g for i in ids for g in (
            f"/sys/fs/cgroup/memory/docker/{i}",
            f"/sys/fs/cgroup/memory/system.slice/docker-{i}.scope",
            f"/sys/fs/cgroup/docker/{i}", f"/sys/fs/cgroup/system.slice/docker-{i}.scope",
        ) if os.path.isdir(g)]
        ours = processes_with(str(self.scratch))
        parts: dict[str, list[int]] = {"dockerd": [], "containerd": [], "shims": []}
        for pid in ours:
            with contextlib.suppress(OSError):
                name = Path(f"/proc/{pid}/exe").resolve().name
                part = "shims" if name.startswith("containerd-shim") else name
                if part in parts:
                    parts[part].append(pid)
        return Memory(parts, pids, groups)


@contextlib.contextmanager
def docker_side(workdir: Path | None, archive: Path, compose: str) -> Iterator[DockerSide]:
    """A dockerd of our own on scratch paths, with the busybox archive loaded."""
    from support.dockerd import host_snapshot, restore_host, stop_dockerd

    if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0:
        raise SystemExit("a dockerd is running already: stop it, this bench starts its own")
    before = host_snapshot()
    groups_before = set(glob.glob("/sys/fs/cgroup/*/docker"))
    scratch = Path(tempfile.mkdtemp(prefix="stkb-", dir=workdir))  # short: socket path limit
    log = (scratch / "dockerd.log").open("w")
    daemon = subprocess.Popen(
        ["dockerd", "--data-root", str(scratch / "data"), "--exec-root", str(scratch / "exec"),
         "--pidfile", str(scratch / "dockerd.pid"), "-H", f"unix://{scratch}/docker.sock"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "API listen on" not in (scratch / "dockerd.log").read_text():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("dockerd did not start:\n"
                                 + (scratch / "dockerd.log").read_text()[-2000:])
            time.sleep(0.1)
        side = DockerSide(scratch, compose)
        subprocess.run(["docker", "load", "-q", "-i", str(archive)], env=side.env, check=True,
                       capture_output=True)
        yield side
    finally:
        stop_dockerd(daemon, scratch)
        log.close()
        restore_host(before)
        for group in set(glob.glob("/sys/fs/cgroup/*/docker")) - groups_before:
            with contextlib.suppress(OSError):  # the parent group dockerd made, now empty
                os.rmdir(group)
        shutil.rmtree(scratch, ignore_errors=True)


# --- the cycles ------------------------------------------------------------------------------


@dataclass
class Result:
    times: dict[str, float]  # step -> median seconds; a step not run is missing
    memory: MemoryFigures


def measure(side: Side, project: Path, count: int, runs: int) -> Result:
    """The median time of each step over `runs` cycles, and the memory in the first one."""
    times: dict[str, list[float]] = {step: [] for step in TARGETS}
    memory = None
    try:
        for cycle in range(runs):
            times["up -d"].append(side.command(project, "up", "-d"))
            running = len(side.output(project, "ps", "-q").split())
            if running != count:
                raise RuntimeError(f"{side.label}: {running} of {count} containers running")
            for _ in range(3):
                times["no-op up -d"].append(side.command(project, "up", "-d"))
                if side.has_run:
                    times["run --rm"].append(side.command(project, "run", "--rm", "s01", "true"))
            if cycle == 0:
                time.sleep(2)  # let the kernel settle (lazy frees, per-cpu caches)
                memory = side.memory(project).figures(count)
            times["down"].append(side.command(project, "down"))
    finally:
        side.command(project, "down", check=False)
    assert memory is not None
    result = Result({step: statistics.median(v) for step, v in times.items() if v}, memory)
    steps = ", ".join(f"{step} {took:.3f} s" for step, took in result.times.items())
    print(f"{side.label}, {count} services: {steps}, engine RSS {memory.rss / MIB:.1f} MB",
          flush=True)  # as it goes: the tables come at the end
    return result


def report(count: int, results: dict[str, Result]) -> None:
    """One table per stack size: a column per engine, the targets beside the 50's."""
    with_targets = count == 50
    print(f"\n{count} services".ljust(17) + "".join(f"{side:>20}" for side in results)
          + ("      target" if with_targets else ""))

    def row(label: str, cells: list[str], target: str) -> None:
        line = f"  {label:<15}" + "".join(f"{cell:>20}" for cell in cells)
        print((line + (f"      {target}" if with_targets else "")).rstrip())

    for step, target in TARGETS.items():
        row(step, [f"{r.times[step]:.3f} s" if step in r.times else "skipped"
                   for r in results.values()], f"<= {target} s")
    memories = [r.memory for r in results.values()]
    row("engine RSS", [f"{m.rss / MIB:.1f} MB" for m in memories],
        f"<= {MEMORY_TARGET // MIB} MB")
    row("engine Pss", [f"{m.pss / MIB:.1f} MB" for m in memories], "")
    row("kernel/cont.", [f"{m.per_container / 1024:.0f} KiB" for m in memories], "")
    for side, result in results.items():
        print(f"  {side} engine RSS, MB: {result.memory.detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", default="10,50",
                        help="stack sizes, comma-separated (default 10,50)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--docker", action="store_true",
                        help="the same with Docker Compose v2 + a dockerd of our own")
    parser.add_argument("--compose", default=os.environ.get("STACK_BENCH_COMPOSE")
                        or shutil.which("docker-compose"),
                        help="the Docker Compose v2 binary (default $STACK_BENCH_COMPOSE, "
                             "else docker-compose on the PATH)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("containers need root")
    if args.docker and not args.compose:
        raise SystemExit("--docker: no compose binary; give --compose PATH")
    sizes = [int(n) for n in args.services.split(",")]
    print(f"stack CLI: {sys.executable} -m orchestrator.cli.main, {install_kind()}", flush=True)
    os.environ["STACK_CGROUP_PARENT"] = f"stack/bench-{os.getpid()}"
    root = Path(tempfile.mkdtemp(prefix="stack-bench-", dir=args.workdir))
    results: dict[int, dict[str, Result]] = {n: {} for n in sizes}
    try:
        archive = write_docker_archive_classic(root / "busybox.tar", [busybox_image()])
        projects = {}
        for count in sizes:
            projects[count] = root / "projects" / f"bench{count}"
            projects[count].mkdir(parents=True)
            (projects[count] / "compose.yaml").write_text(stack_file(count))
        ours = StackSide(root / "state")
        try:
            ours.start(archive)
            if not ours.has_run:
                print("note: this stack has no `run` verb yet: run --rm is skipped")
            for count in sizes:
                results[count]["stack"] = measure(ours, projects[count], count, args.runs)
        except BaseException:
            show_log_tail(root / "state" / "stackd.log")  # the workdir goes with the run
            raise
        finally:
            ours.close()
        if args.docker:
            with docker_side(args.workdir, archive, args.compose) as docker:
                for count in sizes:
                    results[count]["docker compose"] = measure(docker, projects[count], count,
                                                               args.runs)
        for count in sizes:
            report(count, results[count])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def install_kind() -> str:
    """`pip install .` (a user's) or an editable install / source tree (slower to start)."""
    where = "import orchestrator; print(orchestrator.__file__)"
    found = subprocess.run([sys.executable, "-c", where], capture_output=True, text=True,
                           cwd="/").stdout.strip()
    if "site-packages" in found:
        return "installed (pip install .)"
    return "editable install or source tree: every command starts some 20 ms slower"


def show_log_tail(path: Path, lines: int = 40) -> None:
    with contextlib.suppress(OSError):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- the last lines of {path.name}:", *tail, sep="\n", file=sys.stderr)


if __name__ == "__main__":
    main()
