"""The rendered table of one state root: what each network and published port turns into."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from orchestrator.runtime.network import nft_rules
from orchestrator.spec.errors import StackError

FRONT = {
    "name": "shop_front",
    "id": "f" * 64,
    "bridge": "stk-front0001",
    "subnet": "172.18.0.0/16",
    "gateway": "172.18.0.1",
    "internal": False,
    "labels": {},
    "mtu": 1500,
}
BACK = {
    "name": "shop_back",
    "id": "b" * 64,
    "bridge": "stk-back00002",
    "subnet": "172.19.0.0/16",
    "gateway": "172.19.0.1",
    "internal": True,
}
WEB_8080 = {
    "container_id": "c" * 64,
    "container_name": "shop-web-1",
    "network": "shop_front",
    "container_address": "172.18.0.2",
    "host_ip": "",
    "host_port": 8080,
    "container_port": 80,
    "protocol": "tcp",
}
DNS_LOOPBACK = {
    "container_id": "d" * 64,
    "network": "shop_front",
    "container_address": "172.18.0.3",
    "host_ip": "127.0.0.1",
    "host_port": 5353,
    "container_port": 53,
    "protocol": "udp",
}


TABLE = "stack_0123456789"  # a state root's table (owner.py)


def render_ruleset(networks: list[dict], ports: list[dict]) -> str:
    return nft_rules.render_ruleset(networks, ports, table=TABLE)


def chain(text: str, name: str) -> list[str]:
    """The lines of one chain of the rendered table, stripped."""
    lines = text.splitlines()
    start = lines.index(f"\tchain {name} {{")
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 1 : end]]


def test_table_is_the_named_table_with_every_hook() -> None:
    text = render_ruleset([FRONT], [])
    assert text.startswith("table ip stack_0123456789 {\n")
    assert text.endswith("}\n")
    assert text.count("\ttable ") == 0 and text.count("table ") == 1
    assert chain(text, "prerouting")[0].startswith("type nat hook prerouting priority dstnat - 5;")
    assert chain(text, "output")[0].startswith("type nat hook output priority -105;")
    assert chain(text, "postrouting")[0].startswith("type nat hook postrouting priority srcnat - 5")
    assert chain(text, "forward")[0].startswith("type filter hook forward priority filter - 5;")
    assert chain(text, "input")[0].startswith("type filter hook input priority filter - 5;")
    for hook in ("prerouting", "output", "postrouting", "forward", "input"):
        assert "policy accept;" in chain(text, hook)[0], "other hosts' traffic is not ours to judge"


def test_network_traffic_leaving_its_subnet_is_masqueraded() -> None:
    rules = chain(render_ruleset([FRONT], []), "postrouting")
    assert (
        'ip saddr 172.18.0.0/16 oifname != "stk-front0001" masquerade '
        'comment "network shop_front: egress"'
    ) in rules


def test_internal_network_is_never_masqueraded_and_cannot_leave_or_be_entered() -> None:
    text = render_ruleset([BACK], [])
    assert "172.19.0.0/16" not in "\n".join(chain(text, "postrouting"))
    forward = chain(text, "forward")
    within = forward.index(
        'iifname "stk-back00002" oifname "stk-back00002" accept '
        'comment "internal network shop_back: within the network"'
    )
    out = forward.index(
        'iifname "stk-back00002" drop comment "internal network shop_back: no way out"'
    )
    into = forward.index(
        'oifname "stk-back00002" drop comment "internal network shop_back: no way in"'
    )
    first_accept_for_others = forward.index(
        'oifname @bridges ct state established,related accept comment "replies"'
    )
    assert within < out < first_accept_for_others
    assert into < first_accept_for_others


def test_internal_network_reaches_only_dns_on_its_gateway() -> None:
    rules = chain(render_ruleset([BACK], []), "input")
    assert rules[1:] == [
        'iifname "stk-back00002" ct state established,related accept '
        'comment "internal network shop_back: replies to the host"',
        'iifname "stk-back00002" ip daddr 172.19.0.1 udp dport 53 accept '
        'comment "internal network shop_back: DNS"',
        'iifname "stk-back00002" ip daddr 172.19.0.1 tcp dport 53 accept '
        'comment "internal network shop_back: DNS"',
        'iifname "stk-back00002" drop '
        'comment "internal network shop_back: no listener outside the network"',
    ]


def test_traffic_between_two_networks_is_dropped_but_published_ports_and_replies_pass() -> None:
    other = {**FRONT, "name": "other", "bridge": "stk-o", "subnet": "172.20.0.0/16"}
    forward = chain(render_ruleset([FRONT, other], []), "forward")
    isolation = forward.index(
        'iifname @bridges oifname @bridges drop comment "isolation between networks"'
    )
    published = forward.index('oifname @bridges ct status dnat accept comment "published ports"')
    within = forward.index(
        'iifname "stk-o" oifname "stk-o" accept comment "network other: within the network"'
    )
    assert published < isolation
    assert within < isolation
    assert forward[-2:] == [
        'iifname @bridges accept comment "egress"',
        'oifname @bridges drop comment "nothing else reaches a container"',
    ]


def test_published_ports_are_dnated_on_every_local_address_or_on_their_host_ip() -> None:
    text = render_ruleset([FRONT], [WEB_8080, DNS_LOOPBACK])
    assert chain(text, "published_ports") == [
        "ip daddr 127.0.0.1 udp dport 5353 dnat to 172.18.0.3:53 "
        'comment "dddddddddddd udp 127.0.0.1:5353 -> 53"',
        'tcp dport 8080 dnat to 172.18.0.2:80 comment "shop-web-1 tcp 0.0.0.0:8080 -> 80"',
    ]
    for hook in ("prerouting", "output"):
        assert chain(text, hook)[1].startswith("fib daddr type local jump published_ports")


def test_host_ip_0_0_0_0_means_every_host_address() -> None:
    text = render_ruleset([FRONT], [{**WEB_8080, "host_ip": "0.0.0.0"}])
    assert chain(text, "published_ports")[0].startswith("tcp dport 8080 dnat to 172.18.0.2:80 ")


def test_hairpin_and_loopback_published_traffic_is_masqueraded() -> None:
    rules = chain(render_ruleset([FRONT], [WEB_8080]), "postrouting")
    assert (
        'oifname "stk-front0001" ip saddr 172.18.0.0/16 ct status dnat masquerade '
        'comment "network shop_front: hairpin to a published port"'
    ) in rules
    assert (
        "oifname @bridges ip saddr 127.0.0.0/8 ct status dnat masquerade "
        'comment "published ports reached on 127.0.0.1"'
    ) in rules


def test_ports_on_an_internal_network_or_an_ipv6_host_ip_are_not_in_this_table() -> None:
    on_back = {**WEB_8080, "network": "shop_back", "container_address": "172.19.0.2"}
    on_v6 = {**WEB_8080, "host_ip": "::"}
    text = render_ruleset([FRONT, BACK], [on_back, on_v6])
    assert chain(text, "published_ports") == []


def test_same_state_in_any_order_renders_the_same_text() -> None:
    one = render_ruleset([FRONT, BACK], [WEB_8080, DNS_LOOPBACK])
    two = render_ruleset([BACK, FRONT], [DNS_LOOPBACK, WEB_8080])
    assert one == two


def test_bridge_set_lists_every_network_and_may_be_empty() -> None:
    assert 'elements = { "stk-back00002", "stk-front0001" }' in render_ruleset([FRONT, BACK], [])
    empty = render_ruleset([], [])
    assert "elements" not in empty
    assert chain(empty, "published_ports") == []


def test_comments_cannot_break_out_of_their_quotes() -> None:
    sneaky = {**WEB_8080, "container_name": 'web" accept; drop "x' + "y" * 200}
    rule = chain(render_ruleset([FRONT], [sneaky]), "published_ports")[0]
    comment = rule.split(" comment ", 1)[1]
    assert comment.count('"') == 2
    assert len(comment) <= 130


def test_bridge_name_nft_cannot_take_is_a_user_error_naming_the_network() -> None:
    with pytest.raises(StackError) as caught:
        render_ruleset([{**FRONT, "bridge": 'br"; flush ruleset'}], [])
    assert "network shop_front" in str(caught.value)
    assert "bridge name" in str(caught.value)


def test_port_on_an_unknown_network_is_an_engine_bug() -> None:
    with pytest.raises(ValueError, match="unknown network"):
        render_ruleset([FRONT], [{**WEB_8080, "network": "nowhere"}])


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="nft --check needs root and nft"
)
def test_rendered_ruleset_is_accepted_by_nft_check() -> None:
    text = render_ruleset([FRONT, BACK], [WEB_8080, DNS_LOOPBACK])
    batch = f"table ip {TABLE}\ndelete table ip {TABLE}\n" + text
    # --check only validates the batch in the kernel; it commits nothing.
    result = subprocess.run(
        ["nft", "--check", "-f", "-"], input=batch, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
