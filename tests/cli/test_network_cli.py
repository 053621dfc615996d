"""`stack network ls|inspect|create|rm|prune` as a user runs them, on real bridges (root).

Explicit subnets come from 10.211.0.0/16 and automatic ones from the pool
10.212.0.0/16, clear of other tests that create networks at the same time.
After every test its networks are gone, and with them their bridges and the
nftables table of its state root (other state roots' tables and bridges, of
tests running meanwhile, are theirs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest
import trio
from support.host_network import root_leftovers
from support.stack_cli import STACK_COMMAND

from orchestrator.cli.main import main
from orchestrator.runtime.network.manager import Attachment, NetworkManager
from orchestrator.runtime.network.owner import Owner

CONTAINER_ID = "c0ffee" + "0" * 58
OUR_RANGES = (IPv4Network("10.211.0.0/16"), IPv4Network("10.212.0.0/16"))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("networks need root")
    state = tmp_path / "state"
    monkeypatch.setenv("STACK_ROOT", str(state))
    monkeypatch.setenv("STACK_ADDRESS_POOLS", "10.212.0.0/16:24")
    try:
        yield state
    finally:
        bridges = remove_every_network(state)
        assert [b for b in bridges if b in host_links()] == [], "bridges left behind"
    assert_no_trace_of_our_networks(state)


def assert_no_trace_of_our_networks(state: Path) -> None:
    assert [(link, address) for link, address in host_addresses()
            if any(address in subnet for subnet in OUR_RANGES)] == []
    assert root_leftovers(state) == []


def remove_every_network(state: Path) -> list[str]:
    """Whatever a test left: its endpoints released, its networks removed; their bridges."""
    manager = NetworkManager(state)
    networks = manager.list()
    for network in networks:
        for container_id in list(network.endpoints):
            manager.release_now(container_id)
        trio.run(manager.remove, network.name)
    return [network.bridge for network in networks]


def host_links() -> list[str]:
    listing = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return [line.split(":")[1].strip().split("@")[0] for line in listing.stdout.splitlines()]


def host_addresses() -> list[tuple[str, IPv4Network]]:
    """Every IPv4 address on the host, with its link: (`stk-…`, 10.211.1.0/24)."""
    listing = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                             check=True)
    found = re.findall(r"^\d+: (\S+)\s+inet (\S+)", listing.stdout, re.MULTILINE)
    return [(link, IPv4Interface(address).network) for link, address in found]


def bridge_addresses(bridge: str) -> list[str]:
    listing = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge],
                             capture_output=True, text=True, check=True)
    return re.findall(r"inet (\S+)", listing.stdout)


def nft_tables() -> list[str]:
    return subprocess.run(["nft", "list", "tables"], capture_output=True,
                          text=True).stdout.splitlines()


def stack(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["network", *args])
    out, err = capsys.readouterr()
    return code, out, err


def create(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = stack(capsys, "create", *args)
    assert (code, err) == (0, "")
    assert re.fullmatch(r"[0-9a-f]{64}\n", out)
    return out.strip()


def test_created_network_is_listed_and_inspected_like_docker(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    network_id = create(capsys, "--subnet", "10.211.1.0/24", "--gateway", "10.211.1.254",
                        "--ip-range", "10.211.1.128/25", "--label", "team=web",
                        "--internal", "web_net")
    bridge = f"stk-{network_id[:11]}"
    assert bridge_addresses(bridge) == ["10.211.1.254/24"]
    assert f"table ip {Owner.of(root).table}" in nft_tables()

    code, out, _ = stack(capsys, "ls")
    assert (code, out) == (0, "NETWORK ID     NAME      DRIVER    SCOPE\n"
                              f"{network_id[:12]}   web_net   bridge    local\n")
    assert stack(capsys, "ls", "-q")[1] == f"{network_id[:12]}\n"
    assert stack(capsys, "ls", "-q", "--no-trunc")[1] == f"{network_id}\n"
    row = json.loads(stack(capsys, "ls", "--format", "json")[1])
    assert row == {"CreatedAt": row["CreatedAt"], "Driver": "bridge", "ID": network_id[:12],
                   "IPv6": "false", "Internal": "true", "Labels": "team=web",
                   "Name": "web_net", "Scope": "local"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC", row["CreatedAt"])

    code, out, _ = stack(capsys, "inspect", "web_net")
    assert code == 0 and out.startswith('[\n    {\n        "Name": "web_net"')
    shown = json.loads(out)
    assert shown == [{
        "Name": "web_net", "Id": network_id, "Created": shown[0]["Created"],
        "Scope": "local", "Driver": "bridge", "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [
            {"Subnet": "10.211.1.0/24", "Gateway": "10.211.1.254",
             "IPRange": "10.211.1.128/25"}]},
        "Internal": True, "Attachable": False, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
        "Options": {}, "Labels": {"team": "web"},
    }]
    assert stack(capsys, "inspect", network_id[:5])[1] == out  # an id prefix names it too

    assert stack(capsys, "rm", "web_net") == (0, "web_net\n", "")
    assert bridge not in host_links()
    assert stack(capsys, "ls", "-q")[1] == ""
    assert_no_trace_of_our_networks(root)  # the table went with the last network


def test_networks_without_a_subnet_get_one_from_the_address_pools(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create(capsys, "first")
    create(capsys, "second")
    shown = json.loads(stack(capsys, "inspect", "first", "second")[1])
    configs = [network["IPAM"]["Config"] for network in shown]
    assert configs == [[{"Subnet": "10.212.0.0/24", "Gateway": "10.212.0.1"}],
                       [{"Subnet": "10.212.1.0/24", "Gateway": "10.212.1.1"}]]
    assert bridge_addresses(f"stk-{shown[1]['Id'][:11]}") == ["10.212.1.1/24"]


def test_ls_filters_by_name_label_and_use(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create(capsys, "--label", "tier=web", "--label", "team=a", "front_net")
    create(capsys, "--label", "tier=db", "back_net")
    NetworkManager(root).reserve(CONTAINER_ID, "proj-db-1", [Attachment("back_net")])

    def names(*filters: str) -> list[str]:
        code, out, _ = stack(capsys, "ls", "--format", "json",
                             *(f"--filter={item}" for item in filters))
        assert code == 0
        return [json.loads(line)["Name"] for line in out.splitlines()]

    assert names() == ["back_net", "front_net"]
    assert names("name=front") == ["front_net"]
    assert names("name=^b", "name=^f") == ["back_net", "front_net"]
    assert names("label=tier=db") == ["back_net"]
    assert names("label=tier", "label=team=a") == ["front_net"]
    assert names("dangling=true") == ["front_net"]
    assert names("driver=bridge", "scope=local") == ["back_net", "front_net"]
    assert names("driver=overlay") == []

    assert stack(capsys, "ls", "--filter", "colour=red") == (
        1, "", "error: invalid filter 'colour' (use one of dangling, driver, id, label, name, "
        "scope)\n")


def test_network_with_a_container_is_neither_removed_nor_pruned(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create(capsys, "--subnet", "10.211.3.0/24", "used")
    create(capsys, "--subnet", "10.211.4.0/24", "spare")
    NetworkManager(root).reserve(CONTAINER_ID, "proj-web-1", [Attachment("used")])

    containers = json.loads(stack(capsys, "inspect", "used")[1])[0]["Containers"]
    assert containers == {CONTAINER_ID: {"Name": "proj-web-1", "MacAddress": "",
                                         "IPv4Address": "10.211.3.2/24", "IPv6Address": ""}}

    code, out, err = stack(capsys, "rm", "used", "spare")
    assert (code, out) == (1, "spare\n")
    assert err == ("error: network used has active endpoints (proj-web-1) "
                   "(stop or remove those containers first)\n")
    assert stack(capsys, "prune", "-f") == (0, "", "")
    assert stack(capsys, "ls", "--format", "json")[1].count("\n") == 1

    NetworkManager(root).release_now(CONTAINER_ID)
    assert stack(capsys, "prune", "-f") == (0, "Deleted Networks:\nused\n\n", "")
    assert stack(capsys, "ls", "-q")[1] == ""


def test_prune_removes_every_unused_network_and_its_bridge(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [create(capsys, name) for name in ("alpha", "beta")]
    assert all(f"stk-{i[:11]}" in host_links() for i in ids)
    assert stack(capsys, "prune", "--force") == (0, "Deleted Networks:\nalpha\nbeta\n\n", "")
    assert not any(f"stk-{i[:11]}" in host_links() for i in ids)
    assert_no_trace_of_our_networks(root)
    assert stack(capsys, "prune", "-f") == (0, "", "")


def test_rm_names_networks_by_name_or_id_and_reports_missing_ones(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    network_id = create(capsys, "--subnet", "10.211.5.0/24", "by_id")
    code, out, err = stack(capsys, "rm", "ghost", network_id[:12])
    assert (code, out) == (1, f"{network_id[:12]}\n")
    assert err == "error: network ghost not found (see `stack network ls`)\n"
    assert stack(capsys, "rm", "-f", "ghost") == (0, "", "")
    code, out, err = stack(capsys, "inspect", "ghost")
    assert (code, out) == (1, "[]\n") and err.startswith("error: network ghost not found")


@pytest.mark.parametrize(("args", "message"), [
    (["taken"], "error: network with name taken already exists (choose another name, or "
                "remove it with `stack network rm`)"),
    (["../escape"], "error: invalid network name '../escape'"),
    (["--gateway", "10.211.6.1", "nosubnet"], "error: --gateway given without --subnet"),
    (["--subnet", "10.211.6.0/33", "badsubnet"], "error: network badsubnet: "),
    (["--subnet", "10.211.6.128/25", "overlapping"],
     "error: network overlapping: subnet 10.211.6.128/25 overlaps subnet 10.211.6.0/24 of "
     "network taken"),
    (["-d", "overlay", "swarm"], "error: network swarm: driver 'overlay' is not supported"),
    (["-o", "com.docker.network.bridge.enable_icc=false", "opts"],
     "error: network opts: driver_opts com.docker.network.bridge.enable_icc is not supported"),
    (["-o", "com.docker.network.bridge.name=lo", "loop"],
     "error: network loop: the host already has an interface named lo"),
    (["--label", "=x", "nolabel"], "error: --label '=x': expected KEY=VALUE"),
])
def test_create_mistakes_are_one_line_and_create_nothing(
    root: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    network_id = create(capsys, "--subnet", "10.211.6.0/24", "taken")
    links_before = host_links()
    code, out, err = stack(capsys, "create", *args)
    assert (code, out) == (1, "")
    assert err.startswith(message) and err.count("\n") == 1
    assert stack(capsys, "ls", "-q")[1] == f"{network_id[:12]}\n"
    assert host_links() == links_before


def test_network_commands_run_as_a_program(root: Path) -> None:
    command = [*STACK_COMMAND, "network"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)

    created = run("create", "--subnet", "10.211.7.0/24", "program_net")
    assert created.returncode == 0 and created.stderr == ""
    assert run("ls", "-q").stdout == created.stdout[:12] + "\n"
    missing = run("rm", "program_net", "ghost")
    assert (missing.returncode, missing.stdout) == (1, "program_net\n")
    assert missing.stderr == "error: network ghost not found (see `stack network ls`)\n"
    assert run("frobnicate").returncode == 2
