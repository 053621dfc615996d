"""Short syntax becomes the long form `docker compose config --format json` prints.

Expected values were printed by docker compose v2.40 for the same input.
"""

import pytest

from orchestrator.spec.errors import StackError
from orchestrator.spec.transform import apply_defaults, canonical
from orchestrator.spec.yamlfile import parse_yaml


def service(text: str, name: str = "a") -> dict:
    """The canonical form of service `name` in a file written as `text`."""
    doc = parse_yaml(text, "compose.yaml")
    return canonical(doc.data, doc.source)["services"][name]


def one(key_yaml: str) -> dict:
    return service("services:\n  a:\n    image: x\n" + key_yaml)


def test_ports_short_and_long_forms():
    got = one("    ports: ['8080:80', 3000, {target: '81', published: 8081}]\n")
    assert got["ports"] == [
        {"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"},
        {"mode": "ingress", "target": 3000, "protocol": "tcp"},
        {"mode": "ingress", "target": 81, "published": "8081", "protocol": "tcp"},
    ]


def test_long_port_keeps_all_fields_in_compose_order():
    got = one("    ports:\n      - {app_protocol: http, name: web, host_ip: 1.2.3.4,"
              " mode: host, protocol: udp, published: 8081-8082, target: 81}\n")
    assert list(got["ports"][0].items()) == [
        ("name", "web"), ("mode", "host"), ("host_ip", "1.2.3.4"), ("target", 81),
        ("published", "8081-8082"), ("protocol", "udp"), ("app_protocol", "http"),
    ]


def test_bad_port_error_points_at_the_entry():
    with pytest.raises(StackError) as caught:
        one("    ports: ['80', 'abc']\n")
    assert str(caught.value).startswith(
        "compose.yaml:4:19: services.a.ports[1]: invalid containerPort: abc")


