"""Our nftables table on real bridges, with real packets, in throwaway namespaces.

A lab of network namespaces stands in for a host: `host` holds the bridges,
our table and a listener; `out` is another machine on the host's uplink; each
container is a namespace with a veth on a bridge. nftables tables and iptables
chains are per namespace, so nothing here touches the machine's own rules. The
code under test runs inside the lab host through `ip netns exec`.

The last test starts a real dockerd on the machine itself (Docker's rules live
in the initial namespace) and puts the machine back as it found it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.dockerd import running_dockerd

from orchestrator.runtime.network import nft_rules
from orchestrator.runtime.network.nftables import ensure_forward_accepts, remove_forward_accepts
from orchestrator.runtime.network.owner import Owner

if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("ip", "nft", "iptables")):
    pytest.skip("nftables tests need root, ip, nft and iptables", allow_module_level=True)

REPO = Path(__file__).resolve().parents[3]
TAG = f"t{os.getpid() % 100000}"  # keeps names unique per run and within 15 bytes
HOST = f"stktest-{TAG}-host"
OUT = f"stktest-{TAG}-out"
UPLINK = "198.51.100.1"  # the lab host's address on its uplink
OUTSIDE = "198.51.100.2"
OWNER = Owner(f"{os.getpid():010x}")  # this run's state root (unique on the machine too)
NEIGHBOUR = Owner("abcdefabcd")  # another state root's engine on the same host
TABLE = OWNER.table
# Calls of nftables' functions, as call_nftables runs them in the lab.
APPLY = f"apply_ruleset({TABLE!r}, sys.stdin.read())"
CURRENT = f"current_ruleset({TABLE!r})"

FRONT = {"name": "shop_front", "bridge": f"stk-{TAG}f", "subnet": "10.77.1.0/24",
         "gateway": "10.77.1.1", "internal": False}  # fmt: skip
BACK = {"name": "shop_back", "bridge": f"stk-{TAG}b", "subnet": "10.77.2.0/24",
        "gateway": "10.77.2.1", "internal": False}  # fmt: skip
SECRET = {"name": "shop_secret", "bridge": f"stk-{TAG}s", "subnet": "10.77.3.0/24",
          "gateway": "10.77.3.1", "internal": True}  # fmt: skip
NETWORKS = [FRONT, BACK, SECRET]
# container name -> (network, address)
CONTAINERS = {
    "c1": (FRONT, "10.77.1.2"),
    "c2": (FRONT, "10.77.1.3"),
    "c3": (BACK, "10.77.2.2"),
    "c4": (SECRET, "10.77.3.2"),
    "c5": (SECRET, "10.77.3.3"),
}


def render_ruleset(networks: list[dict], ports: list[dict]) -> str:
    return nft_rules.render_ruleset(networks, ports, table=TABLE)


def accepts(bridges: list[str], owner: Owner = OWNER) -> str:
    return f"ensure_forward_accepts({bridges!r}, {owner!r})"


def published(container: str, host_port: int, protocol: str, host_ip: str = "") -> dict:
    network, address = CONTAINERS[container]
    return {
        "container_id": container * 32,
        "container_name": f"shop-{container}",
        "network": network["name"],
        "container_address": address,
        "host_ip": host_ip,
        "host_port": host_port,
        "container_port": 80,
        "protocol": protocol,
    }


PORTS = [
    published("c1", 8080, "tcp"),
    published("c1", 8080, "udp"),
    published("c2", 8081, "tcp", host_ip="127.0.0.1"),
]

# Answers every TCP connection and UDP datagram with "<name> saw <source address>".
SERVER = r"""
import socket, sys, threading
name, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
def serve_tcp(sock):
    while True:
        conn, (address, _) = sock.accept()
        with conn:
            conn.sendall(f"{name} saw {address}".encode())
def serve_udp(sock):
    while True:
        _, source = sock.recvfrom(200)
        sock.sendto(f"{name} saw {source[0]}".encode(), source)
for port in ports:
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
    threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CLIENT = r"""
import socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if proto == "tcp":
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(2.0)
            print(sock.recv(200).decode())
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            sock.sendto(b"?", (host, port))
            print(sock.recv(200).decode())
except OSError as error:
    print(f"unreachable: {error}")
"""


