"""Semantic checks on the normalized model.

Each model is written the way normalize leaves it (the shape of `docker
compose config --format json`), as YAML so that every key has a real line.
Where a test says compose rejects or accepts a file, that is what `docker
compose config` decided for the equivalent compose file; the wording of our
messages is our own.
"""

from __future__ import annotations

import textwrap

import pytest

from orchestrator.spec.errors import StackError
from orchestrator.spec.validate import validate_model
from orchestrator.spec.yamlfile import parse_yaml


def _load(text: str):
    return parse_yaml(textwrap.dedent(text), "compose.yaml")


def accepts(text: str, **kwargs) -> None:
    document = _load(text)
    validate_model(document.data, document.source, **kwargs)


def error(text: str, **kwargs) -> str:
    document = _load(text)
    with pytest.raises(StackError) as raised:
        validate_model(document.data, document.source, **kwargs)
    return str(raised.value)


def test_complete_valid_model_is_accepted():
    # `docker compose config` output for a file using every kind of reference.
    accepts("""
        name: demo
        networks:
          back: {name: demo_back, ipam: {}}
          default: {name: demo_default, ipam: {}}
          front: {name: demo_front, ipam: {}}
        volumes:
          data: {name: demo_data}
        secrets:
          s1: {name: demo_s1, file: /src/s}
        configs:
          c1: {name: demo_c1, file: /src/c}
        services:
          cache:
            build: {context: /src, dockerfile: Dockerfile}
            command: null
            entrypoint: null
            networks: {default: null}
          db:
            image: pg
            command: null
            entrypoint: null
            ipc: service:cache
            depends_on:
              cache: {condition: service_started, restart: true, required: true}
            networks:
              back: null
              front: {aliases: [x]}
          web:
            image: nginx
            command: null
            entrypoint: null
            container_name: webc
            configs: [{source: c1}]
            secrets: [{source: s1, target: /run/secrets/s1}]
            depends_on:
              cache: {condition: service_started, restart: true, required: true}
              db: {condition: service_healthy, required: true}
            links: [db, "cache:c"]
            network_mode: service:db
            ports:
              - {mode: ingress, target: 80, published: "8080", protocol: tcp}
            volumes:
              - {type: volume, source: data, target: /data, volume: {}}
              - {type: bind, source: /src/x, target: /x, bind: {create_host_path: true}}
              - {type: volume, target: /anon, volume: {}}
            volumes_from: [db, "db:ro", "container:foo"]
    """)


# --- something to run -----------------------------------------------------------------------


def test_service_without_image_or_build_is_rejected():
    assert error("""
        services:
          web:
            environment: {A: "1"}
    """) == (
        'compose.yaml:3:3: services.web: service "web" has no image, build or x-stack.rootfs '
        "(set image: to run a published image, build: to build one, "
        "or x-stack: {rootfs: /} to run on the host's own files)"
    )


def test_service_running_on_host_rootfs_needs_no_image():
    # Our extension: compose itself rejects this file.
    accepts("""
        services:
          web:
            x-stack: {rootfs: /}
    """)


def test_provider_service_needs_no_image():
    accepts("""
        services:
          ai:
            provider: {type: model}
    """)


def test_dockerfile_and_inline_dockerfile_are_exclusive():
    assert error("""
        services:
          web:
            build: {context: /src, dockerfile: D, dockerfile_inline: "FROM x"}
    """) == (
        "compose.yaml:4:43: services.web.build.dockerfile_inline: "
        "build.dockerfile and build.dockerfile_inline cannot be used together"
    )


def test_additional_context_must_name_a_defined_service():
    assert error("""
        services:
          web:
            build:
              context: /src
              additional_contexts: {base: "service:bsae"}
          base:
            build: {context: /src}
    """) == (
        "compose.yaml:6:29: services.web.build.additional_contexts.base: "
        'build context "base" refers to undefined service "bsae" (did you mean "base"?)'
    )


def test_additional_context_service_must_be_buildable():
    assert error("""
        services:
          web:
            build:
              context: /src
              additional_contexts: {base: "service:db"}
          db:
            image: pg
    """).endswith(
        'build context "base" refers to service "db", which has no build section to build from'
    )


def test_platform_must_be_one_of_the_build_platforms():
    assert error("""
        services:
          web:
            build: {context: /src, platforms: [linux/amd64]}
            platform: linux/arm64
    """) == (
        "compose.yaml:5:5: services.web.platform: "
        'platform "linux/arm64" is not one of build.platforms (linux/amd64)'
    )


# --- references to top-level resources ------------------------------------------------------


