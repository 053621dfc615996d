"""Merging stack files (`-f a.yaml -f b.yaml`) with Docker Compose's rules.

Inputs are written in long syntax, as the canonical stage hands them over.
Expected values are what `docker compose config --format json` prints for the
same two files (only the keys the merge decides are compared).
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.spec.errors import Location, SourceMap, StackError
from orchestrator.spec.merge import copy_data, merge_documents
from orchestrator.spec.yamlfile import parse_yaml


def merge(*texts: str) -> dict[str, Any]:
    return merge_with_source(*texts)[0]


def merge_with_source(*texts: str) -> tuple[dict[str, Any], SourceMap]:
    data: dict[str, Any] = {}
    source = SourceMap("a.yaml")
    for index, text in enumerate(texts):
        document = parse_yaml(text, "ab"[index] + ".yaml")
        data = merge_documents(data, document.data, document.tags, source, document.source)
    return data, source


def web(*texts: str) -> dict[str, Any]:
    return merge(*texts)["services"]["web"]


# --- plain values and mappings ------------------------------------------------------


def test_later_scalar_replaces_earlier():
    data = merge("name: one\nservices: {web: {image: nginx, user: root}}",
                 "name: two\nservices: {web: {image: alpine}}")
    assert data["name"] == "two"
    assert data["services"]["web"] == {"image": "alpine", "user": "root"}


def test_null_in_later_file_keeps_earlier_value():
    assert web("services: {web: {image: nginx}}", "services: {web: {image: }}") == {
        "image": "nginx"
    }


def test_services_from_both_files_are_kept():
    data = merge("services: {web: {image: a}}", "services: {db: {image: b}}")
    assert data["services"] == {"web": {"image": "a"}, "db": {"image": "b"}}


def test_command_and_entrypoint_are_replaced_whole():
    service = web(
        "services: {web: {command: [a, b], entrypoint: [/x, -v]}}",
        "services: {web: {command: [c], entrypoint: [/y]}}",
    )
    assert service["command"] == ["c"]
    assert service["entrypoint"] == ["/y"]


def test_null_command_in_later_file_clears_it():
    # compose prints "command": null for this pair
    assert web("services: {web: {command: [a, b]}}", "services: {web: {command: }}") == {
        "command": None
    }


def test_environment_merges_per_variable_and_later_null_wins():
    service = web(
        "services: {web: {environment: {A: '1', B: '2'}}}",
        "services: {web: {environment: {B: , C: '4'}}}",
    )
    assert service["environment"] == {"A": "1", "B": None, "C": "4"}


def test_labels_sysctls_and_annotations_merge_per_key():
    service = web(
        "services: {web: {labels: {x: '1', y: '2'}, sysctls: {a.b: '1'}, annotations: {k: v}}}",
        "services: {web: {labels: {y: '3'}, sysctls: {a.b: '2', c: '3'}, annotations: {l: w}}}",
    )
    assert service["labels"] == {"x": "1", "y": "3"}
    assert service["sysctls"] == {"a.b": "2", "c": "3"}
    assert service["annotations"] == {"k": "v", "l": "w"}


def test_build_merges_per_key_and_args_per_argument():
    service = web(
        "services: {web: {build: {context: /p/c1, dockerfile: D1, target: t,"
        " args: {X: '1', Y: '2'}}}}",
        "services: {web: {build: {context: /p/c2, args: {Y: '3'}}}}",
    )
    assert service["build"] == {
        "context": "/p/c2", "dockerfile": "D1", "target": "t", "args": {"X": "1", "Y": "3"},
    }


def test_healthcheck_test_is_replaced_and_other_keys_kept():
    service = web(
        "services: {web: {healthcheck: {test: [CMD-SHELL, curl a], retries: 3}}}",
        "services: {web: {healthcheck: {test: [NONE]}}}",
    )
    assert service["healthcheck"] == {"test": ["NONE"], "retries": 3}


def test_ulimits_are_replaced_per_limit():
    service = web(
        "services: {web: {ulimits: {nofile: {soft: 1, hard: 2}, nproc: 5}}}",
        "services: {web: {ulimits: {nofile: {soft: 3, hard: 4}}}}",
    )
    assert service["ulimits"] == {"nofile": {"soft": 3, "hard": 4}, "nproc": 5}


def test_logging_options_merge_when_driver_is_the_same():
    service = web(
        "services: {web: {logging: {driver: json-file, options: {max-size: 1m}}}}",
        "services: {web: {logging: {options: {max-file: '3'}}}}",
    )
    assert service["logging"] == {
        "driver": "json-file", "options": {"max-size": "1m", "max-file": "3"},
    }


def test_logging_is_replaced_when_driver_changes():
    service = web(
        "services: {web: {logging: {driver: json-file, options: {max-size: 1m}}}}",
        "services: {web: {logging: {driver: syslog, options: {tag: x}}}}",
    )
    assert service["logging"] == {"driver": "syslog", "options": {"tag": "x"}}


def test_depends_on_merges_per_dependency():
    service = web(
        "services: {web: {depends_on: {db: {condition: service_started, required: true}}}}",
        "services: {web: {depends_on: {db: {condition: service_healthy}}}}",
    )
    assert service["depends_on"] == {"db": {"condition": "service_healthy", "required": True}}


def test_service_networks_merge_and_aliases_stay_unique():
    service = web(
        "services: {web: {networks: {front: {aliases: [a, b], priority: 3}}}}",
        "services: {web: {networks: {front: {aliases: [b, c]}, back: }}}",
    )
    assert service["networks"] == {
        "front": {"aliases": ["a", "b", "c"], "priority": 3}, "back": None,
    }


def test_null_network_attachment_keeps_earlier_settings():
    service = web(
        "services: {web: {networks: {front: {aliases: [a]}}}}",
        "services: {web: {networks: {front: }}}",
    )
    assert service["networks"] == {"front": {"aliases": ["a"]}}


def test_extension_keys_merge_and_their_lists_append():
    data = merge("x-foo: {a: 1, l: [1]}", "x-foo: {b: 2, l: [2]}")
    assert data["x-foo"] == {"a": 1, "b": 2, "l": [1, 2]}


def test_top_level_resources_merge():
    data = merge(
        "networks: {front: {labels: {a: '1'}}}\nvolumes: {v: {driver: local}}",
        "networks: {front: {labels: {b: '2'}}, back: {}}\nvolumes: {v: {labels: {c: '3'}}}",
    )
    assert data["networks"] == {"front": {"labels": {"a": "1", "b": "2"}}, "back": {}}
    assert data["volumes"] == {"v": {"driver": "local", "labels": {"c": "3"}}}


# --- lists -----------------------------------------------------------------------------


def test_ports_append_and_same_ip_port_target_protocol_replaces_in_place():
    service = web(
        """