def test_long_volume_forms():
    got = one(
        "    volumes:\n"
        "      - {type: bind, source: ./s, target: /s/, bind: {propagation: rshared,"
        " create_host_path: false}}\n"
        "      - {type: tmpfs, target: /tmp, tmpfs: {size: 10m, mode: 0755}}\n"
        "      - {type: volume, source: v, target: /v, volume: {nocopy: true, subpath: a}}\n"
    )
    assert got["volumes"] == [
        {"type": "bind", "source": "./s", "target": "/s", "bind": {"propagation": "rshared"}},
        {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": "10485760", "mode": 493}},
        {"type": "volume", "source": "v", "target": "/v",
         "volume": {"nocopy": True, "subpath": "a"}},
    ]


def test_environment_list_and_map_values_become_strings():
    assert one("    environment: [A=1, B, C=]\n")["environment"] == {
        "A": "1", "B": None, "C": ""}
    got = one("    environment: {N: 1, F: 1.5, T: true, E: null, S: '', BIG: 1e21, FL: 0.1}\n")
    assert got["environment"] == {"BIG": "1e+21", "E": None, "F": "1.5", "FL": "0.1",
                                  "N": "1", "S": "", "T": "true"}
    assert list(got["environment"]) == sorted(got["environment"])


def test_labels_and_annotations_bare_key_is_empty_string():
    assert one("    labels: [a=1, b, c=]\n")["labels"] == {"a": "1", "b": "", "c": ""}
    assert one("    labels: {a: null, b: 1, c: 1.0}\n")["labels"] == {
        "a": "", "b": "1", "c": "1"}
    assert one("    annotations: {x: 1, y: true}\n")["annotations"] == {"x": "1", "y": "true"}
    assert one("    sysctls: [a.b=1]\n")["sysctls"] == {"a.b": "1"}


def test_extra_hosts_print_as_sorted_host_equals_ip():
    got = one("    extra_hosts: ['h3:::1', 'h1:1.2.3.4', 'h2=::1']\n")
    assert got["extra_hosts"] == ["h1=1.2.3.4", "h2=::1", "h3=::1"]
    got = one("    extra_hosts: {h1: 1.2.3.4, h2: ['::1', '[::2]'], h0: '[fe80::1]'}\n")
    assert got["extra_hosts"] == ["h0=fe80::1", "h1=1.2.3.4", "h2=::1", "h2=::2"]


def test_extra_host_without_ip_is_an_error():
    with pytest.raises(StackError, match="invalid additional host, missing IP: foo"):
        one("    extra_hosts: [foo]\n")


def test_depends_on_list_and_defaults_after_merge():
    got = service("services:\n  a:\n    image: x\n    depends_on: [db]\n  db:\n    image: y\n")
    assert got["depends_on"] == {"db": {"condition": "service_started", "required": True}}
    doc = parse_yaml(
        "services:\n  a:\n    image: x\n    depends_on:\n"
        "      b: {restart: true}\n      c: {condition: service_completed_successfully,"
        " required: false}\n", "compose.yaml")
    data = apply_defaults(canonical(doc.data, doc.source), "/p")
    assert data["services"]["a"]["depends_on"] == {
        "b": {"condition": "service_started", "restart": True, "required": True},
        "c": {"condition": "service_completed_successfully", "required": False},
    }


def test_networks_and_models_lists_become_maps():
    assert one("    networks: [n2, n1]\n")["networks"] == {"n1": None, "n2": None}
    assert one("    models: [m1]\n")["models"] == {"m1": None}


def test_secrets_and_configs_short_names():
    got = one("    secrets: [s1, {source: s2, target: x, uid: 1, mode: 0400}]\n"
              "    configs: [c1]\n")
    assert got["secrets"] == [
        {"source": "s1", "target": "/run/secrets/s1"},
        {"source": "s2", "target": "x", "uid": "1", "mode": "0400"},
    ]
    assert got["configs"] == [{"source": "c1"}]
    assert one("    secrets: [{source: s, mode: '0440'}]\n")["secrets"][0]["mode"] == "0440"
    assert one("    secrets: [{source: s, mode: 0}]\n")["secrets"][0]["mode"] == "00"


def test_command_and_entrypoint_strings_are_split():
    got = one("    command: echo \"hello world\" $$HOME\n    entrypoint: ''\n")
    assert got["command"] == ["echo", "hello world", "$$HOME"]
    assert got["entrypoint"] == []
    assert one("    command: [a, '1']\n")["command"] == ["a", "1"]


def test_unbalanced_command_is_an_error():
    with pytest.raises(StackError, match="services.a.command: invalid command line string"):
        one("    command: echo (a)\n")


def test_healthcheck_test_string_and_durations():
    got = one("    healthcheck:\n      test: curl -f http://x\n      interval: 90s\n"
              "      timeout: 500ms\n      start_period: 1h\n      start_interval: 1m\n"
              "      retries: 3\n")
    assert list(got["healthcheck"].items()) == [
        ("test", ["CMD-SHELL", "curl -f http://x"]), ("timeout", "500ms"),
        ("interval", "1m30s"), ("retries", 3), ("start_period", "1h0m0s"),
        ("start_interval", "1m0s"),
    ]
    assert one("    healthcheck: {test: 'true', disable: true}\n")["healthcheck"] == {
        "test": ["CMD-SHELL", "true"], "disable": True}
    assert one("    healthcheck: {test: []}\n")["healthcheck"] == {}


def test_bad_duration_is_an_error_at_the_key():
    with pytest.raises(StackError) as caught:
        one("    stop_grace_period: 1x\n")
    assert 'services.a.stop_grace_period: time: unknown unit "x" in duration "1x"' in str(
        caught.value)


def test_build_string_is_a_context():
    assert one("    build: ./dir\n")["build"] == {"context": "./dir"}
    got = one("    build:\n      context: .\n      args: [A=1, B]\n      ssh: [default]\n"
              "      secrets: [s1]\n      additional_contexts: [foo=./bar]\n")
    assert got["build"] == {"context": ".", "args": {"A": "1", "B": None}, "ssh": ["default"],
                            "secrets": [{"source": "s1"}],
                            "additional_contexts": {"foo": "./bar"}}


def test_build_context_default_after_merge():
    doc = parse_yaml("services:\n  a:\n    build: {dockerfile: Df}\n", "c.yaml")
    data = apply_defaults(canonical(doc.data, doc.source), "/proj")
    assert data["services"]["a"]["build"] == {"context": "/proj", "dockerfile": "Df"}


def test_bad_build_maps_are_errors():
    with pytest.raises(StackError, match='invalid ssh key "x"'):
        one("    build: {ssh: [x]}\n")
    with pytest.raises(StackError, match="invalid value x, expected key=value"):
        one("    build: {additional_contexts: [x]}\n")


def test_ulimits_single_and_soft_hard():
    assert one("    ulimits: {nofile: 1024, nproc: {soft: 10, hard: 20}}\n")["ulimits"] == {
        "nofile": 1024, "nproc": {"soft": 10, "hard": 20}}


def test_sizes_print_as_byte_strings():
    got = one("    mem_limit: 512m\n    memswap_limit: 1g\n    shm_size: 1024k\n"
              "    mem_reservation: 1g\n    mem_swappiness: 10\n")
    assert (got["mem_limit"], got["memswap_limit"], got["shm_size"], got["mem_reservation"],
            got["mem_swappiness"]) == ("536870912", "1073741824", "1048576", "1073741824", "10")


def test_size_written_as_float_is_ignored_like_compose():
    assert "mem_limit" not in one("    mem_limit: 1.5\n")


def test_bad_size_is_an_error():
    with pytest.raises(StackError, match="services.a.mem_limit: invalid suffix: 'x'"):
        one("    mem_limit: 1x\n")


def test_deploy_resources_and_shape():
    got = one("    deploy:\n      replicas: 2\n      resources:\n"
              "        limits: {cpus: '1.5', memory: 512m, pids: 10}\n"
              "        reservations: {memory: 1g, devices: [{capabilities: [gpu]}]}\n")
    assert got["deploy"] == {
        "replicas": 2,
        "resources": {
            "limits": {"cpus": 1.5, "memory": "536870912", "pids": 10},
            "reservations": {"memory": "1073741824",
                             "devices": [{"capabilities": ["gpu"], "count": -1}]},
        },
        "placement": {},
    }
    assert one("    deploy: {replicas: 1}\n")["deploy"] == {
        "replicas": 1, "resources": {}, "placement": {}}


def test_deploy_durations_and_labels():
    got = one("    deploy:\n      labels: [d=1]\n"
              "      restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3,"
              " window: 2m}\n      update_config: {parallelism: 2, delay: 10s}\n")
    assert got["deploy"] == {
        "labels": {"d": "1"},
        "update_config": {"parallelism": 2, "delay": "10s"},
        "resources": {},
        "restart_policy": {"condition": "on-failure", "delay": "5s", "max_attempts": 3,
                           "window": "2m0s"},
        "placement": {},
    }


def test_device_requests_count():
    got = one("    deploy:\n      resources:\n        reservations:\n          devices:\n"
              "            - {driver: nvidia, count: 2, capabilities: [gpu], options: {a: 1}}\n"
              "            - {device_ids: ['0'], capabilities: [gpu]}\n"
              "            - {count: all, capabilities: [gpu]}\n")
    assert got["deploy"]["resources"]["reservations"]["devices"] == [
        {"capabilities": ["gpu"], "driver": "nvidia", "count": 2, "options": {"a": "1"}},
        {"capabilities": ["gpu"], "device_ids": ["0"]},
        {"capabilities": ["gpu"], "count": -1},
    ]
    assert one("    gpus: all\n")["gpus"] == [{"count": -1}]
    assert one("    gpus: [{driver: nvidia}]\n")["gpus"] == [{"driver": "nvidia", "count": -1}]


def test_cpus_print_as_float32():
    assert one("    cpus: 1.5\n")["cpus"] == 1.5
    assert one("    cpus: 0.123456789\n")["cpus"] == 0.12345679
    assert one("    cpu_percent: 50\n")["cpu_percent"] == 50


def test_devices_short_form():
    got = one("    devices: ['/dev/a', '/dev/b:/dev/c', '/dev/d:/dev/e:r']\n")
    assert got["devices"] == [
        {"source": "/dev/a", "target": "/dev/a", "permissions": "rwm"},
        {"source": "/dev/b", "target": "/dev/c", "permissions": "rwm"},
        {"source": "/dev/d", "target": "/dev/e", "permissions": "r"},
    ]
    with pytest.raises(StackError, match="confusing device mapping"):
        one("    devices: ['a:b:c:d']\n")


def test_strings_become_lists():
    got = one("    dns: 8.8.8.8\n    dns_search: example.com\n    tmpfs: /run\n"
              "    expose: [80, '90']\n    label_file: a.labels\n")
    assert (got["dns"], got["dns_search"], got["tmpfs"], got["expose"], got["label_file"]) == (
        ["8.8.8.8"], ["example.com"], ["/run"], ["80", "90"], ["a.labels"])


def test_env_file_forms():
    assert one("    env_file: a.env\n")["env_file"] == [{"path": "a.env", "required": True}]
    assert one("    env_file: [{path: b.env, required: false}]\n")["env_file"] == [
        {"path": "b.env", "required": False}]


def test_durations_stringified_elsewhere():
    assert one("    stop_grace_period: 1m30s\n")["stop_grace_period"] == "1m30s"
    assert one("    stop_grace_period: 1d\n")["stop_grace_period"] == "24h0m0s"


def test_blkio_prints_go_field_names():
    got = one("    blkio_config:\n      weight: 300\n"
              "      weight_device: [{path: /dev/sda, weight: 400}]\n"
              "      device_read_bps: [{path: /dev/sda, rate: 1mb}]\n"
              "      device_read_iops: [{path: /dev/sda, rate: 120}]\n")
    assert got["blkio_config"] == {
        "weight": 300,
        "weight_device": [{"Path": "/dev/sda", "Weight": 400}],
        "device_read_bps": [{"Path": "/dev/sda", "Rate": "1048576"}],
        "device_read_iops": [{"Path": "/dev/sda", "Rate": "120"}],
    }


def test_logging_options_and_hooks_and_watch():
    assert one("    logging: {options: {max-file: 3}}\n")["logging"] == {
        "options": {"max-file": "3"}}
    assert one("    post_start: [{command: echo hi}]\n")["post_start"] == [
        {"command": ["echo", "hi"]}]
    got = one("    develop:\n      watch:\n"
              "        - {path: ./src, action: sync, target: /app, ignore: node_modules}\n")
    assert got["develop"] == {"watch": [{"path": "./src", "action": "sync", "target": "/app",
                                         "exec": {"command": None},
                                         "ignore": ["node_modules"]}]}


def test_extends_string_is_a_service():
    assert one("    extends: b\n")["extends"] == {"service": "b"}


def test_top_level_resources():
    doc = parse_yaml(
        "networks:\n  n1: {driver_opts: {a: 1}, labels: ['l=1']}\n  n2: {external: true}\n"
        "volumes:\n  w: {external: {name: foo}}\n"
        "include: [other.yaml]\n", "compose.yaml")
    data = canonical(doc.data, doc.source)
    assert data["networks"] == {"n1": {"driver_opts": {"a": "1"}, "labels": {"l": "1"}},
                                "n2": {"external": True}}
    assert data["volumes"] == {"w": {"external": True, "name": "foo"}}
    assert data["include"] == [{"path": ["other.yaml"]}]


def test_external_name_conflict_is_an_error():
    doc = parse_yaml("volumes:\n  w: {name: a, external: {name: b}}\n", "compose.yaml")
    with pytest.raises(StackError, match="name and external.name conflict"):
        canonical(doc.data, doc.source)


def test_input_is_not_modified():
    doc = parse_yaml("services:\n  a:\n    image: x\n    ports: ['80']\n", "c.yaml")
    canonical(doc.data, doc.source)
    assert doc.data["services"]["a"]["ports"] == ["80"]


def test_selinux_and_propagation_options_of_a_named_volume_stay_under_bind() -> None:
    from orchestrator.spec.shortsyntax import parse_volume_spec

    assert parse_volume_spec("vv:/w:z,nocopy,rprivate") == {
        "type": "volume",
        "source": "vv",
        "target": "/w",
        "bind": {"selinux": "z", "propagation": "rprivate"},
        "volume": {"nocopy": True},
    }
