"""The DNS answerer: which names a container resolves, and how each query is answered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.runtime.network.dns_answer import (
    TTL,
    Answer,
    DnsAnswerer,
    Drop,
    Forward,
    parse_nameserver,
)
from orchestrator.spec.errors import StackError


@dataclass(frozen=True)
class Endpoint:
    network: str
    container_id: str
    container_name: str
    address: str
    service: str = ""
    aliases: Sequence[str] = field(default_factory=tuple)
    hostname: str = ""


def web(n: int, address: str, network: str = "proj_default") -> Endpoint:
    return Endpoint(network, f"{n:02d}web" + "0" * 60, f"proj-web-{n}", address, service="web")


DB = Endpoint("proj_back", "db" + "0" * 62, "proj-db-1", "172.19.0.2", service="db",
              aliases=("database", "Primary.DB"), hostname="dbhost")
CLIENT = Endpoint("proj_default", "c1" + "0" * 62, "proj-client-1", "172.18.0.9",
                  service="client")
BOTH = [Endpoint("proj_default", "bo" + "0" * 62, "proj-both-1", "172.18.0.8", service="both"),
        Endpoint("proj_back", "bo" + "0" * 62, "proj-both-1", "172.19.0.8", service="both")]


@pytest.fixture
def answerer() -> DnsAnswerer:
    answerer = DnsAnswerer()
    answerer.set_endpoints([web(1, "172.18.0.2"), web(2, "172.18.0.3"), web(3, "172.18.0.4"),
                            DB, CLIENT, *BOTH])
    return answerer


def ask(answerer: DnsAnswerer, name: str, qtype: str = "A", client: str = "172.18.0.9",
        *, tcp: bool = False) -> DNSRecord:
    decision = answerer.decide(DNSRecord.question(name, qtype).pack(), client, tcp=tcp)
    assert isinstance(decision, Answer), decision
    return DNSRecord.parse(decision.wire)


def addresses(response: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in response.rr if rr.rtype == QTYPE.A]


def forwarded(answerer: DnsAnswerer, name: str, qtype: str = "A",
              client: str = "172.18.0.9") -> bool:
    return isinstance(answerer.decide(DNSRecord.question(name, qtype).pack(), client), Forward)


# -- names --------------------------------------------------------------------------------


def test_service_name_resolves_to_every_replica(answerer: DnsAnswerer) -> None:
    response = ask(answerer, "web")
    assert response.header.rcode == RCODE.NOERROR
    assert sorted(addresses(response)) == ["172.18.0.2", "172.18.0.3", "172.18.0.4"]
    assert {rr.ttl for rr in response.rr} == {TTL}


def test_replica_order_rotates_on_each_answer(answerer: DnsAnswerer) -> None:
    firsts = [addresses(ask(answerer, "web"))[0] for _ in range(6)]
    assert firsts == ["172.18.0.2", "172.18.0.3", "172.18.0.4"] * 2
    assert sorted(addresses(ask(answerer, "web"))) == ["172.18.0.2", "172.18.0.3", "172.18.0.4"]


def test_container_name_short_id_hostname_and_aliases_resolve(answerer: DnsAnswerer) -> None:
    client = "172.19.0.8"  # on both networks
    for name in ["proj-db-1", "db" + "0" * 10, "dbhost", "database", "primary.db", "db"]:
        assert addresses(ask(answerer, name, client=client)) == ["172.19.0.2"], name


def test_one_replica_resolves_by_its_container_name(answerer: DnsAnswerer) -> None:
    assert addresses(ask(answerer, "proj-web-2")) == ["172.18.0.3"]


def test_names_are_case_insensitive_with_or_without_trailing_dot(answerer: DnsAnswerer) -> None:
    for name in ["WEB", "Web.", "proj-WEB-1.", "proj-web-1"]:
        assert addresses(ask(answerer, name)), name
    response = ask(answerer, "WeB")
    assert str(response.q.qname) == "WeB."  # the question is echoed as asked


def test_name_dot_network_asks_that_network_only(answerer: DnsAnswerer) -> None:
    client = "172.18.0.8"
    assert addresses(ask(answerer, "proj-db-1.proj_back", client=client)) == ["172.19.0.2"]
    assert addresses(ask(answerer, "both.proj_back", client=client)) == ["172.19.0.8"]
    assert forwarded(answerer, "proj-db-1.proj_default", client=client)


def test_service_on_other_network_does_not_resolve(answerer: DnsAnswerer) -> None:
    assert forwarded(answerer, "db")
    assert forwarded(answerer, "database")
    assert forwarded(answerer, "proj-db-1.proj_back")


def test_container_on_two_networks_resolves_names_of_both(answerer: DnsAnswerer) -> None:
    for client in ["172.18.0.8", "172.19.0.8"]:  # whichever address the query comes from
        assert len(addresses(ask(answerer, "web", client=client))) == 3
        assert addresses(ask(answerer, "db", client=client)) == ["172.19.0.2"]


def test_name_on_two_shared_networks_gets_the_addresses_of_each(answerer: DnsAnswerer) -> None:
    assert sorted(addresses(ask(answerer, "both", client="172.19.0.8"))) == [
        "172.18.0.8", "172.19.0.8"]
    assert addresses(ask(answerer, "both", client="172.18.0.9")) == ["172.18.0.8"]


def test_same_service_names_in_two_stacks_do_not_see_each_other() -> None:
    answerer = DnsAnswerer()
    answerer.set_endpoints([
        Endpoint("a_default", "a1" + "0" * 62, "a-web-1", "10.1.0.2", service="web"),
        Endpoint("a_default", "a2" + "0" * 62, "a-cli-1", "10.1.0.3", service="cli"),
        Endpoint("b_default", "b1" + "0" * 62, "b-web-1", "10.2.0.2", service="web"),
        Endpoint("b_default", "b2" + "0" * 62, "b-cli-1", "10.2.0.3", service="cli"),
    ])
    assert addresses(ask(answerer, "web", client="10.1.0.3")) == ["10.1.0.2"]
    assert addresses(ask(answerer, "web", client="10.2.0.3")) == ["10.2.0.2"]


def test_a_search_domain_suffix_makes_a_name_unknown(answerer: DnsAnswerer) -> None:
    assert forwarded(answerer, "web.example.com")
    assert forwarded(answerer, "example.com")


def test_any_query_gets_the_addresses(answerer: DnsAnswerer) -> None:
    assert addresses(ask(answerer, "proj-web-1", "ANY")) == ["172.18.0.2"]


# -- record types -----------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ["AAAA", "MX", "TXT", "SRV"])
def test_other_types_of_a_known_name_are_nodata_not_nxdomain(answerer: DnsAnswerer,
                                                             qtype: str) -> None:
    response = ask(answerer, "web", qtype)
    assert response.header.rcode == RCODE.NOERROR
    assert response.rr == []
    assert response.q.qtype == getattr(QTYPE, qtype)


def test_aaaa_of_an_unknown_name_is_forwarded(answerer: DnsAnswerer) -> None:
    assert forwarded(answerer, "example.com", "AAAA")


def test_other_classes_are_forwarded(answerer: DnsAnswerer) -> None:
    query = DNSRecord.question("web", "TXT", "CH").pack()
    assert isinstance(answerer.decide(query, "172.18.0.9"), Forward)


def test_reverse_lookup_gives_container_name_dot_network(answerer: DnsAnswerer) -> None:
    response = ask(answerer, "3.0.18.172.in-addr.arpa", "PTR")
    assert response.header.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in response.rr] == ["proj-web-2.proj_default."]
    assert response.rr[0].ttl == TTL
    upper = ask(answerer, "3.0.18.172.IN-ADDR.ARPA.", "PTR")
    assert str(upper.rr[0].rdata) == "proj-web-2.proj_default."


def test_reverse_lookup_of_an_address_not_visible_is_forwarded(answerer: DnsAnswerer) -> None:
    assert forwarded(answerer, "2.0.19.172.in-addr.arpa", "PTR")  # db, on another network
    assert forwarded(answerer, "1.1.168.192.in-addr.arpa", "PTR")
    assert forwarded(answerer, "0.18.172.in-addr.arpa", "PTR")  # a zone, not an address
    assert forwarded(answerer, "x.0.18.172.in-addr.arpa", "PTR")


def test_reverse_lookup_from_two_networks_names_the_addresss_network(
        answerer: DnsAnswerer) -> None:
    response = ask(answerer, "8.0.19.172.in-addr.arpa", "PTR", client="172.18.0.8")
    assert [str(rr.rdata) for rr in response.rr] == ["proj-both-1.proj_back."]


# -- records come and go -------------------------------------------------------------------


def test_a_new_replica_is_answered_at_once(answerer: DnsAnswerer) -> None:
    answerer.add_endpoint(web(4, "172.18.0.5"))
    assert "172.18.0.5" in addresses(ask(answerer, "web"))
    assert addresses(ask(answerer, "proj-web-4")) == ["172.18.0.5"]


def test_a_removed_container_no_longer_resolves(answerer: DnsAnswerer) -> None:
    answerer.remove_container(web(2, "").container_id)
    assert sorted(addresses(ask(answerer, "web"))) == ["172.18.0.2", "172.18.0.4"]
    assert forwarded(answerer, "proj-web-2")
    assert forwarded(answerer, "3.0.18.172.in-addr.arpa", "PTR")


def test_a_container_leaving_one_network_keeps_the_other(answerer: DnsAnswerer) -> None:
    answerer.remove_endpoint(BOTH[1].container_id, "proj_back")
    assert addresses(ask(answerer, "both", client="172.18.0.9")) == ["172.18.0.8"]
    assert forwarded(answerer, "db", client="172.18.0.8")
    assert ask(answerer, "web", client="172.19.0.8").header.rcode == RCODE.REFUSED


def test_set_endpoints_replaces_every_record(answerer: DnsAnswerer) -> None:
    answerer.set_endpoints([CLIENT, web(7, "172.18.0.77")])
    assert addresses(ask(answerer, "web")) == ["172.18.0.77"]
    assert forwarded(answerer, "proj-web-1")


# -- clients and forwarding ------------------------------------------------------------------


def test_unknown_client_is_refused_and_nothing_is_forwarded(answerer: DnsAnswerer) -> None:
    for name in ["web", "example.com"]:
        response = ask(answerer, name, client="192.0.2.1")
        assert response.header.rcode == RCODE.REFUSED
        assert response.rr == []


def test_forward_carries_the_query_unchanged(answerer: DnsAnswerer) -> None:
    query = DNSRecord.question("example.com", "A")
    query.add_ar(EDNS0(udp_len=1232))
    decision = answerer.decide(query.pack(), "172.18.0.9")
    assert decision == Forward(query.pack(), ())


def test_failed_forward_answers_servfail_with_the_clients_id(answerer: DnsAnswerer) -> None:
    query = DNSRecord.question("example.com", "A")
    decision = answerer.decide(query.pack(), "172.18.0.9")
    assert isinstance(decision, Forward)
    response = DNSRecord.parse(decision.servfail())
    assert response.header.id == query.header.id
    assert response.header.rcode == RCODE.SERVFAIL
    assert str(response.q.qname) == "example.com."


def test_a_containers_dns_servers_get_its_forwarded_queries(answerer: DnsAnswerer) -> None:
    answerer.set_container_dns(CLIENT.container_id, ["192.0.2.53", "[2001:db8::1]:5353"])
    query = DNSRecord.question("example.com").pack()
    assert answerer.decide(query, "172.18.0.9") == Forward(
        query, (("192.0.2.53", 53), ("2001:db8::1", 5353)))
    assert answerer.decide(query, "172.18.0.2") == Forward(query, ())
    answerer.remove_container(CLIENT.container_id)
    answerer.add_endpoint(CLIENT)
    assert answerer.decide(query, "172.18.0.9") == Forward(query, ())


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1", ("192.0.2.1", 53)),
    (" 192.0.2.1:5353 ", ("192.0.2.1", 5353)),
    ("::1", ("::1", 53)),
    ("[::1]", ("::1", 53)),
    ("[2001:db8::1]:54", ("2001:db8::1", 54)),
])
def test_nameserver_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["dns.example.com", "192.0.2.1:0", "192.0.2.1:x", "[::1]:70000",
                                  ""])
def test_bad_nameserver_is_one_clear_error(text: str) -> None:
    with pytest.raises(StackError, match="DNS server"):
        parse_nameserver(text)


# -- the wire ---------------------------------------------------------------------------------


def test_answer_keeps_the_query_id_and_recursion_flag(answerer: DnsAnswerer) -> None:
    query = DNSRecord.question("web")
    query.header.rd = 0
    decision = answerer.decide(query.pack(), "172.18.0.9")
    assert isinstance(decision, Answer)
    response = DNSRecord.parse(decision.wire)
    assert response.header.id == query.header.id
    assert (response.header.qr, response.header.rd, response.header.ra) == (1, 0, 1)


def many_replicas(count: int) -> DnsAnswerer:
    answerer = DnsAnswerer()
    answerer.set_endpoints([CLIENT, *(web(n, f"172.18.1.{n}") for n in range(1, count + 1))])
    return answerer


def test_udp_answer_over_512_bytes_is_truncated_with_tc() -> None:
    decision = many_replicas(40).decide(DNSRecord.question("web").pack(), "172.18.0.9")
    assert isinstance(decision, Answer)
    assert len(decision.wire) <= 512
    response = DNSRecord.parse(decision.wire)
    assert response.header.tc == 1
    assert 20 < len(addresses(response)) < 40  # what fits, for clients that cannot retry


def test_the_same_answer_over_tcp_is_whole() -> None:
    response = ask(many_replicas(40), "web", tcp=True)
    assert response.header.tc == 0
    assert len(addresses(response)) == 40


def test_edns_client_gets_a_larger_udp_answer_and_an_opt_record() -> None:
    query = DNSRecord.question("web")
    query.add_ar(EDNS0(udp_len=1232))
    decision = many_replicas(40).decide(query.pack(), "172.18.0.9")
    assert isinstance(decision, Answer)
    response = DNSRecord.parse(decision.wire)
    assert response.header.tc == 0
    assert len(addresses(response)) == 40
    assert [rr.rtype for rr in response.ar] == [QTYPE.OPT]
    too_many = many_replicas(100).decide(query.pack(), "172.18.0.9")
    assert isinstance(too_many, Answer)
    assert len(too_many.wire) <= 1232
    assert DNSRecord.parse(too_many.wire).header.tc == 1


def test_edns_size_below_512_still_allows_512(answerer: DnsAnswerer) -> None:
    query = DNSRecord.question("web")
    query.add_ar(EDNS0(udp_len=100))
    decision = answerer.decide(query.pack(), "172.18.0.9")
    assert isinstance(decision, Answer)
    assert DNSRecord.parse(decision.wire).header.tc == 0


# -- malformed messages ------------------------------------------------------------------------


def test_message_shorter_than_a_header_is_dropped(answerer: DnsAnswerer) -> None:
    assert isinstance(answerer.decide(b"\x12\x34\x01", "172.18.0.9"), Drop)
    assert isinstance(answerer.decide(b"", "172.18.0.9"), Drop)


def test_a_response_is_never_answered(answerer: DnsAnswerer) -> None:
    response = DNSRecord.question("web").reply().pack()
    assert isinstance(answerer.decide(response, "172.18.0.9"), Drop)


def test_unreadable_body_gets_formerr_with_the_id(answerer: DnsAnswerer) -> None:
    query = DNSRecord.question("web").pack()
    decision = answerer.decide(query[:-3], "172.18.0.9")
    assert isinstance(decision, Answer)
    response = DNSRecord.parse(decision.wire)
    assert response.header.rcode == RCODE.FORMERR
    assert response.header.id == int.from_bytes(query[:2], "big")
    assert response.header.qr == 1


def test_query_without_a_question_gets_formerr(answerer: DnsAnswerer) -> None:
    decision = answerer.decide(bytes(12), "172.18.0.9")
    assert isinstance(decision, Answer)
    assert DNSRecord.parse(decision.wire).header.rcode == RCODE.FORMERR


def test_other_opcodes_get_notimp(answerer: DnsAnswerer) -> None:
    query = DNSRecord.question("web")
    query.header.opcode = 4  # NOTIFY
    decision = answerer.decide(query.pack(), "172.18.0.9")
    assert isinstance(decision, Answer)
    assert DNSRecord.parse(decision.wire).header.rcode == RCODE.NOTIMP


@given(st.binary(max_size=600))
def test_any_bytes_give_a_decision_never_an_exception(data: bytes) -> None:
    answerer = DnsAnswerer()
    answerer.set_endpoints([CLIENT, web(1, "172.18.0.2")])
    assert isinstance(answerer.decide(data, "172.18.0.9"), Answer | Forward | Drop)


@given(st.binary(min_size=1, max_size=40))
def test_garbage_after_a_valid_query_header_never_raises(tail: bytes) -> None:
    answerer = DnsAnswerer()
    answerer.set_endpoints([CLIENT])
    header = DNSRecord.question("web").pack()[:12]
    decision = answerer.decide(header + tail, "172.18.0.9")
    if isinstance(decision, Answer):
        DNSRecord.parse(decision.wire)



def test_link_alias_resolves_only_for_the_linking_container(answerer: DnsAnswerer) -> None:
    answerer.set_container_links(CLIENT.container_id, {"cache": "web"})
    assert sorted(addresses(ask(answerer, "cache"))) == ["172.18.0.2", "172.18.0.3", "172.18.0.4"]
    assert forwarded(answerer, "cache", client="172.18.0.8")  # proj-both-1 has no such link
    answerer.set_endpoints([web(1, "172.18.0.2")])  # the client is gone: so is its link
    answerer.set_endpoints([web(1, "172.18.0.2"), CLIENT])
    assert forwarded(answerer, "cache")