services:
  web:
    ports:
      - {mode: ingress, target: 80, published: "8080", protocol: tcp}
      - {mode: ingress, host_ip: 127.0.0.1, target: 90, published: "9000", protocol: tcp}
      - {mode: ingress, target: 53, published: "53", protocol: udp}
""",
        """
services:
  web:
    ports:
      - {mode: ingress, target: 80, published: "8080", protocol: tcp}
      - {mode: ingress, target: 90, published: "9000", protocol: tcp}
      - {mode: host, target: 53, published: "53", protocol: udp}
""",
    )
    assert service["ports"] == [
        {"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"},
        {"mode": "ingress", "host_ip": "127.0.0.1", "target": 90, "published": "9000",
         "protocol": "tcp"},
        {"mode": "host", "target": 53, "published": "53", "protocol": "udp"},
        {"mode": "ingress", "target": 90, "published": "9000", "protocol": "tcp"},
    ]


def test_volumes_are_unique_by_target_later_wins_in_place():
    service = web(
        """
services:
  web:
    volumes:
      - {type: bind, source: /p/x, target: /x, read_only: true}
      - {type: volume, source: vol, target: /other, volume: {}}
""",
        "services: {web: {volumes: [{type: bind, source: /p/y, target: /x}]}}",
    )
    assert service["volumes"] == [
        {"type": "bind", "source": "/p/y", "target": "/x"},
        {"type": "volume", "source": "vol", "target": "/other", "volume": {}},
    ]


def test_secrets_are_unique_by_mount_path():
    service = web(
        "services: {web: {secrets: [{source: s1}, {source: s2, target: /t2}]}}",
        "services: {web: {secrets: [{source: s1, target: /run/secrets/s1, mode: '0400'},"
        " {source: s2}]}}",
    )
    assert service["secrets"] == [
        {"source": "s1", "target": "/run/secrets/s1", "mode": "0400"},
        {"source": "s2", "target": "/t2"},
        {"source": "s2"},
    ]


def test_configs_without_target_are_identified_by_slash_source():
    service = web(
        "services: {web: {configs: [{source: c1}]}}",
        "services: {web: {configs: [{source: c1, target: /c1}]}}",
    )
    assert service["configs"] == [{"source": "c1", "target": "/c1"}]


def test_devices_are_unique_by_container_path():
    service = web(
        "services: {web: {devices: [{source: /dev/a, target: /dev/b, permissions: rwm}]}}",
        "services: {web: {devices: [{source: /dev/c, target: /dev/b, permissions: rwm}]}}",
    )
    assert service["devices"] == [{"source": "/dev/c", "target": "/dev/b", "permissions": "rwm"}]


def test_set_like_lists_append_without_duplicates():
    service = web(
        "services: {web: {dns: [1.1.1.1, 8.8.8.8], dns_search: [a.com], expose: ['1', '2'],"
        " cap_add: [NET_ADMIN], tmpfs: [/run, /tmp]}}",
        "services: {web: {dns: [8.8.8.8, 9.9.9.9], dns_search: [b.com], expose: ['2', '3'],"
        " cap_add: [NET_ADMIN, SYS_ADMIN], tmpfs: [/run]}}",
    )
    assert service["dns"] == ["1.1.1.1", "8.8.8.8", "9.9.9.9"]
    assert service["dns_search"] == ["a.com", "b.com"]
    assert service["expose"] == ["1", "2", "3"]
    assert service["cap_add"] == ["NET_ADMIN", "SYS_ADMIN"]
    assert service["tmpfs"] == ["/run", "/tmp"]


def test_other_lists_simply_append():
    service = web("services: {web: {security_opt: [a]}}", "services: {web: {security_opt: [b]}}")
    assert service["security_opt"] == ["a", "b"]


def test_env_files_are_unique_by_path_later_wins():
    service = web(
        "services: {web: {env_file: [{path: /p/a.env, required: true},"
        " {path: /p/b.env, required: false}]}}",
        "services: {web: {env_file: [{path: /p/b.env, required: true},"
        " {path: /p/c.env, required: true}]}}",
    )
    assert service["env_file"] == [
        {"path": "/p/a.env", "required": True},
        {"path": "/p/b.env", "required": True},
        {"path": "/p/c.env", "required": True},
    ]


def test_extra_hosts_skip_known_entries_and_group_by_host():
    service = web(
        "services: {web: {extra_hosts: [h1=1.1.1.1, h2=2.2.2.2, h2=3.3.3.3]}}",
        "services: {web: {extra_hosts: [h2=3.3.3.3, h0=0.0.0.0, h1=9.9.9.9]}}",
    )
    assert service["extra_hosts"] == [
        "h0=0.0.0.0", "h1=1.1.1.1", "h1=9.9.9.9", "h2=2.2.2.2", "h2=3.3.3.3",
    ]


def test_ipam_pools_merge_by_subnet():
    data = merge(
        "networks: {n: {ipam: {config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.1}]}}}",
        "networks: {n: {ipam: {config: [{subnet: 10.0.0.0/24, ip_range: 10.0.0.0/25},"
        " {subnet: 10.1.0.0/24}]}}}",
    )
    assert data["networks"]["n"]["ipam"]["config"] == [
        {"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "ip_range": "10.0.0.0/25"},
        {"subnet": "10.1.0.0/24"},
    ]


def test_ipam_new_subnet_over_two_pools_keeps_compose_result():
    # compose merges the second earlier pool into the new subnet and drops the first
    data = merge(
        "networks: {n: {ipam: {config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.1},"
        " {subnet: 10.2.0.0/24, ip_range: 10.2.0.0/25}]}}}",
        "networks: {n: {ipam: {config: [{subnet: 10.1.0.0/24}]}}}",
    )
    assert data["networks"]["n"]["ipam"]["config"] == [
        {"subnet": "10.1.0.0/24", "ip_range": "10.2.0.0/25"},
    ]


def test_duplicates_within_one_file_are_removed():
    service = web(
        "services: {web: {cap_add: [A, A], volumes: [{type: bind, source: /p/a, target: /data},"
        " {type: bind, source: /p/b, target: /data}]}}"
    )
    assert service == {
        "cap_add": ["A"],
        "volumes": [{"type": "bind", "source": "/p/b", "target": "/data"}],
    }


# --- !reset and !override ----------------------------------------------------------------

BASE = """
services:
  web:
    image: nginx
    user: root
    ports: [{mode: ingress, target: 80, published: "8080", protocol: tcp}]
    environment: {A: "1", B: "2"}
    labels: {x: "1"}
    depends_on:
      db: {condition: service_healthy, required: true}
      cache: {condition: service_started, required: true}
  db: {image: pg, x-thing: 1}
