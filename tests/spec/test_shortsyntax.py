"""Port and volume specs and command lines read as compose reads them.

Expected values were printed by `docker compose config --format json` (v2.40).
"""

import pytest

from orchestrator.spec.shortsyntax import parse_port_spec, parse_volume_spec, split_command


def test_port_with_host_port():
    assert parse_port_spec("8080:80") == [
        {"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}
    ]


def test_port_without_host_port_has_no_published():
    assert parse_port_spec("80") == [{"mode": "ingress", "target": 80, "protocol": "tcp"}]


def test_port_with_ip_and_empty_host_port():
    assert parse_port_spec("127.0.0.1::53/udp") == [
        {"mode": "ingress", "host_ip": "127.0.0.1", "target": 53, "protocol": "udp"}
    ]


def test_port_with_bracketed_and_bare_ipv6():
    expected = {"mode": "ingress", "host_ip": "::1", "target": 80, "published": "80",
                "protocol": "tcp"}
    assert parse_port_spec("[::1]:80:80") == [expected]
    assert parse_port_spec("::1:80:80") == [expected]


def test_port_range_expands_to_one_entry_per_port():
    assert parse_port_spec("9000-9001:9000-9001/udp") == [
        {"mode": "ingress", "target": 9000, "published": "9000", "protocol": "udp"},
        {"mode": "ingress", "target": 9001, "published": "9001", "protocol": "udp"},
    ]


def test_port_range_is_ordered_as_text_like_compose():
    assert [p["target"] for p in parse_port_spec("9998-10001:9998-10001")] == [
        10000, 10001, 9998, 9999
    ]


def test_host_range_onto_one_container_port_stays_a_range():
    assert parse_port_spec("8000-8001:80") == [
        {"mode": "ingress", "target": 80, "published": "8000-8001", "protocol": "tcp"}
    ]


def test_container_range_without_host_port():
    assert [p["target"] for p in parse_port_spec("6000-6002")] == [6000, 6001, 6002]


def test_sctp_port_keeps_explicit_any_address():
    assert parse_port_spec("0.0.0.0:7000:7000/sctp") == [
        {"mode": "ingress", "host_ip": "0.0.0.0", "target": 7000, "published": "7000",
         "protocol": "sctp"}
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("abc", "invalid containerPort: abc"),
        ("1-2:3-5", "invalid ranges specified for container and host Ports: 3-5 and 1-2"),
        ("80/xyz", "invalid proto: xyz"),
        ("1.2.3:80:80", "invalid IP address: 1.2.3"),
        ("70000", "invalid containerPort: 70000"),
    ],
)
def test_malformed_port_is_rejected_with_compose_message(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_port_spec(spec)


def test_bind_volume_short_form():
    assert parse_volume_spec("./data:/data:ro") == {
        "type": "bind", "source": "./data", "target": "/data", "read_only": True,
        "bind": {"create_host_path": True},
    }


def test_named_and_anonymous_volumes():
    assert parse_volume_spec("named:/x") == {
        "type": "volume", "source": "named", "target": "/x", "volume": {}
    }
    assert parse_volume_spec("/anon") == {"type": "volume", "target": "/anon", "volume": {}}


def test_volume_options_selinux_propagation_nocopy():
    assert parse_volume_spec("./x:/d:Z,rslave") == {
        "type": "bind", "source": "./x", "target": "/d",
        "bind": {"selinux": "Z", "propagation": "rslave", "create_host_path": True},
    }
    assert parse_volume_spec("vol:/b:ro,nocopy") == {
        "type": "volume", "source": "vol", "target": "/b", "read_only": True,
        "volume": {"nocopy": True},
    }


def test_volume_target_is_cleaned_and_unknown_options_ignored():
    assert parse_volume_spec("../up:/e//f/")["target"] == "/e/f"
    assert parse_volume_spec("/abs:/h:cached") == {
        "type": "bind", "source": "/abs", "target": "/h", "bind": {"create_host_path": True}
    }


def test_one_letter_volume_name_reads_as_a_drive_like_compose():
    assert parse_volume_spec("v:/a:nocopy") == {
        "type": "bind", "source": "v:/a", "target": "nocopy",
        "bind": {"create_host_path": True},
    }


def test_two_character_spec_is_an_anonymous_volume():
    assert parse_volume_spec("::") == {"type": "volume", "target": "::"}


@pytest.mark.parametrize(("spec", "message"), [("", "invalid empty volume spec"),
                                               ("/a:", "empty section between colons")])
def test_malformed_volume_is_rejected(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_volume_spec(spec)


def test_command_quoting_like_compose():
    line = 'a "" b\\ c "d\\"e" \'f\\g\' h\\\\i $$X'
    assert split_command(line) == ["a", "", "b c", 'd"e', "f\\g", "h\\i", "$$X"]


def test_command_stops_at_unquoted_operator():
    assert split_command("echo a && echo b") == ["echo", "a"]


def test_empty_command_is_an_empty_list():
    assert split_command("") == []


@pytest.mark.parametrize("line", ["echo (a)", "echo a)", "echo 'open"])
def test_unbalanced_command_is_rejected(line):
    with pytest.raises(ValueError, match="invalid command line string"):
        split_command(line)
