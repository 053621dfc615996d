"""Time container networking with the real runtime: DNS, published ports, setup.

    python bench/network_bench.py [--lookups 2000] [--megabytes 1024] [--rounds 5]
                                  [--containers 30] [--docker] [--workdir DIR]

Loads the busybox test image (tests/support/images.py) into a fresh state
root, runs our DNS server in this process (no upstream: only our names) and
takes subnets from STACK_ADDRESS_POOLS (10.213.0.0/16:24 unless set). Our
part runs in a network namespace of its own, made at start (with a mount
namespace, as `ip netns exec` makes one): the same kernel paths, but its
bridges, nftables table, iptables chains and sysctls are private, so an
engine at work on this host or a test run (each rebuilds its own table from
its own state, and sets host-wide sysctls) neither disturbs it nor is
disturbed, and the host's settings stay as they were. A veth there holds
"the host's own address".
It prints:
- DNS: a container on the host's userland (`x-stack: {rootfs: /}`) sends
  --lookups queries for a service name, one at a time, to the nameserver of
  its /etc/resolv.conf and times each round trip itself; p50 / p99 / max.
  A client per lookup (busybox `nslookup`) would time fork and exec, not DNS.
- TCP: the host sends --megabytes to a container that sinks them, directly
  to the container's address and through its published port (127.0.0.1 and
  the host's own address), --rounds times each, in turns; MB/s (median and
  best) each, and the published / direct ratio of the medians. Sender and
  sink need a core each: on a busy machine the figures scatter. With
  --docker, the same first, on the host, through a container of a dockerd
  started for the occasion (scratch data, exec and socket paths) that runs
  the same sink: 127.0.0.1 is served by docker-proxy (a userland copy), the
  host's address by Docker's DNAT. dockerd is stopped afterwards and what
  it left on the host removed (tests/support/dockerd.py).
- setup: --containers containers started one after the other on one network
  (each stays running): `networks.reserve` (addresses, then the nftables and
  iptables rules rebuilt from state), `networks.plug` (veth, address, route)
  and their sum; then create + start with a network versus with
  `network_mode: none`, and `networks.release` as they are removed.
Targets (issue 5): DNS p50 <= 1 ms; published port >= 90% of direct;
reserve + plug <= 15 ms per container.
Everything it starts is removed on exit, Ctrl-C included; what the cleanup
missed in the bench's namespace is reported before the namespace goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from support.containers import ServiceRunner  # noqa: E402
from support.dockerd import running_dockerd  # noqa: E402
from support.images import busybox_image, write_docker_archive_classic  # noqa: E402

from orchestrator.runtime.containers import linux  # noqa: E402
from orchestrator.runtime.containers.service_container import (  # noqa: E402
    create_service_container,
    start_container,
)
from orchestrator.runtime.containers.state import container_ids  # noqa: E402
from orchestrator.runtime.images.exchange import load_archive  # noqa: E402
from orchestrator.runtime.images.store import ImageStore  # noqa: E402
from orchestrator.runtime.network import links, nftables  # noqa: E402
from orchestrator.runtime.network.dns_answer import DnsAnswerer  # noqa: E402
from orchestrator.runtime.network.dns_server import DnsServer  # noqa: E402
from orchestrator.runtime.network.ipam import ADDRESS_POOLS_VARIABLE  # noqa: E402
from orchestrator.runtime.network.manager import NetworkManager  # noqa: E402

BENCH_POOLS = "10.213.0.0/16:24"  # away from Docker's defaults and the tests' subnets
# The host's own address, as the bench's namespace has it (TEST-NET-2: routed nowhere).
UPLINK = "uplink0"
UPLINK_ADDRESS = "198.51.100.1"
SINK_PORT = 5001
CHUNK = 1 << 20

# Asks for argv[1] argv[2] times, one query in flight, and prints the nameserver,
# then every round trip in nanoseconds. The query is built by hand: the host's
# userland has no DNS library for its own python3.
DNS_CLIENT = """
import socket, struct, sys, time
name, count = sys.argv[1], int(sys.argv[2])
with open("/etc/resolv.conf") as conf:
    server = next(line.split()[1] for line in conf if line.startswith("nameserver"))