networks:
  n1: {driver: bridge, labels: {a: "1"}}
x-a: {k: 1}
"""


def test_reset_removes_the_key_from_the_result():
    data = merge(BASE, """
services:
  web:
    ports: !reset []
    labels: !reset
    user: !reset null
  db: {x-thing: !reset }
x-a: !reset {}
""")
    assert data["services"]["web"] == {
        "image": "nginx",
        "environment": {"A": "1", "B": "2"},
        "depends_on": {
            "db": {"condition": "service_healthy", "required": True},
            "cache": {"condition": "service_started", "required": True},
        },
    }
    assert data["services"]["db"] == {"image": "pg"}
    assert "x-a" not in data


def test_reset_whole_service_removes_it():
    data = merge(BASE, "services:\n  db: !reset\n")
    assert sorted(data["services"]) == ["web"]


def test_override_replaces_instead_of_merging():
    data = merge(BASE, """
services:
  web:
    environment: !override {C: "3"}
    depends_on: !override {db: {condition: service_started, required: true}}
networks:
  n1: !override {driver: overlay}
""")
    service = data["services"]["web"]
    assert service["environment"] == {"C": "3"}
    assert service["depends_on"] == {"db": {"condition": "service_started", "required": True}}
    assert data["networks"]["n1"] == {"driver": "overlay"}


def test_override_still_removes_duplicates():
    service = web(BASE, """
