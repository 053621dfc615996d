"""Subnets for new networks, the checks on a user's ipam.config, and container addresses."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.runtime.network.ipam import (
    DEFAULT_ADDRESS_POOLS,
    IPV6_UNSUPPORTED,
    AddressBook,
    Addressing,
    AddressPool,
    HostRoute,
    allocate_subnet,
    choose_addressing,
    configured_address_pools,
    default_gateway,
    parse_address_pools,
    parse_proc_net_route,
    read_host_routes,
)
from orchestrator.spec.errors import StackError

net = IPv4Network
addr = IPv4Address


def pool(text: str) -> AddressPool:
    return parse_address_pools(text)[0]


def route(cidr: str, device: str = "eth0") -> HostRoute:
    return HostRoute(net(cidr), device)


def choose(config: list[dict] | None, others: dict[str, str] | None = None,
           routes: list[HostRoute] | None = None, name: str = "proj_default") -> Addressing:
    return choose_addressing(
        name, config, pools=DEFAULT_ADDRESS_POOLS,
        others={k: net(v) for k, v in (others or {}).items()}, host_routes=routes or [],
    )


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(StackError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# ---- address pools ---------------------------------------------------------------------------


def test_default_pools_are_dockers_172_18_to_31_then_192_168_in_slash_20s() -> None:
    # 172.17.0.0/16 stays docker0's even while Docker is not running
    assert [str(p) for p in DEFAULT_ADDRESS_POOLS] == [
        *(f"172.{n}.0.0/16:16" for n in range(18, 32)), "192.168.0.0/16:20"]


def test_pools_from_the_environment_keep_their_order_and_sizes() -> None:
    pools = configured_address_pools({"STACK_ADDRESS_POOLS": " 10.99.0.0/16:24, 172.30.0.0/16:24,"})
    assert pools == (AddressPool(net("10.99.0.0/16"), 24), AddressPool(net("172.30.0.0/16"), 24))


@pytest.mark.parametrize("environ", [{}, {"STACK_ADDRESS_POOLS": ""}, {"STACK_ADDRESS_POOLS": " "}])
def test_unset_or_blank_pool_variable_means_dockers_defaults(environ: dict[str, str]) -> None:
    assert configured_address_pools(environ) == DEFAULT_ADDRESS_POOLS


@pytest.mark.parametrize(("text", "message"), [
    ("10.99.0.0/16", 'entry "10.99.0.0/16": the size of each subnet is missing'),
    ("10.99.0.0:24", 'entry "10.99.0.0:24": "10.99.0.0" is not a subnet in CIDR form'),
    ("10.99.0.1/16:24", "invalid subnet 10.99.0.1/16: it should be 10.99.0.0/16"),
    ("10.999.0.0/16:24", 'invalid subnet "10.999.0.0/16"'),
    ("10.99.0.0/16:x", 'subnet size "x" is not a prefix length'),
    ("10.99.0.0/16:8", "subnet size /8 must be between /16 (the whole base) and /30"),
    ("10.99.0.0/16:31", "subnet size /31 must be between /16 (the whole base) and /30"),
    ("fd00::/8:64", IPV6_UNSUPPORTED),
    (",", "STACK_ADDRESS_POOLS names no address pool"),
])
def test_a_bad_pool_variable_is_one_clear_error(text: str, message: str) -> None:
    error = error_of(parse_address_pools, text)
    assert error.startswith("STACK_ADDRESS_POOLS ")
    assert message in error
    assert "\n" not in error
    assert "10.99.0.0/16:24,172.30.0.0/16:24" in error  # the hint shows the syntax


# ---- subnets for new networks ------------------------------------------------------------------


def test_first_network_takes_the_first_pool() -> None:
    assert allocate_subnet(DEFAULT_ADDRESS_POOLS, [], []) == net("172.18.0.0/16")


def test_docker0_on_172_17_sends_our_network_to_172_18() -> None:
    subnet = allocate_subnet(DEFAULT_ADDRESS_POOLS, [], [route("172.17.0.0/16", "docker0")])
    assert subnet == net("172.18.0.0/16")


def test_subnets_of_our_networks_are_skipped() -> None:
    in_use = [net("172.18.0.0/16"), net("172.19.0.0/16"), net("172.21.0.0/16")]
    assert allocate_subnet(DEFAULT_ADDRESS_POOLS, in_use, []) == net("172.20.0.0/16")


def test_a_small_host_route_blocks_the_whole_candidate_it_falls_in() -> None:
    routes = [route("172.18.5.0/24", "wg0"), route("172.19.0.1/32", "tun0")]
    assert allocate_subnet(DEFAULT_ADDRESS_POOLS, [], routes) == net("172.20.0.0/16")


def test_after_the_172_pools_come_slash_20s_of_192_168_around_the_lan() -> None:
    in_use = [net(f"172.{n}.0.0/16") for n in range(17, 32)]
    assert allocate_subnet(DEFAULT_ADDRESS_POOLS, in_use, []) == net("192.168.0.0/20")
    lan = [route("192.168.1.0/24", "wlan0")]
    assert allocate_subnet(DEFAULT_ADDRESS_POOLS, in_use, lan) == net("192.168.16.0/20")


def test_a_wide_host_route_such_as_a_vpn_blocks_every_pool_inside_it() -> None:
    routes = [route("172.16.0.0/12", "tun0")]
    assert allocate_subnet(DEFAULT_ADDRESS_POOLS, [], routes) == net("192.168.0.0/20")


def test_skipped_ranges_are_avoided_like_used_ones() -> None:
    pools = parse_address_pools("10.99.0.0/16:24")
    assert allocate_subnet(pools, [], [], skip=[net("10.99.0.53/32")]) == net("10.99.1.0/24")


def test_configured_pools_are_carved_in_order() -> None:
    pools = parse_address_pools("10.99.0.0/16:24,172.30.0.0/16:24")
    assert allocate_subnet(pools, [net("10.99.0.0/24")], []) == net("10.99.1.0/24")
    assert allocate_subnet(pools, [net("10.99.0.0/16")], []) == net("172.30.0.0/24")


def test_exhausted_pools_name_every_pool_and_the_variable() -> None:
    pools = parse_address_pools("10.99.0.0/30:30,10.98.0.0/24:25")
    in_use = [net("10.99.0.0/30"), net("10.98.0.0/25")]
    error = error_of(allocate_subnet, pools, in_use, [route("10.98.0.128/25")])
    assert error.startswith(
        "no free address pool: all of 10.99.0.0/30:30, 10.98.0.0/24:25 are in use")
    assert "set STACK_ADDRESS_POOLS" in error


def test_a_huge_pool_of_tiny_subnets_is_searched_quickly() -> None:
    # four million candidates; the search jumps over taken ranges instead of testing each
    pools = parse_address_pools("10.0.0.0/8:30")
    assert allocate_subnet(pools, [net("10.0.0.0/9")], []) == net("10.128.0.0/30")
    with pytest.raises(StackError):
        allocate_subnet(pools, [net("10.0.0.0/9"), net("10.128.0.0/9")], [])


small_networks = st.builds(
    lambda prefix, offset: net((0x0A000000 + (offset >> (32 - prefix) << (32 - prefix)), prefix)),
    st.integers(20, 32), st.integers(0, 0xFFFF),
)
small_pools = st.builds(
    lambda prefix, extra, offset: AddressPool(
        net((0x0A000000 + (offset >> (32 - prefix) << (32 - prefix)), prefix)),
        min(prefix + extra, 30)),
    st.integers(18, 28), st.integers(0, 6), st.integers(0, 0xFFFF),
)


@settings(max_examples=300, deadline=None)
@given(pools=st.lists(small_pools, min_size=1, max_size=3),
       in_use=st.lists(small_networks, max_size=8), routes=st.lists(small_networks, max_size=8))
def test_allocation_is_the_first_candidate_in_pool_order_that_overlaps_nothing(
    pools: list[AddressPool], in_use: list[IPv4Network], routes: list[IPv4Network]
) -> None:
    taken = [*in_use, *routes]
    expected = next((candidate for p in pools for candidate in p.base.subnets(new_prefix=p.size)
                     if not any(candidate.overlaps(t) for t in taken)), None)
    host_routes = [HostRoute(r, "eth0") for r in routes]
    if expected is None:
        with pytest.raises(StackError):
            allocate_subnet(pools, in_use, host_routes)
    else:
        assert allocate_subnet(pools, in_use, host_routes) == expected


# ---- ipam.config -------------------------------------------------------------------------------


def test_no_ipam_config_gets_a_pool_subnet_and_its_first_address_as_gateway() -> None:
    addressing = choose(None, others={"proj_back": "172.17.0.0/16"})
    assert addressing == Addressing(net("172.18.0.0/16"), addr("172.18.0.1"))
    assert choose([{}]).subnet == net("172.18.0.0/16")


def test_full_ipam_config_is_kept_as_written() -> None:
    addressing = choose([{"subnet": "172.28.0.0/16", "ip_range": "172.28.5.0/24",
                          "gateway": "172.28.5.254", "aux_addresses": {"host1": "172.28.1.5"}}])
    assert addressing.to_json() == {
        "subnet": "172.28.0.0/16", "ip_range": "172.28.5.0/24", "gateway": "172.28.5.254",
        "aux_addresses": {"host1": "172.28.1.5"}}


def test_default_gateway_is_the_first_host_address() -> None:
    assert choose([{"subnet": "10.5.0.0/24"}]).gateway == addr("10.5.0.1")
    assert default_gateway(net("192.168.16.0/20")) == addr("192.168.16.1")


def test_addressing_survives_a_round_trip_through_the_network_record() -> None:
    addressing = choose([{"subnet": "10.5.0.0/24", "ip_range": "10.5.0.128/25",
                          "aux_addresses": {"a": "10.5.0.9"}}])
    record = {"name": "proj_default", "bridge": "stk-0123456789a", **addressing.to_json()}
    assert Addressing.from_json(record) == addressing
    plain = choose(None)
    assert Addressing.from_json(plain.to_json()) == plain


@pytest.mark.parametrize(("config", "message"), [
    ({"subnet": "172.20.0.1/16"},
     "network proj_default: ipam.config[0].subnet: invalid subnet 172.20.0.1/16: "
     "it should be 172.20.0.0/16"),
    ({"subnet": "172.20.0.0"}, 'ipam.config[0].subnet: "172.20.0.0" is not a subnet in CIDR form'),
    ({"subnet": "banana/16"}, 'ipam.config[0].subnet: invalid subnet "banana/16"'),
    ({"subnet": "10.0.0.0/31"}, "10.0.0.0/31 is too small for a gateway and a container"),
    ({"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"},
     "ipam.config[0].gateway: 10.0.1.1 is outside subnet 10.0.0.0/24"),
    ({"subnet": "10.0.0.0/24", "gateway": "10.0.0.255"},
     "ipam.config[0].gateway: 10.0.0.255 is the broadcast address of 10.0.0.0/24"),
    ({"subnet": "10.0.0.0/24", "gateway": "10.0.0.0"},
     "ipam.config[0].gateway: 10.0.0.0 is the network address of 10.0.0.0/24"),
    ({"subnet": "10.0.0.0/24", "gateway": "gw"}, 'ipam.config[0].gateway: "gw" is not an IPv4'),
    ({"subnet": "10.0.0.0/24", "ip_range": "10.0.1.0/28"},
     "ipam.config[0].ip_range: 10.0.1.0/28 is not inside subnet 10.0.0.0/24"),
    ({"subnet": "10.0.0.0/24", "ip_range": "10.0.0.1/28"},
     "ipam.config[0].ip_range: invalid subnet 10.0.0.1/28: it should be 10.0.0.0/28"),
    ({"subnet": "10.0.0.0/24", "aux_addresses": {"printer": "10.1.0.9"}},
     "ipam.config[0].aux_addresses.printer: 10.1.0.9 is outside subnet 10.0.0.0/24"),
    ({"subnet": "10.0.0.0/24", "aux_addresses": {"router": "10.0.0.1"}},
     "ipam.config[0].aux_addresses.router: 10.0.0.1 is already the gateway"),
    ({"subnet": "10.0.0.0/24", "aux_addresses": {"a": "10.0.0.9", "b": "10.0.0.9"}},
     'ipam.config[0].aux_addresses.b: 10.0.0.9 is already aux address "a"'),
    ({"gateway": "10.0.0.1", "ip_range": "10.0.0.0/28"},
     "ipam.config[0]: gateway, ip_range given without a subnet"),
    ({"subnet": "fd00:1::/64"}, f"ipam.config[0].subnet: {IPV6_UNSUPPORTED}"),
    ({"subnet": "10.0.0.0/24", "gateway": "fd00::1"},
     f"ipam.config[0].gateway: {IPV6_UNSUPPORTED}"),
])
def test_a_bad_ipam_config_is_one_clear_error(config: dict, message: str) -> None:
    error = error_of(choose, [config])
    assert message in error
    assert error.startswith("network proj_default: ")
    assert "\n" not in error


def test_only_one_ipv4_subnet_per_network_is_supported() -> None:
    error = error_of(choose, [{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.1.0/24"}])
    assert "network proj_default: ipam.config has 2 IPv4 subnets; only one per network" in error


def test_overlapping_another_of_our_networks_names_both_networks() -> None:
    error = error_of(choose, [{"subnet": "172.18.0.0/24"}],
                     others={"shop_default": "172.18.0.0/16"}, name="blog_default")
    assert error.startswith("network blog_default: subnet 172.18.0.0/24 overlaps subnet "
                            "172.18.0.0/16 of network shop_default")


def test_checking_an_existing_network_again_does_not_collide_with_itself() -> None:
    addressing = choose([{"subnet": "172.18.0.0/16"}], others={"proj_default": "172.18.0.0/16"})
    assert addressing.subnet == net("172.18.0.0/16")


def test_overlapping_a_host_route_names_the_route_and_its_device() -> None:
    error = error_of(choose, [{"subnet": "192.168.0.0/16"}], routes=[route("192.168.1.0/24")])
    assert error.startswith("network proj_default: subnet 192.168.0.0/16 overlaps the host "
                            "route 192.168.1.0/24 dev eth0")


def test_extension_keys_and_empty_values_in_ipam_config_are_ignored() -> None:
    addressing = choose([{"subnet": "10.0.0.0/24", "gateway": "", "x-note": "lab"}])
    assert addressing == Addressing(net("10.0.0.0/24"), addr("10.0.0.1"))


# ---- container addresses -----------------------------------------------------------------------


def book(subnet: str = "172.18.0.0/16", used=(), **layout) -> AddressBook:
    gateway = layout.pop("gateway", None)
    subnet_net = net(subnet)
    addressing = Addressing(
        subnet_net, addr(gateway) if gateway else default_gateway(subnet_net),
        net(layout["ip_range"]) if "ip_range" in layout else None,
        {k: addr(v) for k, v in layout.get("aux", {}).items()})
    return AddressBook("proj_default", addressing, used)


def test_containers_get_addresses_in_order_after_the_gateway() -> None:
    addresses = book()
    assert [str(addresses.allocate()) for _ in range(3)] == [
        "172.18.0.2", "172.18.0.3", "172.18.0.4"]


def test_a_released_address_is_the_next_one_given_out() -> None:
    addresses = book()
    first, second, _ = (addresses.allocate() for _ in range(3))
    addresses.release(first)
    addresses.release(second)
    assert addresses.allocate() == first
    assert addresses.allocate() == second


def test_allocation_skips_gateway_aux_and_static_addresses() -> None:
    addresses = book("10.0.0.0/29", gateway="10.0.0.2", aux={"printer": "10.0.0.3"})
    addresses.reserve("10.0.0.4", holder="proj-db-1")
    assert [str(addresses.allocate()) for _ in range(3)] == ["10.0.0.1", "10.0.0.5", "10.0.0.6"]
    error = error_of(addresses.allocate)
    assert error.startswith("no free address on network proj_default: every address of "
                            "subnet 10.0.0.0/29 is in use")


def test_ip_range_bounds_automatic_addresses_and_includes_its_dot_zero() -> None:
    addresses = book("172.28.0.0/16", ip_range="172.28.5.0/31")
    assert [str(addresses.allocate()) for _ in range(2)] == ["172.28.5.0", "172.28.5.1"]
    assert "every address of ip_range 172.28.5.0/31 is in use" in error_of(addresses.allocate)
    assert addresses.reserve("172.28.9.9") == addr("172.28.9.9")  # static: anywhere in the subnet


def test_ip_range_never_yields_the_subnets_own_network_address() -> None:
    addresses = book("10.0.0.0/24", ip_range="10.0.0.0/30")
    assert [str(addresses.allocate()) for _ in range(2)] == ["10.0.0.2", "10.0.0.3"]


def test_a_static_address_already_held_names_network_and_holder() -> None:
    addresses = book()
    addresses.reserve("172.18.0.5", holder="proj-db-1")
    error = error_of(addresses.reserve, "172.18.0.5", holder="proj-web-1")
    assert error.startswith("proj-web-1: address 172.18.0.5 is already in use on network "
                            "proj_default by proj-db-1")
    anonymous = book(used=["172.18.0.5"])
    assert error_of(anonymous.reserve, "172.18.0.5").startswith(
        "address 172.18.0.5 is already in use on network proj_default (")


def test_the_same_holder_may_reserve_its_static_address_again() -> None:
    addresses = book()
    addresses.reserve("172.18.0.5", holder="proj-db-1")
    assert addresses.reserve("172.18.0.5", holder="proj-db-1") == addr("172.18.0.5")


@pytest.mark.parametrize(("address", "message"), [
    ("10.0.0.5", "address 10.0.0.5 is outside subnet 172.18.0.0/16 of network proj_default"),
    ("172.18.0.1", "address 172.18.0.1 is reserved on network proj_default: it is the gateway"),
    ("172.18.0.0", "reserved on network proj_default: it is the network address of 172.18.0.0/16"),
    ("172.18.255.255", "it is the broadcast address of 172.18.0.0/16"),
    ("172.18.0.9", 'address 172.18.0.9 is reserved on network proj_default: '
                   'it is aux address "nas"'),
    ("172.18.0.300", 'ipv4_address: "172.18.0.300" is not an IPv4 address'),
    ("fd00::5", f"ipv4_address: {IPV6_UNSUPPORTED}"),
])
def test_a_static_address_that_cannot_be_held_is_refused(address: str, message: str) -> None:
    addresses = book(aux={"nas": "172.18.0.9"})
    assert message in error_of(addresses.reserve, address)
    assert addresses.used == {}


def test_a_book_rebuilt_from_stored_addresses_continues_where_the_old_one_was() -> None:
    old = book()
    for _ in range(5):
        old.allocate()
    old.release("172.18.0.3")
    old.reserve("172.18.0.40", holder="proj-db-1")
    rebuilt = book(used=old.used)
    assert rebuilt.used == old.used
    assert "172.18.0.40" in rebuilt
    assert addr("172.18.0.3") not in rebuilt
    assert rebuilt.allocate() == old.allocate() == addr("172.18.0.3")


def test_a_rebuilt_book_never_hands_out_an_odd_stored_address_twice() -> None:
    # State written before a config change may hold an address now reserved; it stays held.
    addresses = book("10.0.0.0/29", used={"10.0.0.2": "proj-a-1", "192.0.2.1": "proj-b-1"})
    assert addresses.allocate() == addr("10.0.0.3")
    assert list(addresses.used) == [addr("10.0.0.2"), addr("10.0.0.3"), addr("192.0.2.1")]


def test_releasing_an_address_not_held_does_nothing() -> None:
    addresses = book(used=["172.18.0.2"])
    addresses.release("172.18.0.77")
    assert list(addresses.used) == [addr("172.18.0.2")]
    assert "not an address" not in addresses


operations = st.lists(st.one_of(
    st.just(("allocate", 0)),
    st.tuples(st.just("release"), st.integers(0, 31)),
    st.tuples(st.just("reserve"), st.integers(0, 31)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops=operations, gateway=st.integers(1, 30), aux=st.sets(st.integers(1, 30), max_size=3),
       range_text=st.sampled_from([None, "10.1.2.0/29", "10.1.2.8/29", "10.1.2.16/28"]))
def test_addresses_are_unique_lowest_free_and_never_reserved(
    ops: list[tuple[str, int]], gateway: int, aux: set[int], range_text: str | None,
) -> None:
    subnet = net("10.1.2.0/27")
    ip_range = net(range_text) if range_text else None
    aux_addresses = {f"aux{n}": subnet[n] for n in aux - {gateway}}
    addressing = Addressing(subnet, subnet[gateway], ip_range, aux_addresses)
    addresses = AddressBook("lab", addressing)
    reserved = {subnet[0], subnet[31], subnet[gateway], *aux_addresses.values()}
    held: set[IPv4Address] = set()
    for step, (op, n) in enumerate(ops):  # every step is a different container
        if op == "allocate":
            free = sorted(set(ip_range or subnet) - held - reserved)
            if free:
                got = addresses.allocate()
                assert got == free[0]
                held.add(got)
            else:
                with pytest.raises(StackError):
                    addresses.allocate()
        elif op == "release":
            addresses.release(subnet[n])
            held.discard(subnet[n])
        elif subnet[n] in held or subnet[n] in reserved:
            with pytest.raises(StackError):
                addresses.reserve(subnet[n], holder=f"c{step}")
        else:
            assert addresses.reserve(subnet[n], holder=f"c{step}") == subnet[n]
            held.add(subnet[n])
        assert set(addresses.used) == held
        assert not held & reserved
        assert set(AddressBook("lab", addressing, addresses.used).used) == held


# ---- host routes -------------------------------------------------------------------------------

PROC_NET_ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    "tun0\t0000000A\t0100080A\t0003\t0\t0\t0\t000000FF\t0\t0\t0\n"
    "tun0\t0100080A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n"
    "wg0\t0000A8C0\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    "bad\tZZZZZZZZ\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "odd\t000200C0\t00000000\t0001\t0\t0\t0\t00FF00FF\t0\t0\t0\n"
    "short\t000200C0\n"
)


def test_proc_net_route_gives_every_route_up_except_the_default() -> None:
    assert parse_proc_net_route(PROC_NET_ROUTE, "little") == [
        route("192.0.2.0/24", "eth0"),
        route("172.17.0.0/16", "docker0"),
        route("10.0.0.0/8", "tun0"),
        route("10.8.0.1/32", "tun0"),
    ]


def test_proc_net_route_of_a_big_endian_host_reads_the_other_way_round() -> None:
    text = PROC_NET_ROUTE.splitlines()[0] + "\neth0\tC0000200\t00000000\t0001\t0\t0\t0\tFFFFFF00\n"
    assert parse_proc_net_route(text, "big") == [route("192.0.2.0/24", "eth0")]


def test_host_routes_are_read_from_a_route_table_file(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(PROC_NET_ROUTE)
    assert read_host_routes(str(table)) == parse_proc_net_route(PROC_NET_ROUTE)


def test_routes_read_from_the_host_feed_allocation() -> None:
    routes = parse_proc_net_route(PROC_NET_ROUTE, "little")
    assert allocate_subnet(DEFAULT_ADDRESS_POOLS, [], routes) == net("172.18.0.0/16")
