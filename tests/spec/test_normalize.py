"""Project-level normalization: the merged document as `docker compose config` prints it.

Inputs are documents whose service keys are already in long form (what the
per-file stages hand over); every expected value was printed by
`docker compose config --format json` (v2.40) for the equivalent file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.spec.errors import SourceMap, StackError, Warnings
from orchestrator.spec.normalize import normalize

FIXTURES = Path(__file__).parent / "fixtures" / "normalize"
PROJECT_DIR = "/srv/shop"
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "HOME": "/home/me"}
DEFAULT_NETWORK = {"default": {"name": "shop_default", "ipam": {}}}


def run(document: dict, environment: dict[str, str] | None = None) -> dict:
    env = ENVIRONMENT if environment is None else environment
    return normalize(document, "shop", PROJECT_DIR, env, SourceMap("compose.yaml"))


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def printed(value: dict) -> str:
    """The text `config --format json` would print: key order matters here."""
    return json.dumps(value, indent=2)


# ---- the project -------------------------------------------------------------------------


def test_minimal_service_gets_name_default_network_and_null_command() -> None:
    model = run({"services": {"web": {"image": "nginx"}}})
    assert printed(model) == printed({
        "name": "shop",
        "networks": DEFAULT_NETWORK,
        "services": {
            "web": {
                "command": None,
                "entrypoint": None,
                "image": "nginx",
                "networks": {"default": None},
            }
        },
    })


def test_top_level_keys_print_sorted_with_extensions_last() -> None:
    model = run({
        "x-common": {"a": 1},
        "services": {"db": {"image": "pg", "secrets": [{"source": "pw"}],
                            "configs": [{"source": "conf"}]}},
        "secrets": {"pw": {"file": "/srv/shop/pw.txt"}},
        "configs": {"conf": {"file": "/srv/shop/c.txt"}},
        "version": "3.8",
    })
    assert list(model) == ["configs", "name", "networks", "secrets", "services", "x-common"]
    assert model["x-common"] == {"a": 1}


def test_project_name_replaces_the_name_written_in_the_file() -> None:
    assert run({"name": "other", "services": {}})["name"] == "shop"


def test_services_print_in_name_order_with_keys_in_compose_field_order() -> None:
    model = run({"services": {
        "web": {"volumes_from": ["db"], "image": "x", "container_name": "w", "restart": "always"},
        "db": {"image": "y"},
    }})
    assert list(model["services"]) == ["db", "web"]
    assert list(model["services"]["web"]) == [
        "command", "container_name", "depends_on", "entrypoint", "image", "networks",
        "restart", "volumes_from",
    ]


def test_command_and_entrypoint_written_empty_stay_empty_lists() -> None:
    service = run({"services": {"a": {"image": "x", "command": [], "entrypoint": []}}})
    assert service["services"]["a"]["command"] == []
    assert service["services"]["a"]["entrypoint"] == []


def test_false_zero_and_empty_values_are_left_out_except_pointer_fields() -> None:
    model = run({"services": {"a": {
        "image": "y", "privileged": False, "tty": False, "init": False, "read_only": False,
        "labels": {}, "cap_add": [], "cpu_shares": 0, "scale": 0, "restart": "",
        "stop_grace_period": "0s", "oom_score_adj": 0, "environment": {}, "volumes": [],
        "ports": [], "dns": [], "sysctls": {}, "working_dir": "", "profiles": [],
        "healthcheck": {"disable": False, "retries": 0, "test": ["CMD", "true"]},
        "logging": {"driver": "", "options": {}},
    }}})
    assert printed(model["services"]["a"]) == printed({
        "command": None,
        "entrypoint": None,
        "healthcheck": {"test": ["CMD", "true"], "retries": 0},
        "image": "y",
        "init": False,
        "logging": {},
        "networks": {"default": None},
        "scale": 0,
        "stop_grace_period": "0s",
    })


def test_extensions_stay_in_the_model_at_every_level() -> None:
    # compose's JSON shows only top-level extensions; that is the printer's
    # business (cli/render.py). The model keeps them: the engine reads x-stack.
    model = run({
        "services": {"a": {"image": "x", "x-note": 1, "x-stack": {"rootfs": "/"},
                           "networks": {"n1": {"x-net": 1, "aliases": ["q"]}},
                           "deploy": {"x-d": 1}}},
        "networks": {"n1": {"x-n": 1}},
    })
    service = model["services"]["a"]
    assert service["x-note"] == 1
    assert service["x-stack"] == {"rootfs": "/"}
    assert service["networks"] == {"n1": {"aliases": ["q"], "x-net": 1}}
    assert service["deploy"] == {"resources": {}, "placement": {}, "x-d": 1}
    assert model["networks"] == {"n1": {"name": "shop_n1", "ipam": {}, "x-n": 1}}


# ---- networks ----------------------------------------------------------------------------


def test_default_network_is_added_only_when_a_service_uses_it() -> None:
    model = run({"services": {
        "a": {"image": "x", "network_mode": "host"},
        "b": {"image": "x", "networks": {"back": None}},
    }, "networks": {"back": {}}})
    assert model["networks"] == {"back": {"name": "shop_back", "ipam": {}}}
    assert "networks" not in model["services"]["a"]


def test_empty_service_networks_means_the_default_network() -> None:
    model = run({"services": {"a": {"image": "x", "networks": {}}}})
    assert model["services"]["a"]["networks"] == {"default": None}
    assert model["networks"] == DEFAULT_NETWORK


def test_provider_service_joins_no_network() -> None:
    model = run({"services": {"p": {"provider": {"type": "foo"}}}})
    assert printed(model) == printed({
        "name": "shop",
        "services": {"p": {"command": None, "entrypoint": None, "provider": {"type": "foo"}}},
    })


def test_declared_default_network_keeps_its_settings() -> None:
    model = run({
        "services": {"a": {"image": "x", "networks": {"default": {"aliases": ["z"]},
                                                       "other": None}}},
        "networks": {
            "default": {"name": "mynet", "external": True},
            "other": {"internal": False, "attachable": False, "enable_ipv6": False,
                      "external": False},
        },
    })
    assert printed(model["networks"]) == printed({
        "default": {"name": "mynet", "ipam": {}, "external": True},
        "other": {"name": "shop_other", "ipam": {}, "enable_ipv6": False},
    })


def test_network_fields_print_in_compose_order_with_labels_as_a_mapping() -> None:
    model = run({
        "services": {"a": {"image": "x", "networks": {"n1": None}}},
        "networks": {"n1": {"labels": ["b=2", "a=1"], "driver_opts": {"x": "y"},
                            "ipam": {"driver": "default", "config": [{"subnet": "10.0.0.0/24"}]},
                            "driver": "bridge"}},
    })
    assert printed(model["networks"]["n1"]) == printed({
        "name": "shop_n1",
        "driver": "bridge",
        "driver_opts": {"x": "y"},
        "ipam": {"driver": "default", "config": [{"subnet": "10.0.0.0/24"}]},
        "labels": {"a": "1", "b": "2"},
    })


def test_external_resources_are_named_by_their_key_or_given_name() -> None:
    model = run({
        "services": {"web": {
            "image": "x",
            "networks": {"ext": None, "ext2": None, "ext3": None, "named": None},
            "volumes": [{"type": "volume", "source": s, "target": t, "volume": {}}
                        for s, t in [("extv", "/a"), ("named", "/b"), ("ext3", "/d")]],
        }},
        "networks": {
            "ext": {"external": True},
            "ext2": {"external": True, "name": "real"},
            "ext3": {"external": {"name": "legacy"}},
            "named": {"name": "foo"},
        },
        "volumes": {"extv": {"external": True}, "named": {"name": "foo"},
                    "ext3": {"external": {"name": "legacyv"}}},
    })
    assert printed(model["networks"]) == printed({
        "ext": {"name": "ext", "ipam": {}, "external": True},
        "ext2": {"name": "real", "ipam": {}, "external": True},
        "ext3": {"name": "legacy", "ipam": {}, "external": True},
        "named": {"name": "foo", "ipam": {}},
    })
    assert printed(model["volumes"]) == printed({
        "ext3": {"name": "legacyv", "external": True},
        "extv": {"name": "extv", "external": True},
        "named": {"name": "foo"},
    })


# ---- unused resources --------------------------------------------------------------------


def test_resources_no_service_uses_are_not_printed() -> None:
    model = run({
        "services": {"db": {
            "image": "pg",
            "networks": {"back": None},
            "volumes": [{"type": "volume", "source": "data", "target": "/d", "volume": {}},
                        {"type": "bind", "source": "/srv/shop/x", "target": "/x"}],
            "secrets": [{"source": "s1"}],
            "configs": [{"source": "c1"}],
        }},
        "networks": {"back": {}, "unused": {}},
        "volumes": {"data": None, "unused": {}},
        "secrets": {"s1": {"file": "/srv/shop/s1"}, "s2": {"environment": "HOME"}},
        "configs": {"c1": {"content": "hello"}, "c2": {"external": True}},
    })
    assert model["networks"] == {"back": {"name": "shop_back", "ipam": {}}}
    assert model["volumes"] == {"data": {"name": "shop_data"}}
    assert model["secrets"] == {"s1": {"name": "shop_s1", "file": "/srv/shop/s1"}}
    assert model["configs"] == {"c1": {"name": "shop_c1", "content": "hello"}}


def test_build_secret_keeps_its_secret_declared() -> None:
    model = run({
        "services": {"a": {"build": {"context": "/srv/shop", "secrets": [{"source": "tok"}]}}},
        "secrets": {"tok": {"environment": "TOKEN"}},
    })
    assert model["secrets"] == {"tok": {"name": "shop_tok", "environment": "TOKEN"}}


def test_config_from_environment_prints_its_source_not_its_content() -> None:
    model = run({
        "services": {"a": {"image": "x", "configs": [{"source": "c"}]}},
        "configs": {"c": {"environment": "HOME", "content": "/home/me"}},
    })
    assert model["configs"] == {"c": {"name": "shop_c", "environment": "HOME"}}


# ---- service defaults --------------------------------------------------------------------


def test_secret_without_target_mounts_under_run_secrets() -> None:
    model = run({
        "services": {"a": {"image": "x", "secrets": [{"source": "s1"},
                                                     {"source": "s1", "target": "custom"}]}},
        "secrets": {"s1": {"file": "/srv/shop/s"}},
    })
    assert model["services"]["a"]["secrets"] == [
        {"source": "s1", "target": "/run/secrets/s1"},
        {"source": "s1", "target": "custom"},
    ]


def test_build_defaults_dockerfile_unless_inline() -> None:
    model = run({"services": {
        "a": {"build": {"context": "/srv/shop/sub"}},
        "b": {"build": {"context": "/srv/shop", "dockerfile_inline": "FROM x"}},
        "c": {"build": {}},
    }})
    services = model["services"]
    assert services["a"]["build"] == {"context": "/srv/shop/sub", "dockerfile": "Dockerfile"}
    assert services["b"]["build"] == {"context": "/srv/shop", "dockerfile_inline": "FROM x"}
    assert services["c"]["build"] == {"context": "/srv/shop", "dockerfile": "Dockerfile"}
    assert "image" not in services["a"]


def test_build_arg_without_value_comes_from_environment_or_is_dropped() -> None:
    model = run({"services": {"a": {"build": {
        "context": "/srv/shop", "args": {"MISSING": None, "HOME": None, "C": "3"},
    }}}})
    assert printed(model["services"]["a"]["build"]) == printed({
        "context": "/srv/shop", "dockerfile": "Dockerfile", "args": {"C": "3", "HOME": "/home/me"},
    })


def test_pull_policy_if_not_present_is_spelled_missing() -> None:
    model = run({"services": {"a": {"image": "x", "pull_policy": "if_not_present"}}})
    assert model["services"]["a"]["pull_policy"] == "missing"


def test_volume_target_is_cleaned() -> None:
    model = run({"services": {"a": {"image": "x", "volumes": [
        {"type": "bind", "source": "/srv/shop/d", "target": "/foo/../bar/"},
    ]}}})
    assert model["services"]["a"]["volumes"] == [
        {"type": "bind", "source": "/srv/shop/d", "target": "/bar"},
    ]


def test_deploy_always_prints_resources_and_placement() -> None:
    model = run({"services": {
        "f": {"image": "x", "deploy": {"resources": {"limits": {"memory": "52428800"}}}},
        "h": {"image": "x", "deploy": {"replicas": 2}},
        "z": {"image": "x", "deploy": {"replicas": 0, "mode": "", "labels": {},
                                       "resources": {"limits": {"cpus": 0, "pids": 0}}}},
    }})
    services = model["services"]
    assert printed(services["f"]["deploy"]) == printed(
        {"resources": {"limits": {"memory": "52428800"}}, "placement": {}}
    )
    assert printed(services["h"]["deploy"]) == printed(
        {"replicas": 2, "resources": {}, "placement": {}}
    )
    assert printed(services["z"]["deploy"]) == printed(
        {"replicas": 0, "resources": {"limits": {}}, "placement": {}}
    )


def test_equal_scale_and_replicas_are_both_kept() -> None:
    model = run({"services": {"a": {"image": "x", "scale": 3, "deploy": {"replicas": 3}}}})
    assert model["services"]["a"]["scale"] == 3
    assert model["services"]["a"]["deploy"]["replicas"] == 3


def test_distinct_scale_and_replicas_is_an_error() -> None:
    with pytest.raises(StackError, match="'scale' .* and 'deploy.replicas'") as caught:
        run({"services": {"a": {"image": "x", "scale": 3, "deploy": {"replicas": 2}}}})
    assert caught.value.path == ("services", "a", "scale")


# ---- implied dependencies ----------------------------------------------------------------


def test_links_namespaces_and_volumes_from_imply_dependencies() -> None:
    model = run({"services": {
        "a": {"image": "x"},
        "b": {"image": "x", "links": ["a:alias"], "volumes_from": ["c:ro", "container:bar"],
              "ipc": "service:a", "pid": "service:d",
              "depends_on": {"a": {"condition": "service_healthy", "required": True}}},
        "c": {"image": "x"},
        "d": {"image": "x", "volumes_from": ["a"], "links": ["a"]},
        "e": {"image": "x", "network_mode": "service:a"},
    }})
    services = model["services"]
    assert printed(services["b"]["depends_on"]) == printed({
        "a": {"condition": "service_healthy", "required": True},
        "c": {"condition": "service_started", "required": True},
        "d": {"condition": "service_started", "restart": True, "required": True},
    })
    assert services["d"]["depends_on"] == {
        "a": {"condition": "service_started", "restart": True, "required": True},
    }
    assert services["e"]["depends_on"] == {
        "a": {"condition": "service_started", "restart": True, "required": True},
    }
    assert "networks" not in services["e"]


# ---- environment -------------------------------------------------------------------------


def test_bare_environment_names_take_the_project_environment_or_stay_null() -> None:
    model = run({"services": {"b": {"image": "x", "environment": {
        "HOME": None, "NOPE": None, "X": "1",
    }}}})
    assert model["services"]["b"]["environment"] == {"HOME": "/home/me", "NOPE": None, "X": "1"}


def test_env_files_merge_into_environment_which_wins() -> None:
    environment = {**ENVIRONMENT, "DOTV": "dot"}
    model = run({"services": {"a": {
        "image": "x",
        "env_file": [
            {"path": fixture("one.env"), "required": True},
            {"path": fixture("two.env"), "required": False},
            {"path": fixture("missing.env"), "required": False},
        ],
        "environment": {"A": "fromenv", "B": None, "UNSET_X": None, "HOME": None,
                        "DOTV": None},
    }}}, environment)
    service = model["services"]["a"]
    assert "env_file" not in service
    assert printed(service["environment"]) == printed({
        "A": "fromenv",
        "B": None,
        "C": "two",
        "D": "/home/me-fromenv",
        "DOTV": "dot",
        "E": "one",
        "F": "two",
        "G": "dot",
        "HOME": "/home/me",
        "UNSET_X": None,
    })


def test_env_file_alone_fills_environment() -> None:
    model = run({"services": {"b": {
        "image": "x",
        "env_file": [{"path": fixture("one.env"), "required": True}],
        "environment": {"HOME": None, "NOPE": None, "X": "1"},
    }}})
    assert model["services"]["b"]["environment"] == {
        "A": "one", "C": "one", "D": "/home/me-one", "DOTV": "one", "E": "one",
        "HOME": "/home/me", "NOPE": None, "X": "1",
    }


def test_later_env_file_can_use_a_variable_from_an_earlier_one() -> None:
    model = run({"services": {"a": {"image": "x", "env_file": [
        {"path": fixture("first.env"), "required": True},
        {"path": fixture("second.env"), "required": True},
    ]}}})
    assert model["services"]["a"]["environment"] == {
        "ONLY_IN_FIRST": "first", "USES_FIRST": "first-x",
    }


def test_null_environment_entry_overrides_the_env_file_value() -> None:
    model = run({"services": {"a": {
        "image": "x",
        "env_file": [{"path": fixture("bare.env"), "required": True}],
        "environment": {"B": None},
    }}})
    assert model["services"]["a"]["environment"] == {"B": None, "HOME": "/home/me"}


def test_missing_required_env_file_names_service_and_path() -> None:
    path = fixture("nothere.env")
    with pytest.raises(StackError) as caught:
        run({"services": {"b": {"image": "x", "env_file": [{"path": path, "required": True}]}}})
    assert caught.value.path == ("services", "b", "env_file", 0)
    assert f"env file {path} not found" in str(caught.value)


def test_unset_variable_in_env_file_is_blank_with_a_warning() -> None:
    warnings = Warnings()
    document = {"services": {"a": {
        "image": "x", "env_file": [{"path": fixture("unset.env"), "required": True}],
    }}}
    model = normalize(document, "shop", PROJECT_DIR, ENVIRONMENT, SourceMap("c.yaml"), warnings)
    assert model["services"]["a"]["environment"] == {"X": "", "Z": "def"}
    assert len(warnings.messages) == 1
    assert '"UNSET_IN_TEST" variable is not set' in warnings.messages[0]


def test_label_files_merge_under_the_service_labels() -> None:
    model = run({"services": {"a": {
        "image": "x", "labels": {"l": "1"}, "label_file": [fixture("extra.labels")],
    }}})
    service = model["services"]["a"]
    assert "label_file" not in service
    assert service["labels"] == {"l": "1", "m": "2"}


def test_missing_label_file_is_an_error() -> None:
    with pytest.raises(StackError, match="label file .* not found"):
        run({"services": {"a": {"image": "x", "label_file": [fixture("nothere.labels")]}}})


def test_top_level_extension_values_print_with_sorted_keys() -> None:
    model = run({"services": {}, "x-common": {"restart": "always",
                                              "logging": {"options": {"b": 1, "a": 2}}}})
    assert printed(model["x-common"]) == printed(
        {"logging": {"options": {"a": 2, "b": 1}}, "restart": "always"}
    )


def test_top_level_models_are_kept_only_while_a_service_uses_them() -> None:
    # compose's JSON leaves top-level models out entirely; the model keeps the
    # used ones so that references can be checked, and the printer drops them.
    model = run({"services": {"a": {"image": "x", "models": {"m1": None}}},
                 "models": {"m1": {"model": "ai/smollm2", "x-n": 1}, "m3": {"model": "u"}}})
    assert model["models"] == {"m1": {"model": "ai/smollm2", "x-n": 1}}
    assert model["services"]["a"]["models"] == {"m1": None}


def test_dependency_written_without_details_gets_compose_defaults() -> None:
    model = run({"services": {"a": {"image": "x", "depends_on": {
        "b": None, "c": {"restart": False, "required": False},
    }}, "b": {"image": "x"}, "c": {"image": "x"}}})
    assert printed(model["services"]["a"]["depends_on"]) == printed({
        "b": {"condition": "service_started", "required": True},
        "c": {"condition": "service_started", "required": False},
    })


def test_provider_options_become_lists_of_strings() -> None:
    service = run({"services": {"p": {"provider": {
        "type": "foo", "options": {"b": ["x", "y"], "a": 1},
    }}}})["services"]["p"]
    assert service["provider"] == {"type": "foo", "options": {"a": ["1"], "b": ["x", "y"]}}


def test_a_dockerfile_interpolated_to_empty_gets_no_default() -> None:
    built = run({"services": {"b": {"build": {"context": "/ctx", "dockerfile": ""}}}})
    assert "dockerfile" not in built["services"]["b"]["build"]
    default = run({"services": {"b": {"build": {"context": "/ctx"}}}})
    assert default["services"]["b"]["build"]["dockerfile"] == "Dockerfile"