def test_undefined_network_is_rejected_with_a_suggestion():
    assert error("""
        networks:
          front: {name: p_front}
        services:
          web:
            image: x
            networks: {frnot: null}
    """) == (
        "compose.yaml:7:16: services.web.networks.frnot: "
        'service "web" refers to undefined network "frnot" (did you mean "front"?)'
    )


def test_network_mode_and_networks_are_exclusive():
    assert error("""
        services:
          web:
            image: x
            network_mode: host
            networks: {default: null}
    """).startswith(
        "compose.yaml:6:5: services.web.networks: "
        "network_mode and networks cannot be used together"
    )


def test_undefined_named_volume_is_rejected():
    assert error("""
        services:
          web:
            image: x
            volumes:
              - {type: volume, source: data, target: /data}
    """) == (
        "compose.yaml:6:9: services.web.volumes[0]: "
        'service "web" refers to undefined volume "data" '
        "(or write ./data for a bind mount of a directory)"
    )


def test_bind_mounts_and_anonymous_volumes_need_no_declaration():
    accepts("""
        services:
          web:
            image: x
            volumes:
              - {type: bind, source: /src/data, target: /data}
              - {type: volume, target: /anon}
              - {type: tmpfs, target: /run/cache}
    """)


@pytest.mark.parametrize(
    ("key", "what"), [("secrets", "secret"), ("configs", "config")]
)
def test_undefined_secret_or_config_is_rejected(key, what):
    assert error(f"""
        services:
          web:
            image: x
            {key}: [{{source: token}}]
    """) == (
        f"compose.yaml:5:{len(key) + 8}: services.web.{key}[0]: "
        f'service "web" refers to undefined {what} "token" '
        f"(declare it under the top-level {key}: key)"
    )


def test_undefined_build_secret_is_rejected():
    assert error("""
        services:
          web:
            build: {context: /src, secrets: [{source: npmrc}]}
    """).endswith('service "web" refers to undefined build secret "npmrc" '
                  "(declare it under the top-level secrets: key)")


def test_undefined_model_is_rejected():
    assert error("""
        services:
          web:
            image: x
            models: {llm: null}
    """).startswith(
        'compose.yaml:5:14: services.web.models.llm: service "web" refers to undefined model "llm"'
    )


def test_top_level_secret_needs_a_source():
    assert error("""
        secrets:
          token: {name: p_token}
        services:
          web: {image: x}
    """).startswith(
        'compose.yaml:3:3: secrets.token: secret "token" has neither file nor environment'
    )


def test_external_secret_needs_no_source():
    accepts("""
        secrets:
          token: {name: token, external: true}
        services:
          web: {image: x, secrets: [{source: token}]}
    """)


# --- references to services -----------------------------------------------------------------


def test_depends_on_undefined_service_is_rejected():
    assert error("""
        services:
          web:
            image: x
            depends_on:
              dbb: {condition: service_started, required: true}
          db: {image: pg}
    """) == (
        "compose.yaml:6:7: services.web.depends_on.dbb: "
        'service "web" depends on undefined service "dbb" (did you mean "db"?)'
    )


@pytest.mark.parametrize(
    ("key", "value", "where", "verb"),
    [
        ("links", '["cache:c"]', "5:13: services.web.links[0]", "links to"),
        ("volumes_from", '["cache:ro"]', "5:20: services.web.volumes_from[0]",
         "takes volumes from"),
        ("network_mode", "service:cache", "5:5: services.web.network_mode",
         "shares the network stack of"),
        ("ipc", "service:cache", "5:5: services.web.ipc", "shares the IPC namespace of"),
        ("pid", "service:cache", "5:5: services.web.pid", "shares the PID namespace of"),
        ("uts", "service:cache", "5:5: services.web.uts", "shares the UTS namespace of"),
    ],
)
def test_reference_to_undefined_service_points_at_the_key_written(key, value, where, verb):
    # Normalize copies these references into depends_on, as compose does; the
    # error still names the key the user wrote.
    document = _load(f"""
        services:
          web:
            image: x
            {key}: {value}
    """)
    document.data["services"]["web"]["depends_on"] = {
        "cache": {"condition": "service_started", "restart": True, "required": True}
    }
    with pytest.raises(StackError) as raised:
        validate_model(document.data, document.source)
    assert str(raised.value).startswith(
        f'compose.yaml:{where}: service "web" {verb} undefined service "cache"'
    )


def test_volumes_from_a_container_is_not_a_service_reference():
    accepts("""
        services:
          web: {image: x, volumes_from: ["container:legacy"], network_mode: "container:x"}
    """)