def sh(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def in_ns(ns: str | None, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args] if ns else list(args)


def probe(ns: str | None, host: str, port: int, proto: str = "tcp") -> str:
    """What a client in namespace `ns` gets from host:port ("unreachable: ..." if nothing)."""
    return sh(*in_ns(ns, sys.executable, "-c", CLIENT, host, str(port), proto)).strip()


def call_nftables(ns: str, call: str, stdin: str = "") -> str:
    """Run `nftables.<call>` inside `ns`; its result printed, or "StackError: <message>"."""
    code = (
        "import sys\n"
        "from orchestrator.runtime.network import nftables\n"
        "from orchestrator.runtime.network.owner import Owner\n"
        "from orchestrator.spec.errors import StackError\n"
        "try:\n"
        f"    result = nftables.{call}\n"
        "except StackError as error:\n"
        "    print(f'StackError: {error}', end='')\n"
        "    sys.exit(0)\n"
        "print('' if result is None else result, end='')\n"
    )
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    result = subprocess.run(
        in_ns(ns, sys.executable, "-c", code),
        input=stdin, capture_output=True, text=True, timeout=30, env=env, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


class Lab:
    """Namespaces, links and listeners, all removed by `close` whatever happened."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.servers: list[subprocess.Popen[str]] = []

    def namespace(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def serve(self, ns: str | None, name: str, *ports: int) -> None:
        server = subprocess.Popen(
            in_ns(ns, sys.executable, "-c", SERVER, name, *map(str, ports)),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.servers.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

    def close(self) -> None:
        for server in self.servers:
            server.terminate()
            server.wait(timeout=10)
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)


def plug(
    host_ns: str | None, lab: Lab, container: str, bridge: str, address: str, gateway: str
) -> str:
    """A container namespace with eth0 on `bridge`, default route via the gateway."""
    ns = lab.namespace(f"stktest-{TAG}-{container}")
    veth = f"vstk{TAG}{container}"
    ip = ["ip", "-n", host_ns] if host_ns else ["ip"]
    sh(*ip, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh(*ip, "link", "set", veth, "master", bridge, "up")
    # br_netfilter DNATs on the bridge: a container reaching its own published
    # port gets the frame back out of the port it came in by (what the engine sets).
    sh(*ip, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
    sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "route", "add", "default", "via", gateway)
    lab.serve(ns, container, 80)
    return ns


def add_bridge(host_ns: str | None, network: dict) -> None:
    ip = ["ip", "-n", host_ns] if host_ns else ["ip"]
    prefix = network["subnet"].split("/")[1]
    sh(*ip, "link", "add", network["bridge"], "type", "bridge")
    sh(*ip, "addr", "add", f"{network['gateway']}/{prefix}", "dev", network["bridge"])
    sh(*ip, "link", "set", network["bridge"], "up")


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, str]]:
    """The lab with our ruleset for NETWORKS and PORTS loaded in its host: name -> netns."""
    lab = Lab()
    try:
        lab.namespace(HOST)
        lab.namespace(OUT)
        sh(*in_ns(HOST, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        sh("ip", "-n", HOST, "link", "add", f"vstk{TAG}o", "type", "veth",
           "peer", "name", "eth0", "netns", OUT)  # fmt: skip
        sh("ip", "-n", HOST, "addr", "add", f"{UPLINK}/24", "dev", f"vstk{TAG}o")
        sh("ip", "-n", HOST, "link", "set", f"vstk{TAG}o", "up")
        sh("ip", "-n", OUT, "addr", "add", f"{OUTSIDE}/24", "dev", "eth0")
        sh("ip", "-n", OUT, "link", "set", "eth0", "up")
        for network in NETWORKS:
            add_bridge(HOST, network)
            # What the engine sets so that 127.0.0.1-published ports work.
            sh(*in_ns(HOST, "sysctl", "-qw", f"net.ipv4.conf.{network['bridge']}.route_localnet=1"))
            # The outside machine may try the container addresses directly.
            sh("ip", "-n", OUT, "route", "add", network["subnet"], "via", UPLINK)
        names = {"host": HOST, "out": OUT}
        for container, (network, address) in CONTAINERS.items():
            names[container] = plug(HOST, lab, container, network["bridge"], address,
                                    network["gateway"])  # fmt: skip
        lab.serve(HOST, "host", 9000)
        lab.serve(HOST, "dns", 53)
        lab.serve(OUT, "out", 80)
        call_nftables(HOST, APPLY, render_ruleset(NETWORKS, PORTS))
        yield names
    finally:
        lab.close()


@pytest.fixture
def bare_ns() -> Iterator[str]:
    lab = Lab()
    try:
        yield lab.namespace(f"stktest-{TAG}-bare")
    finally:
        lab.close()


def test_container_reaches_outside_with_the_host_address(lab: dict[str, str]) -> None:
    assert probe(lab["c1"], OUTSIDE, 80) == f"out saw {UPLINK}"
    assert probe(lab["c3"], OUTSIDE, 80, "udp") == f"out saw {UPLINK}"


def test_containers_on_one_network_reach_each_other(lab: dict[str, str]) -> None:
    assert probe(lab["c1"], "10.77.1.3", 80) == "c2 saw 10.77.1.2"
    assert probe(lab["c4"], "10.77.3.3", 80) == "c5 saw 10.77.3.2"


def test_published_tcp_port_answers_on_loopback_host_address_and_from_outside(
    lab: dict[str, str],
) -> None:
    assert probe(lab["host"], "127.0.0.1", 8080) == "c1 saw 10.77.1.1"
    assert probe(lab["host"], UPLINK, 8080) == f"c1 saw {UPLINK}"
    assert probe(lab["out"], UPLINK, 8080) == f"c1 saw {OUTSIDE}"


def test_published_udp_port_answers_on_loopback_and_from_outside(lab: dict[str, str]) -> None:
    assert probe(lab["host"], "127.0.0.1", 8080, "udp") == "c1 saw 10.77.1.1"
    assert probe(lab["out"], UPLINK, 8080, "udp") == f"c1 saw {OUTSIDE}"


def test_port_published_on_127_0_0_1_answers_only_there(lab: dict[str, str]) -> None:
    assert probe(lab["host"], "127.0.0.1", 8081) == "c2 saw 10.77.1.1"
    assert probe(lab["out"], UPLINK, 8081).startswith("unreachable")


def test_containers_reach_published_ports_through_the_host_address(lab: dict[str, str]) -> None:
    assert probe(lab["c2"], UPLINK, 8080) == "c1 saw 10.77.1.1", "hairpin to a neighbour"
    assert probe(lab["c1"], UPLINK, 8080) == "c1 saw 10.77.1.1", "hairpin to itself"
    # Leaving its own network, c3's traffic is masqueraded like any egress (as with Docker).
    assert probe(lab["c3"], UPLINK, 8080) == "c1 saw 10.77.1.1", "from another network"


def test_networks_are_isolated_from_each_other(lab: dict[str, str]) -> None:
    assert probe(lab["c3"], "10.77.1.2", 80).startswith("unreachable")
    assert probe(lab["c1"], "10.77.2.2", 80, "udp").startswith("unreachable")


def test_unpublished_container_is_not_reachable_from_outside(lab: dict[str, str]) -> None:
    assert probe(lab["out"], "10.77.1.2", 80).startswith("unreachable")


def test_internal_network_reaches_nothing_outside_it_but_dns(lab: dict[str, str]) -> None:
    assert probe(lab["c4"], OUTSIDE, 80).startswith("unreachable")
    assert probe(lab["c4"], "10.77.3.1", 9000).startswith("unreachable"), "host listener"
    assert probe(lab["c4"], "10.77.1.2", 80).startswith("unreachable"), "other network"
    assert probe(lab["c4"], "10.77.3.1", 53, "udp") == "dns saw 10.77.3.2"
    assert probe(lab["out"], "10.77.3.2", 80).startswith("unreachable")
    assert probe(lab["host"], "10.77.3.2", 80) == "c4 saw 10.77.3.1", "the host still may"


def test_remove_table_removes_it_and_may_be_repeated(bare_ns: str) -> None:
    call_nftables(bare_ns, APPLY, render_ruleset(NETWORKS, PORTS))
    assert call_nftables(bare_ns, CURRENT).startswith(f"table ip {TABLE} {{")
    call_nftables(bare_ns, f"remove_table({TABLE!r})")
    assert call_nftables(bare_ns, f"current_ruleset({TABLE!r}) is None") == "True"
    assert sh(*in_ns(bare_ns, "nft", "list", "tables")) == ""
    assert call_nftables(bare_ns, f"remove_table({TABLE!r})") == ""


def test_reloading_the_same_state_gives_the_same_ruleset(bare_ns: str) -> None:
    text = render_ruleset(NETWORKS, PORTS)
    call_nftables(bare_ns, APPLY, text)
    first = call_nftables(bare_ns, CURRENT)
    call_nftables(bare_ns, APPLY, text)
    assert call_nftables(bare_ns, CURRENT) == first
    smaller = render_ruleset([FRONT], [])
    call_nftables(bare_ns, APPLY, smaller)
    assert SECRET["bridge"] not in call_nftables(bare_ns, CURRENT)


def test_rejected_ruleset_is_an_error_and_keeps_the_previous_one(bare_ns: str) -> None:
    call_nftables(bare_ns, APPLY, render_ruleset(NETWORKS, PORTS))
    before = call_nftables(bare_ns, CURRENT)
    broken = render_ruleset([FRONT], []).replace("masquerade", "masquerade-please", 1)
    outcome = call_nftables(bare_ns, APPLY, broken)
    assert outcome.startswith("StackError: cannot load the network ruleset: nft says")
    assert "\n" not in outcome
    assert call_nftables(bare_ns, CURRENT) == before


@pytest.fixture
def forward_drop(lab: dict[str, str]) -> Iterator[str]:
    """The lab host with iptables' FORWARD policy DROP, as dockerd leaves it."""
    sh(*in_ns(HOST, "iptables", "-P", "FORWARD", "DROP"))
    try:
        yield HOST
    finally:
        sh(*in_ns(HOST, "nft", "delete", "table", "ip", "filter"), check=False)


def docker_chains(ns: str) -> None:
    """The chains dockerd makes, plus a rule of the user's own in DOCKER-USER."""
    for rule in (
        ["-N", "DOCKER-USER"],
        ["-A", "DOCKER-USER", "-s", "192.0.2.99", "-j", "DROP"],
        ["-A", "DOCKER-USER", "-j", "RETURN"],
        ["-I", "FORWARD", "-j", "DOCKER-USER"],
    ):
        sh(*in_ns(ns, "iptables", *rule))


def test_forward_drop_blocks_our_bridges_until_we_accept_in_docker_user(
    lab: dict[str, str], forward_drop: str
) -> None:
    docker_chains(forward_drop)
    before = sh(*in_ns(forward_drop, "iptables", "-S"))
    # br_netfilter passes even same-bridge frames through FORWARD: they die too.
    assert probe(lab["c1"], "10.77.1.3", 80).startswith("unreachable")
    bridges = [n["bridge"] for n in NETWORKS]
    assert call_nftables(forward_drop, accepts(bridges)) == "DOCKER-USER"
    assert call_nftables(forward_drop, accepts(bridges)) == "DOCKER-USER"
    rules = sh(*in_ns(forward_drop, "iptables", "-S", "DOCKER-USER")).splitlines()
    front = FRONT["bridge"]
    comment = f'"stack:{OWNER.id}:{front}"'
    assert f"-A DOCKER-USER -i {front} -m comment --comment {comment} -j ACCEPT" in rules
    assert len([rule for rule in rules if "stack:" in rule]) == 6
    assert probe(lab["c1"], "10.77.1.3", 80) == "c2 saw 10.77.1.2"
    assert probe(lab["c1"], OUTSIDE, 80) == f"out saw {UPLINK}"
    assert probe(lab["out"], UPLINK, 8080) == f"c1 saw {OUTSIDE}"
    assert probe(lab["c3"], "10.77.1.2", 80).startswith("unreachable"), "still isolated"
    call_nftables(forward_drop, f"remove_forward_accepts({OWNER!r})")
    assert sh(*in_ns(forward_drop, "iptables", "-S")) == before


def test_accepts_go_into_forward_when_only_its_policy_drops(forward_drop: str) -> None:
    before = sh(*in_ns(forward_drop, "iptables", "-S"))
    bridges = [n["bridge"] for n in NETWORKS]
    assert call_nftables(forward_drop, accepts(bridges)) == "FORWARD"
    assert sh(*in_ns(forward_drop, "iptables", "-S", "FORWARD")).count("stack:") == 6
    only_front = accepts([FRONT["bridge"]])
    assert call_nftables(forward_drop, only_front) == "FORWARD"
    forward = sh(*in_ns(forward_drop, "iptables", "-S", "FORWARD"))
    assert forward.count("stack:") == 2 and BACK["bridge"] not in forward
    call_nftables(forward_drop, f"remove_forward_accepts({OWNER!r})")
    assert sh(*in_ns(forward_drop, "iptables", "-S")) == before


def test_each_state_root_keeps_and_removes_only_its_own_accepts(
    lab: dict[str, str], forward_drop: str
) -> None:
    docker_chains(forward_drop)
    before = sh(*in_ns(forward_drop, "iptables", "-S"))
    front, back, secret = (n["bridge"] for n in NETWORKS)
    gone = f"stk-{TAG}g"  # no such bridge: an older engine's rule for it is nobody's now
    for bridge in (secret, gone):  # rules of an older version, which named no owner
        sh(*in_ns(forward_drop, "iptables", "-I", "DOCKER-USER", "-i", bridge, "-m", "comment",
                  "--comment", f"stack:{bridge}", "-j", "ACCEPT"))
    call_nftables(forward_drop, accepts([front]))
    call_nftables(forward_drop, accepts([back], NEIGHBOUR))
    call_nftables(forward_drop, accepts([front]))  # ours again: the neighbour's stay
    assert probe(lab["c1"], "10.77.1.3", 80) == "c2 saw 10.77.1.2"
    assert probe(lab["c3"], OUTSIDE, 80) == f"out saw {UPLINK}"
    call_nftables(forward_drop, f"remove_forward_accepts({OWNER!r})")
    rules = sh(*in_ns(forward_drop, "iptables", "-S", "DOCKER-USER"))
    assert front not in rules and gone not in rules
    assert rules.count(f"stack:{NEIGHBOUR.id}:{back}") == 2
    assert f'"stack:{secret}"' in rules, "its bridge is there and not ours: not ours to remove"
    assert probe(lab["c3"], OUTSIDE, 80) == f"out saw {UPLINK}", "the neighbour still works"
    call_nftables(forward_drop, f"remove_forward_accepts({NEIGHBOUR!r})")
    sh(*in_ns(forward_drop, "iptables", "-D", "DOCKER-USER", "-i", secret, "-m", "comment",
              "--comment", f"stack:{secret}", "-j", "ACCEPT"))
    assert sh(*in_ns(forward_drop, "iptables", "-S")) == before


def test_no_accepts_where_nothing_drops(bare_ns: str) -> None:
    assert call_nftables(bare_ns, accepts(["stk-x"])) == ""
    assert sh(*in_ns(bare_ns, "nft", "list", "ruleset")) == "", "no iptables table created"


# --- beside a real dockerd, on the machine itself ---------------------------------------------

@pytest.fixture
def dockerd() -> Iterator[None]:
    with running_dockerd():
        yield


def rules_but_other_roots() -> list[str]:
    """The machine's `iptables -S`, but for the rules of other state roots' engines (other
    test sessions'), which may come and go meanwhile."""
    ours = f"stack:{OWNER.id}:"
    return [rule for rule in sh("iptables", "-S").splitlines()
            if '--comment "stack:' not in rule or ours in rule]


@pytest.mark.slow
def test_our_bridge_works_beside_a_running_dockerd(dockerd: None) -> None:
    network = {"name": "docker_side", "bridge": f"stk-{TAG}d", "subnet": "10.77.9.0/24",
               "gateway": "10.77.9.1", "internal": False}  # fmt: skip
    lab = Lab()
    # dockerd sets FORWARD's policy to DROP when it turns IP forwarding on itself, as on
    # a fresh boot; where forwarding was on already it leaves ACCEPT. Test the usual case.
    forward_was_accept = "-P FORWARD ACCEPT" in sh("iptables", "-S", "FORWARD")
    try:
        if forward_was_accept:
            sh("iptables", "-P", "FORWARD", "DROP")
        add_bridge(None, network)
        one = plug(None, lab, "d1", network["bridge"], "10.77.9.2", "10.77.9.1")
        plug(None, lab, "d2", network["bridge"], "10.77.9.3", "10.77.9.1")
        docker_rules = rules_but_other_roots()
        # The host reaching a container is output, not forward: Docker does not stop it.
        assert probe(None, "10.77.9.2", 80) == "d1 saw 10.77.9.1"
        # Two containers on one bridge are: br_netfilter sends their frames to FORWARD.
        assert probe(one, "10.77.9.3", 80).startswith("unreachable")
        assert ensure_forward_accepts([network["bridge"]], OWNER) == "DOCKER-USER"
        assert probe(one, "10.77.9.3", 80) == "d2 saw 10.77.9.2"
        remove_forward_accepts(OWNER)
        assert rules_but_other_roots() == docker_rules, "Docker's rules are as they were"
    finally:
        for direction in ("-i", "-o"):  # ours only, should the test stop half-way
            sh("iptables", "-D", "DOCKER-USER", direction, network["bridge"], "-m", "comment",
               "--comment", OWNER.rule_comment(network["bridge"]), "-j", "ACCEPT",
               check=False)  # fmt: skip
        if forward_was_accept:
            sh("iptables", "-P", "FORWARD", "ACCEPT", check=False)
        lab.close()
        sh("ip", "link", "del", network["bridge"], check=False)


def test_the_ruleset_generation_moves_with_every_change_on_the_host() -> None:
    from orchestrator.runtime.network.nftables import generation

    before = generation()
    assert isinstance(before, int)
    assert generation() == before  # reading it changes nothing
    table = f"gentest_{os.getpid()}"
    subprocess.run(["nft", "add", "table", "ip", table], check=True)
    try:
        added = generation()
        assert added is not None and added > before
    finally:
        subprocess.run(["nft", "delete", "table", "ip", table], check=True)
    assert generation() > added