question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.connect((server, 53))
client.settimeout(2)
times = []
for number in range(count):
    query = struct.pack("!6H", number & 0xFFFF, 0x0100, 1, 0, 0, 0) + question
    query += struct.pack("!2H", 1, 1)
    began = time.perf_counter_ns()
    client.send(query)
    reply = client.recv(4096)
    while reply[:2] != query[:2]:
        reply = client.recv(4096)
    times.append(time.perf_counter_ns() - began)
    if reply[3] & 15 or not struct.unpack("!H", reply[6:8])[0]:
        sys.exit(f"no address for {name}: rcode {reply[3] & 15}")
print(server)
print(" ".join(map(str, times)))
"""

# Reads each connection to its end, then tells the sender how many bytes came,
# so a transfer is timed to its last byte, not to the sender's last write.
SINK = f"""
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", {SINK_PORT}))
server.listen()
buffer = bytearray({CHUNK})
while True:
    connection, _ = server.accept()
    total = 0
    while received := connection.recv_into(buffer):
        total += received
    connection.sendall(str(total).encode())
    connection.close()
"""


class TimedNetworkManager(NetworkManager):
    """The real manager, timing the steps a container's networking is made of."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.times: dict[str, list[float]] = defaultdict(list)
        # The two tools the host's rules are made with, timed where the manager calls them.
        for name, step in (("apply_ruleset", "nft"), ("ensure_forward_accepts", "iptables")):
            setattr(nftables, name, self.timing(getattr(nftables, name), step))

    def timing(self, function: Callable[..., Any], step: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timed(step):
                return function(*args, **kwargs)

        return timed

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.times[step].append(time.perf_counter() - began)

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        with self.timed("reserve"):
            return super().reserve(*args, **kwargs)

    async def plug(self, container_id: str, pid: int) -> None:
        with self.timed("plug"):
            await super().plug(container_id, pid)

    def release_now(self, container_id: str) -> None:
        with self.timed("release"):
            super().release_now(container_id)

    def _sync_host(self, *, force: bool = False) -> None:
        with self.timed("host rules"):
            super()._sync_host(force=force)


class NetworkBench:
    def __init__(self, root: Path, manager: TimedNetworkManager):
        project_dir = root / "project"
        project_dir.mkdir(exist_ok=True)
        self.manager = manager
        self.runner = ServiceRunner(root, project_dir, project="netbench", networks=manager)

    def model(self, services: dict[str, Any]) -> dict[str, Any]:
        # JSON is YAML, and the loader normalizes it as it would a user's stack file
        # (the default network included); a command list needs no quoting.
        return self.runner.model(json.dumps({"services": services}))

    async def create_networks(self, services: dict[str, Any]) -> None:
        await self.runner.create_networks(json.dumps({"services": services}))

    async def start(self, model: dict[str, Any], service: str, number: int = 1) -> str:
        container = create_service_container(
            self.runner.runtime, self.runner.images, self.runner.volumes,
            model["services"][service], project=self.runner.project,
            project_dir=str(self.runner.project_dir), service_name=service, number=number,
            project_model=model, project_environment=dict(os.environ), networks=self.manager,
        )
        await start_container(self.runner.runtime, self.manager, container.id)
        return container.id

    def endpoint(self, container_id: str) -> Any:
        return self.manager.get(f"{self.runner.project}_default").endpoints[container_id]

    async def remove_containers(self) -> None:
        await self.runner.remove_all()

    # --- DNS ------------------------------------------------------------------------------

    async def dns_lookups(self, count: int) -> tuple[str, list[float]]:
        services = {
            "web": {"image": "busybox", "command": ["sleep", "600"]},
            "resolver": {"x-stack": {"rootfs": "/"},
                         "command": ["python3", "-c", DNS_CLIENT, "web", str(count)]},
        }
        await self.create_networks(services)
        model = self.model(services)
        await self.start(model, "web")
        resolver = await self.start(model, "resolver")
        with trio.fail_after(60 + count / 100):
            state = await self.runner.runtime.wait(resolver)
        stdout, stderr = self.runner.output(resolver)
        if state.exit_code != 0:
            raise SystemExit(f"the DNS client failed ({state.exit_code}): {stderr.strip()}")
        server, times = stdout.splitlines()[-2:]
        return server, [int(t) / 1e9 for t in times.split()]

    # --- TCP ------------------------------------------------------------------------------

    async def sink(self) -> tuple[str, int]:
        """A running sink container: its address and its published host port."""
        services = {"sink": {"x-stack": {"rootfs": "/"}, "ports": [str(SINK_PORT)],
                             "command": ["python3", "-c", SINK]}}
        await self.create_networks(services)
        endpoint = self.endpoint(await self.start(self.model(services), "sink"))
        [published] = endpoint.ports
        return endpoint.address, int(published["host_port"])

    # --- setup ----------------------------------------------------------------------------

    async def setup_times(self, count: int) -> dict[str, list[float]]:
        services = {
            "app": {"image": "busybox", "command": ["sleep", "600"]},
            "bare": {"image": "busybox", "command": ["sleep", "600"], "network_mode": "none"},
        }
        await self.create_networks(services)
        model = self.model(services)
        for number in range(1, 4):  # warm the page cache and the keeper
            await self.start(model, "app", 1000 + number)
            await self.start(model, "bare", 1000 + number)
        await self.remove_containers()
        figures: dict[str, list[float]] = defaultdict(list)
        for service, label in (("app", "networked"), ("bare", "none")):
            self.manager.times.clear()
            for number in range(1, count + 1):
                began = time.perf_counter()
                await self.start(model, service, number)
                figures[label].append(time.perf_counter() - began)
            if service == "app":
                figures |= {step: list(t) for step, t in self.manager.times.items()}
        self.manager.times.clear()
        await self.remove_containers()
        figures["release"] = list(self.manager.times["release"])
        return figures


# --- measuring ----------------------------------------------------------------------------


def send(address: str, port: int, megabytes: int) -> float:
    """Seconds to send `megabytes` MiB to a sink and hear that all of it arrived."""
    chunk = memoryview(bytes(CHUNK))
    with socket.create_connection((address, port), timeout=30) as connection:
        began = time.perf_counter()
        for _ in range(megabytes):
            connection.sendall(chunk)
        connection.shutdown(socket.SHUT_WR)
        answer = connection.recv(64)
        took = time.perf_counter() - began
    if int(answer or b"-1") != megabytes * CHUNK:
        raise SystemExit(f"{address}:{port}: the sink got {answer!r} bytes")
    return took


def wait_listening(address: str, port: int, timeout: float = 10) -> None:
    """Until the sink answers an empty transfer there (a proxy may accept before it does)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(
            (address, port), timeout=2
        ) as connection:
            connection.shutdown(socket.SHUT_WR)
            if connection.recv(64) == b"0":
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing sinks data on {address}:{port}")
        time.sleep(0.05)


def throughput(
    paths: dict[str, tuple[str, int]], megabytes: int, rounds: int
) -> dict[str, list[float]]:
    """MB/s of each of `rounds` transfers on each path (label -> address, port), the paths
    taken in turns so that a busy moment of the machine does not land on one path only."""
    for address, port in paths.values():
        wait_listening(address, port)
    rates: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for label, (address, port) in paths.items():
            try:
                rates[label].append(megabytes * CHUNK / 1e6 / send(address, port, megabytes))
            except OSError as error:
                raise SystemExit(f"TCP {label}: {error}") from None
    return rates


def host_address() -> str | None:
    """An address of this host that is not loopback and not on a container bridge."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        words = line.split()
        if not words[1].startswith(("stk-", "vstk", "docker", "veth", "br-")):
            return words[3].split("/")[0]
    return None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def report(label: str, values: list[float], high: float = 0.95, unit: float = 1000) -> None:
    name = "ms" if unit == 1000 else "us"
    if not values:
        print(f"  {label:<40} not run (nothing changed)")
        return
    print(
        f"  {label:<40} p50 {statistics.median(values) * unit:7.2f} {name}   "
        f"p{high * 100:.0f} {percentile(values, high) * unit:7.2f} {name}   "
        f"max {max(values) * unit:7.2f} {name}"
    )


def report_rates(rates: dict[str, list[float]], direct: str) -> None:
    """Median and best MB/s per path; the ratio of medians to the direct path."""
    middle = {label: statistics.median(values) for label, values in rates.items()}
    for label, values in rates.items():
        ratio = "" if label == direct else f"   {middle[label] / middle[direct]:6.1%} of direct"
        print(f"  {label:<40} p50 {middle[label]:6.0f} MB/s   best {max(values):6.0f} MB/s"
              f"{ratio}")


# --- the whole run --------------------------------------------------------------------------


def left_behind(root: Path) -> list[str]:
    """What the cleanup missed: containers, their keeper, and in the bench's namespace our
    table, bridges and veths."""
    found = [f"container {i[:12]}" for i in container_ids(root / "containers")]
    deadline = time.monotonic() + 2  # a keeper told to shut down answers, then exits
    while (keepers := keeper_processes(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    found += [f"keeper process {pid}" for pid in keepers]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    # The namespace is the bench's own: any table of a stack engine here is a leak.
    found += [t for t in tables.splitlines() if t.split("_")[0] == "table ip stack"]
    return found + links.our_links()


def keeper_processes(root: Path) -> list[str]:
    """The keeper of this state root, unless it has exited (a zombie until we exit)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if b"orchestrator.runtime.containers.keeper" in argv and \
                    str(root / "containers").encode() in argv:
                found.append(entry)
    return found


def enter_private_network() -> None:
    """This process, from now on, in a network namespace of its own with a mount namespace
    to match, as `ip netns exec` does: sysfs shows a namespace's own links only when mounted
    from inside it (links.py writes /sys/class/net/<veth>/...), and the cgroup tree mounted
    under /sys is bound back over the new sysfs. Called while the process has one thread:
    threads made later inherit these namespaces."""
    linux.unshare(linux.CLONE_NEWNET | linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)  # our mounts stay ours
    aside = tempfile.mkdtemp(prefix="stack-bench-cgroup-")
    try:
        linux.mount("/sys/fs/cgroup", aside, None, linux.MS_BIND | linux.MS_REC)
        linux.mount("sysfs", "/sys", "sysfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        linux.mount(aside, "/sys/fs/cgroup", None, linux.MS_BIND | linux.MS_REC)
        linux.umount(aside, linux.MNT_DETACH)
    finally:
        os.rmdir(aside)
    for command in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", UPLINK, "type", "veth", "peer", "name", UPLINK + "p"],
        ["ip", "address", "add", f"{UPLINK_ADDRESS}/24", "dev", UPLINK],
        ["ip", "link", "set", UPLINK, "up"],
    ):
        subprocess.run(command, check=True)


async def run_ours(args: argparse.Namespace, root: Path) -> None:
    async with trio.open_nursery() as nursery:
        answerer = DnsAnswerer()
        dns = DnsServer(answerer, upstreams=[])
        await nursery.start(dns.run)
        manager = TimedNetworkManager(root, answerer, dns)
        bench = NetworkBench(root, manager)
        try:
            await bench.runner.runtime.keeper.request({"op": "ping"})  # once per host
            server, lookups = await bench.dns_lookups(args.lookups)
            print(f"DNS, {len(lookups)} lookups of a service name from a container "
                  f"(server {server}, in this process):")
            report("round trip", lookups, high=0.99, unit=1e6)
            await bench.remove_containers()

            address, port = await bench.sink()
            paths = {f"direct to {address}:{SINK_PORT}": (address, SINK_PORT),
                     f"published, 127.0.0.1:{port}": ("127.0.0.1", port),
                     f"published, {UPLINK_ADDRESS}:{port} (uplink)": (UPLINK_ADDRESS, port)}
            rates = await trio.to_thread.run_sync(
                throughput, paths, args.megabytes, args.rounds)
            print(f"TCP, {args.megabytes} MiB from the host to a container, "
                  f"{args.rounds} times each:")
            report_rates(rates, next(iter(paths)))
            await bench.remove_containers()

            figures = await bench.setup_times(args.containers)
            plugged = [r + p for r, p in zip(figures["reserve"], figures["plug"], strict=True)]
            print(f"Network setup, {args.containers} containers one after the other:")
            report("networks.reserve", figures["reserve"])
            report("  of which the host's rules", figures["host rules"])
            report("    nft -f (the whole table)", figures["nft"])
            report("    iptables (Docker's FORWARD)", figures["iptables"])
            report("networks.plug", figures["plug"])
            report("reserve + plug", plugged)
            report("create+start, on a network", figures["networked"])
            report("create+start, network_mode: none", figures["none"])
            added = statistics.median(figures["networked"]) - statistics.median(figures["none"])
            print(f"  {'networking adds (p50 difference)':<40} {added * 1000:7.2f} ms")
            report("networks.release (on remove)", figures["release"])
        finally:
            # Shielded: a Ctrl-C landing in the DNS server's task cancels this nursery,
            # and the cleanup must still run to its end.
            with trio.CancelScope(shield=True):
                try:
                    await bench.remove_containers()
                    # Interrupted between reserve and create, an endpoint has no container.
                    for network in manager.list():
                        for container_id in list(network.endpoints):
                            await manager.release(container_id)
                    for network in manager.list():
                        await manager.remove(network.name)
                finally:
                    await stop_keeper(bench, root)
            nursery.cancel_scope.cancel()


async def stop_keeper(bench: NetworkBench, root: Path) -> None:
    """Stop this root's keeper; one interrupted while starting has no socket yet, and
    shutting down looks for the socket only: wait for it first."""
    keeper = bench.runner.runtime.keeper
    with trio.move_on_after(5):
        while keeper_processes(root) and not await keeper.running():
            await trio.sleep(0.01)
    await bench.runner.runtime.shutdown_keeper()


def docker_command() -> list[str]:
    """The docker CLI, talking to the dockerd this process started (its child), or to the
    default socket when a dockerd was running already."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != os.getpid():
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
            if Path(argv[0]).name == "dockerd" and "-H" in argv:
                return ["docker", "-H", argv[argv.index("-H") + 1]]
    return ["docker"]


def docker_proxies(port: int) -> int:
    """How many docker-proxy processes serve host port `port`."""
    found = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"docker-proxy") and str(port).encode() in argv:
                found += 1
    return found


def run_docker(args: argparse.Namespace, archive: Path) -> Callable[[], None]:
    """Measure through dockerd's container; what prints the figures."""
    with running_dockerd():
        docker = docker_command()

        def call(*words: str) -> str:
            done = subprocess.run([*docker, *words], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"docker {words[0]}: {done.stderr.strip()}")
            return done.stdout.strip()

        call("load", "-i", str(archive))
        # Docker's busybox runs the same sink as ours: the host's python3, through chroot.
        container = call("run", "-d", "-p", str(SINK_PORT), "-v", "/:/host:ro", "busybox",
                         "/bin/busybox", "chroot", "/host", "/usr/bin/python3", "-c", SINK)
        try:
            address = call("inspect", "-f", "{{.NetworkSettings.IPAddress}}", container)
            ports = call("port", container, f"{SINK_PORT}/tcp").splitlines()
            port = int(next(p for p in ports if p.startswith("0.0.0.0:")).rsplit(":", 1)[1])
            paths = {f"direct to {address}:{SINK_PORT}": (address, SINK_PORT),
                     f"docker-proxy, 127.0.0.1:{port}": ("127.0.0.1", port)}
            if (host := host_address()) is not None:
                paths[f"Docker's DNAT, {host}:{port}"] = (host, port)
            rates = throughput(paths, args.megabytes, args.rounds)
            proxies = docker_proxies(port)
        finally:
            subprocess.run([*docker, "rm", "-f", container], capture_output=True, check=False)

    def print_figures() -> None:
        print(f"TCP through dockerd {version('dockerd')}'s container, on the host, "
              f"{args.rounds} times each ({proxies} docker-proxy processes on port {port}):")
        report_rates(rates, next(iter(paths)))

    return print_figures


def version(tool: str) -> str:
    words = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.split()
    return words[2].rstrip(",") if len(words) > 2 else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--containers", type=int, default=30)
    parser.add_argument("--docker", action="store_true",
                        help="also measure docker-proxy (starts and stops a dockerd)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("the bench needs root (namespaces, bridges, nftables)")
    if args.docker and shutil.which("dockerd") is None:
        parser.error("--docker needs dockerd (Debian: docker.io)")
    os.environ.setdefault(ADDRESS_POOLS_VARIABLE, BENCH_POOLS)
    root = Path(tempfile.mkdtemp(prefix="stack-bench-", dir=args.workdir))
    try:
        archive = write_docker_archive_classic(root / "busybox.tar", [busybox_image()])
        # Docker's part first, on the host where users run it: a process cannot go back
        # to the host's mount namespace once trio's worker threads exist.
        docker_figures = run_docker(args, archive) if args.docker else None
        enter_private_network()
        try:
            with ImageStore(root / "images") as store:
                load_archive(store, str(archive))
            trio.run(run_ours, args, root)
        finally:
            if left := left_behind(root):
                print(f"the cleanup left: {', '.join(left)}", file=sys.stderr)
        if docker_figures is not None:
            docker_figures()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