def test_optional_dependency_on_a_disabled_service_is_accepted():
    accepts("""
        services:
          web:
            image: x
            depends_on:
              db: {condition: service_started, required: false}
    """, disabled={"db": {"image": "pg", "profiles": ["debug"]}})


def test_optional_dependency_on_a_missing_service_is_rejected():
    # compose rejects `required: false` unless a profile disabled the service.
    assert error("""
        services:
          web:
            image: x
            depends_on:
              db: {condition: service_started, required: false}
    """).endswith('service "web" depends on undefined service "db"')


def test_required_dependency_on_a_disabled_service_names_its_profile():
    assert error("""
        services:
          web:
            image: x
            depends_on:
              db: {condition: service_started, required: true}
    """, disabled={"db": {"image": "pg", "profiles": ["debug"]}}) == (
        "compose.yaml:6:7: services.web.depends_on.db: "
        'service "web" needs service "db", which runs only with profile debug '
        "(enable it with --profile debug, or set required: false)"
    )


def test_link_to_a_disabled_service_is_rejected():
    assert error("""
        services:
          web: {image: x, links: [db]}
    """, disabled={"db": {"image": "pg", "profiles": ["debug"]}}) == (
        "compose.yaml:3:27: services.web.links[0]: "
        'service "web" needs service "db", which runs only with profile debug '
        "(enable it with --profile debug)"
    )


# --- cycles ---------------------------------------------------------------------------------


def test_dependency_cycle_is_printed_like_compose():
    assert error("""
        services:
          c: {image: x, depends_on: {a: {condition: service_started, required: true}}}
          b: {image: x, depends_on: {c: {condition: service_started, required: true}}}
          a: {image: x, depends_on: {b: {condition: service_started, required: true}}}
    """) == (
        "compose.yaml:5:30: services.a.depends_on.b: dependency cycle detected: a -> b -> c -> a "
        "(a service cannot wait, directly or through others, for itself)"
    )


def test_cycle_through_links_and_volumes_from_points_at_what_was_written():
    # compose: "dependency cycle detected: y -> x -> y" (walk starts at a, the first name).
    message = error("""
        services:
          z: {image: x, depends_on: {y: {condition: service_started, required: true}}}
          y: {image: x, links: [x]}
          x: {image: x, volumes_from: [y]}
          a: {image: x, depends_on: {z: {condition: service_started, required: true}}}
    """)
    assert message.startswith(
        "compose.yaml:4:25: services.y.links[0]: dependency cycle detected: y -> x -> y"
    )


def test_service_sharing_its_own_network_stack_is_a_cycle():
    assert "dependency cycle detected: a -> a" in error("""
        services:
          a: {image: x, network_mode: "service:a"}
    """)


# --- replicas, resources, names -------------------------------------------------------------


def test_scale_and_replicas_must_agree():
    assert error("""
        services:
          web: {image: x, scale: 2, deploy: {replicas: 3}}
    """) == (
        "compose.yaml:3:19: services.web.scale: scale (2) and deploy.replicas (3) disagree "
        "(set only one of them)"
    )


def test_equal_scale_and_replicas_are_accepted():
    accepts("""
        services:
          web: {image: x, scale: 2, deploy: {replicas: 2}}
    """)


def test_negative_scale_is_rejected():
    assert error("""
        services:
          web: {image: x, scale: -1}
    """).endswith("services.web.scale: scale must be 0 or more, not -1")


def test_negative_replicas_are_rejected():
    assert error("""
        services:
          web: {image: x, deploy: {replicas: -1}}
    """).endswith("services.web.deploy.replicas: deploy.replicas must be 0 or more, not -1")


@pytest.mark.parametrize("scaling", ["scale: 2", "deploy: {replicas: 2}"])
def test_container_name_cannot_be_shared_by_replicas(scaling):
    key = "scale" if scaling.startswith("scale") else "deploy.replicas"
    assert error(f"""
        services:
          web: {{image: x, container_name: webc, {scaling}}}
    """).startswith(
        f'compose.yaml:3:19: services.web.container_name: container_name "webc" '
        f"cannot be used with {key} 2"
    )


def test_duplicate_container_name_is_rejected():
    assert error("""
        services:
          web: {image: x, container_name: app}
          api: {image: x, container_name: app}
    """) == (
        "compose.yaml:3:19: services.web.container_name: "
        'container name "app" is already used by service "api" '
        "(container names are unique on a host)"
    )


