"""Host ports two containers would publish at once, refused before `stack up`.

Each model is written the way normalize leaves it (the shape of `docker
compose config --format json`), as YAML so that every key has a real line.
compose config accepts all of these files; the engine would refuse the
second container, so `stack up` refuses them before creating anything.
"""

from __future__ import annotations

import textwrap

import pytest

from orchestrator.spec.errors import StackError
from orchestrator.spec.host_ports import validate_host_ports
from orchestrator.spec.yamlfile import parse_yaml


def _load(text: str):
    return parse_yaml(textwrap.dedent(text), "compose.yaml")


def port_error(text: str) -> str:
    document = _load(text)
    with pytest.raises(StackError) as raised:
        validate_host_ports(document.data, document.source)
    return str(raised.value)


def test_same_host_port_in_two_services_is_rejected():
    assert port_error("""
        services:
          web: {image: x, ports: [{target: 80, published: "8080", protocol: tcp}]}
          api: {image: x, ports: [{target: 80, published: "8080", protocol: tcp}]}
    """) == (
        "compose.yaml:3:27: services.web.ports[0]: host port 8080/tcp is already published "
        "by services.api.ports[0] "
        "(publish another host port, or leave the host port out to get a free one)"
    )


def test_same_port_number_on_other_protocol_or_ip_is_accepted():
    document = _load("""
        services:
          web:
            image: x
            ports:
              - {target: 53, published: "53", protocol: tcp}
              - {target: 53, published: "53", protocol: udp}
              - {host_ip: 127.0.0.1, target: 80, published: "8080", protocol: tcp}
              - {host_ip: 127.0.0.2, target: 80, published: "8080", protocol: tcp}
              - {target: 80, protocol: tcp}
              - {target: 81, protocol: tcp}
    """)
    validate_host_ports(document.data, document.source)


@pytest.mark.parametrize("ip", ["", "0.0.0.0", "::"])
def test_wildcard_host_ip_conflicts_with_any_ip(ip):
    assert "host port [::1]:8080/tcp is already published by services.api.ports[0]" in port_error(
        f"""
        services:
          api: {{image: x, ports: [{{host_ip: "{ip}", target: 80, published: "8080"}}]}}
          web: {{image: x, ports: [{{host_ip: "::1", target: 80, published: "8080"}}]}}
        """
    )


def test_port_expanded_from_a_range_conflicts_with_a_single_port():
    # compose expands "9000-9002:81-83" to three single ports.
    message = port_error("""
        services:
          web:
            image: x
            ports:
              - {target: 81, published: "9000", protocol: tcp}
              - {target: 82, published: "9001", protocol: tcp}
          api: {image: x, ports: [{target: 80, published: "9001", protocol: tcp}]}
    """)
    assert message.startswith("compose.yaml:7:9: services.web.ports[1]: host port 9001/tcp")


def test_host_range_pool_without_a_free_port_is_rejected():
    message = port_error("""
        services:
          web: {image: x, scale: 3, ports: [{target: 80, published: "9000-9001", protocol: tcp}]}
          api: {image: x, ports: [{target: 80, published: "9001", protocol: tcp}]}
    """)
    assert message.startswith(
        "compose.yaml:3:37: services.web.ports[0]: no free host port left in 9000-9001/tcp"
    )


def test_host_range_pool_serves_each_replica():
    document = _load("""
        services:
          web: {image: x, scale: 2, ports: [{target: 80, published: "9000-9002", protocol: tcp}]}
          api: {image: x, ports: [{target: 80, published: "9001", protocol: tcp}]}
    """)
    validate_host_ports(document.data, document.source)


def test_fixed_host_port_on_a_scaled_service_conflicts_with_itself():
    assert "is already published by another replica of this service" in port_error("""
        services:
          web: {image: x, deploy: {replicas: 2}, ports: [{target: 80, published: "80"}]}
    """)


def test_service_scaled_to_zero_publishes_nothing():
    document = _load("""
        services:
          web: {image: x, scale: 0, ports: [{target: 80, published: "80"}]}
          api: {image: x, ports: [{target: 80, published: "80"}]}
    """)
    validate_host_ports(document.data, document.source)