services:
  web:
    ports: !override
      - {mode: ingress, target: 81, published: "8081", protocol: tcp}
      - {mode: host, target: 81, published: "8081", protocol: tcp}
""")
    assert service["ports"] == [
        {"mode": "host", "target": 81, "published": "8081", "protocol": "tcp"}
    ]


def test_reset_in_first_file_drops_the_key():
    assert web("services: {web: {image: a, ports: !reset [{target: 80}]}}") == {"image": "a"}


def test_reset_list_item_drops_only_that_item():
    service = web("services: {web: {dns: [a], dns_search: [x]}}",
                  "services: {web: {dns: [b, !reset c, d]}}")
    assert service["dns"] == ["a", "b", "d"]


# --- inputs, errors and locations --------------------------------------------------------


def test_later_document_is_not_changed_and_shares_nothing():
    later = parse_yaml("services: {web: {environment: {A: '1'}, ports: [{target: 80}]}}", "b.yaml")
    before = copy_data(later.data)
    data = merge_documents({}, later.data, later.tags, SourceMap(), later.source)
    data = merge_documents(data, later.data, later.tags, SourceMap(), later.source)
    data["services"]["web"]["environment"]["B"] = "2"
    assert later.data == before


def test_mapping_over_list_is_an_error_at_the_later_file():
    with pytest.raises(StackError) as caught:
        merge("x-a: [1]", "x-a:\n  k: 1\n")
    assert str(caught.value).startswith("b.yaml:1:1: x-a: cannot merge a mapping over the list")


def test_locations_follow_the_file_that_won():
    data, source = merge_with_source(
        "services:\n  web:\n    image: a\n    user: root\n    dns: [x]\n",
        "services:\n  web:\n    image: b\n    dns: [y]\n",
    )
    assert data["services"]["web"]["dns"] == ["x", "y"]
    assert source.locate(("services", "web", "image")) == Location("b.yaml", 3, 5)
    assert source.locate(("services", "web", "user")) == Location("a.yaml", 4, 5)
    assert source.locate(("services", "web", "dns", 0)) == Location("a.yaml", 5, 11)
    assert source.locate(("services", "web", "dns", 1)) == Location("b.yaml", 4, 11)