@pytest.mark.parametrize(
    ("service", "deploy"),
    [
        ("cpus: 1.5", "limits: {cpus: 2}"),
        ("cpus: 1.5", "limits: {memory: '1073741824'}"),
        ("mem_limit: '1073741824'", "limits: {memory: '536870912'}"),
        ("mem_reservation: '1073741824'", "reservations: {cpus: 1}"),
        ("pids_limit: 5", "limits: {pids: 6}"),
        ("pids_limit: 5", "limits: {}"),
    ],
)
def test_service_limit_disagreeing_with_deploy_resources_is_rejected(service, deploy):
    key = service.split(":")[0]
    assert "disagree" in error(f"""
        services:
          web:
            image: x
            {service}
            deploy: {{resources: {{{deploy}}}}}
    """).split(f"services.web.{key}: ")[1]


@pytest.mark.parametrize(
    ("service", "deploy"),
    [
        ("cpus: 1.5", "limits: {cpus: 1.5}"),
        ("mem_limit: '1073741824'", "limits: {memory: '1073741824'}"),
        ("pids_limit: 5", "reservations: {cpus: 1}"),
        ("cpus: 0", "limits: {cpus: 2}"),
    ],
)
def test_service_limit_agreeing_with_deploy_resources_is_accepted(service, deploy):
    accepts(f"""
        services:
          web:
            image: x
            {service}
            deploy: {{resources: {{{deploy}}}}}
    """)


def test_limit_message_shows_both_values():
    assert error("""
        services:
          web:
            image: x
            mem_limit: "1073741824"
            deploy: {resources: {limits: {memory: "536870912"}}}
    """) == (
        "compose.yaml:5:5: services.web.mem_limit: mem_limit (1073741824) and "
        "deploy.resources.limits.memory (536870912) disagree (set only one of them)"
    )


# --- healthcheck, watch, mounts -------------------------------------------------------------


def test_healthcheck_test_must_start_with_a_known_form():
    assert error("""
        services:
          web:
            image: x
            healthcheck: {test: [curl, localhost]}
    """) == (
        'compose.yaml:5:19: services.web.healthcheck.test: healthcheck.test must start with '
        '"CMD", "CMD-SHELL" or "NONE", not "curl" '
        '(write ["CMD-SHELL", "your command"] to run it through a shell)'
    )


def test_watch_sync_needs_a_target():
    assert error("""
        services:
          web:
            image: x
            develop:
              watch:
                - {path: /src, action: sync}
    """).startswith(
        'compose.yaml:7:11: services.web.develop.watch[0]: watch action "sync" needs a target'
    )


def test_watch_rebuild_and_restart_need_no_target():
    accepts("""
        services:
          web:
            image: x
            develop:
              watch: [{path: /src, action: rebuild}, {path: /src, action: restart}]
    """)


def test_two_mounts_on_one_container_path_are_rejected():
    assert error("""
        services:
          web:
            image: x
            tmpfs: [/cache]
            volumes: [{type: volume, target: /cache}]
    """) == (
        "compose.yaml:6:15: services.web.volumes[0]: /cache is already mounted by "
        "services.web.tmpfs[0] (each container path takes one mount)"
    )


def test_two_tmpfs_on_one_path_are_rejected_whatever_their_options():
    assert error("""
        services:
          web: {image: x, tmpfs: [/a, "/a:size=1"]}
    """).startswith(
        "compose.yaml:3:31: services.web.tmpfs[1]: /a is already mounted by services.web.tmpfs[0]"
    )


# --- order ----------------------------------------------------------------------------------


def test_first_error_is_the_same_whatever_the_key_order():
    first = error("""
        services:
          web: {image: x, networks: {nope: null}}
          api: {image: x, secrets: [{source: nope}]}
    """)
    second = error("""
        services:
          api: {image: x, secrets: [{source: nope}]}
          web: {image: x, networks: {nope: null}}
    """)
    assert first.split(": ", 1)[1] == second.split(": ", 1)[1]
    assert "services.api.secrets[0]" in first


def test_missing_reference_is_reported_before_a_cycle():
    assert "undefined service" in error("""
        services:
          a: {image: x, depends_on: {b: {condition: service_started, required: true}}}
          b: {image: x, depends_on: {a: {condition: service_started, required: true}},
              links: [nope]}
    """)


# --- host ports (for `up`; compose config accepts these) ------------------------------------


def test_validate_model_leaves_host_port_conflicts_to_validate_host_ports():
    # compose config accepts two services publishing one host port.
    accepts("""
        services:
          web: {image: x, ports: [{target: 80, published: "8080", protocol: tcp}]}
          api: {image: x, ports: [{target: 80, published: "8080", protocol: tcp}]}
    """)
