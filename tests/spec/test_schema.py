"""The stack schema and its fast validator.

Expected acceptance and casts were checked against Docker Compose v2.40
(`docker compose config`); they are written here literally.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.spec.errors import StackError
from orchestrator.spec.schema import SCHEMA_PATH, validate_schema
from orchestrator.spec.yamlfile import parse_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "schema"
VALID = sorted((FIXTURES / "valid").glob("*.yaml"))
INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))
SCHEMA = json.loads(Path(SCHEMA_PATH).read_text())
REFERENCE = jsonschema.Draft202012Validator(SCHEMA)


def check(text: str) -> dict[str, Any]:
    doc = parse_yaml(text, "compose.yaml")
    return validate_schema(doc.data, doc.source)


def error_of(text: str) -> str:
    with pytest.raises(StackError) as info:
        check(text)
    return str(info.value)


def service(body: str) -> str:
    return "services:\n  web:\n    image: nginx\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )


# --- the schema itself ----------------------------------------------------------------------


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_schema_is_shipped_inside_the_package() -> None:
    assert Path(SCHEMA_PATH).parts[-3:] == ("orchestrator", "schemas", "stack.schema.json")
    assert Path(SCHEMA_PATH).is_file()


TOP_LEVEL_KEYS = {
    "version", "name", "include", "services", "networks", "volumes", "secrets", "configs",
    "models",
}
SERVICE_KEYS = {
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup",
    "cgroup_parent", "command", "configs", "container_name", "cpu_count", "cpu_percent",
    "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus",
    "cpuset", "credential_spec", "depends_on", "deploy", "develop", "device_cgroup_rules",
    "devices", "dns", "dns_opt", "dns_search", "domainname", "entrypoint", "env_file",
    "environment", "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "label_file", "labels",
    "links", "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness",
    "memswap_limit", "models", "network_mode", "networks", "oom_kill_disable",
    "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start", "pre_start",
    "pre_stop", "privileged", "profiles", "provider", "pull_policy", "pull_refresh_after",
    "read_only", "restart", "runtime", "scale", "secrets", "security_opt", "shm_size",
    "stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty",
    "ulimits", "use_api_socket", "user", "userns_mode", "uts", "volumes", "volumes_from",
    "working_dir",
}
BUILD_KEYS = {
    "additional_contexts", "args", "cache_from", "cache_to", "context", "dockerfile",
    "dockerfile_inline", "entitlements", "extra_hosts", "isolation", "labels", "network",
    "no_cache", "no_cache_filter", "platforms", "privileged", "provenance", "pull", "sbom",
    "secrets", "shm_size", "ssh", "tags", "target", "ulimits",
}
DEPLOY_KEYS = {
    "endpoint_mode", "labels", "mode", "placement", "replicas", "resources", "restart_policy",
    "rollback_config", "update_config",
}


def test_schema_knows_every_top_level_key_of_the_compose_spec() -> None:
    assert set(SCHEMA["properties"]) == TOP_LEVEL_KEYS


def test_schema_knows_every_service_key_of_the_compose_spec() -> None:
    assert set(SCHEMA["$defs"]["service"]["properties"]) == SERVICE_KEYS


def test_schema_knows_every_build_and_deploy_key() -> None:
    assert set(SCHEMA["$defs"]["build"]["oneOf"][1]["properties"]) == BUILD_KEYS
    assert set(SCHEMA["$defs"]["deploy"]["properties"]) == DEPLOY_KEYS


@pytest.mark.parametrize("key", sorted(SERVICE_KEYS))
def test_each_service_key_is_accepted_by_the_validator(key: str) -> None:
    # Parse the key's value from the fixture that uses every key.
    doc = parse_yaml((FIXTURES / "valid" / "service-every-key.yaml").read_text(), "f.yaml")
    services = doc.data["services"]
    user = next(s for s in services.values() if key in s)
    check_doc = {"services": {"web": {key: user[key]}}}
    validate_schema(check_doc, doc.source)


# --- valid and invalid fixtures, and agreement with jsonschema --------------------------------


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_fixture_is_accepted_and_result_satisfies_reference(path: Path) -> None:
    result = check(path.read_text())
    REFERENCE.validate(result)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixture_is_rejected_like_reference(path: Path) -> None:
    doc = parse_yaml(path.read_text(), path.name)
    assert not REFERENCE.is_valid(doc.data)
    with pytest.raises(StackError) as info:
        validate_schema(copy.deepcopy(doc.data), doc.source)
    assert str(info.value).startswith(path.name + ":")


def test_valid_fixtures_without_casts_are_returned_unchanged() -> None:
    for path in VALID:
        doc = parse_yaml(path.read_text(), path.name)
        if REFERENCE.is_valid(doc.data):
            before = copy.deepcopy(doc.data)
            assert validate_schema(doc.data, doc.source) == before


# --- error messages --------------------------------------------------------------------------


def test_unknown_key_names_the_path_line_and_likely_key() -> None:
    assert error_of(service("imgae: nginx")) == (
        'compose.yaml:4:5: services.web.imgae: unknown key "imgae" (did you mean "image"?)'
    )


def test_unknown_key_without_a_close_match_has_no_hint() -> None:
    assert error_of(service("zzzzqq: 1")) == (
        'compose.yaml:4:5: services.web.zzzzqq: unknown key "zzzzqq"'
    )


def test_unknown_top_level_key_suggests_the_section() -> None:
    assert error_of("servces:\n  web: {image: nginx}\n") == (
        'compose.yaml:1:1: servces: unknown key "servces" (did you mean "services"?)'
    )


def test_unknown_key_inside_a_list_item_has_index_in_path() -> None:
    text = service("ports:\n  - target: 80\n    publised: 8080")
    assert error_of(text) == (
        'compose.yaml:6:9: services.web.ports[0].publised: unknown key "publised" '
        '(did you mean "published"?)'
    )


def test_wrong_type_lists_what_is_allowed_and_what_was_found() -> None:
    assert error_of(service("command: {a: 1}")) == (
        "compose.yaml:4:5: services.web.command: "
        "must be null, a string or a list of strings, not a mapping"
    )
    assert error_of(service("environment: A=1")) == (
        "compose.yaml:4:5: services.web.environment: "
        "must be a mapping or a list of strings, not a string"
    )


def test_alternative_whose_type_matched_gives_the_error() -> None:
    # `volumes` items are a string or a mapping; a mapping gets the mapping's complaint.
    assert error_of(service("volumes:\n  - source: data\n    target: /data")) == (
        'compose.yaml:5:9: services.web.volumes[0]: missing required key "type"'
    )
    assert error_of(service("healthcheck:\n  test: [CMD, 1]")) == (
        "compose.yaml:5:19: services.web.healthcheck.test[1]: must be a string, not an integer"
    )


def test_enum_error_lists_the_choices() -> None:
    assert error_of(service("cgroup: shared")) == (
        'compose.yaml:4:5: services.web.cgroup: must be one of "host", "private", not "shared"'
    )


def test_missing_required_key_points_at_the_mapping() -> None:
    text = service("depends_on:\n  db: {required: true}") + "  db:\n    image: postgres\n"
    assert error_of(text) == (
        'compose.yaml:5:7: services.web.depends_on.db: missing required key "condition"'
    )


def test_duplicate_item_points_at_the_second_occurrence() -> None:
    text = service("networks: [front, front]") + "networks:\n  front: {}\n"
    assert error_of(text) == (
        'compose.yaml:4:23: services.web.networks[1]: duplicate item "front" '
        "(each item may appear only once)"
    )


def test_bad_service_name_says_which_characters_are_allowed() -> None:
    assert error_of("services:\n  my web:\n    image: nginx\n") == (
        "compose.yaml:2:3: services.my web: invalid name \"my web\" "
        "(use only letters, digits, '.', '_' and '-')"
    )


def test_out_of_range_number_says_the_bound() -> None:
    assert error_of(service("oom_score_adj: 2000")).endswith(
        "services.web.oom_score_adj: must be at most 1000, not 2000"
    )
    assert error_of(service("cpu_count: -1")).endswith(
        "services.web.cpu_count: must be at least 0, not -1"
    )


def test_pattern_mismatch_quotes_the_value() -> None:
    assert error_of(service("container_name: a")).endswith(
        'services.web.container_name: "a" is not in the expected format '
        "(pattern [a-zA-Z0-9][a-zA-Z0-9_.-])"
    )
    assert "pull_policy" in error_of(service("pull_policy: sometimes"))


# --- casts of strings, as compose does them ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("True", True), ("TRUE", True), ("yes", True), ("y", True), ("on", True),
     ("false", False), ("No", False), ("n", False), ("off", False)],
)
def test_boolean_spellings_compose_casts(text: str, value: bool) -> None:
    result = check(service(f'privileged: "{text}"'))
    assert result["services"]["web"]["privileged"] is value


def test_unparsable_boolean_is_rejected_with_advice() -> None:
    assert error_of(service('privileged: "maybe"')) == (
        'compose.yaml:4:5: services.web.privileged: must be a boolean, not "maybe" '
        "(use true or false)"
    )


def test_numeric_strings_become_numbers_where_compose_casts() -> None:
    result = check((FIXTURES / "valid" / "strings-cast-where-compose-casts.yaml").read_text())
    web = result["services"]["web"]
    assert web["cpus"] == 1.5 and web["cpu_shares"] == 512 and web["oom_score_adj"] == -10
    assert web["ports"] == [{"target": 80, "published": "8080"}]
    assert web["ulimits"] == {"nproc": 100, "nofile": {"soft": 10, "hard": 20}}
    assert web["deploy"]["replicas"] == 3
    assert web["deploy"]["update_config"] == {"parallelism": 2, "max_failure_ratio": 0.5}
    assert web["volumes"][0]["read_only"] is True
    assert web["volumes"][0]["volume"] == {"nocopy": True}
    assert result["networks"]["n"] == {"external": True, "internal": False, "attachable": True}
    assert result["secrets"]["s"]["external"] is True


def test_cast_happens_before_range_checks() -> None:
    assert error_of(service('oom_score_adj: "2000"')).endswith("must be at most 1000, not 2000")


def test_strings_stay_strings_where_compose_keeps_them() -> None:
    # Sizes and published ports take unit suffixes and ranges: compose leaves them as text.
    result = check(service('shm_size: "64"\nmem_swappiness: "60"\nports: [{target: 80, '
                           'published: "8080"}]'))
    web = result["services"]["web"]
    assert web["shm_size"] == "64" and web["mem_swappiness"] == "60"
    assert web["ports"][0]["published"] == "8080"


@pytest.mark.parametrize(
    "body",
    ['use_api_socket: "true"',
     'develop: {watch: [{path: ., action: sync, initial_sync: "true"}]}',
     'networks: {default: {priority: "5"}}'],
)
def test_keys_where_compose_refuses_strings_are_not_cast(body: str) -> None:
    assert "not " in error_of(service(body))


def test_models_context_size_is_not_cast() -> None:
    text = "services: {web: {image: a}}\nmodels:\n  m: {model: x, context_size: \"5\"}\n"
    assert error_of(text).endswith('models.m.context_size: must be an integer, not "5"')


def test_integer_does_not_accept_a_fraction() -> None:
    assert error_of(service("scale: 1.5")).endswith("must be an integer, not a number")
    assert error_of(service('scale: "1.5"')).endswith('must be an integer, not "1.5"')


# --- what compose accepts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "ports: [80, 80]",  # compose removes duplicates of these lists before it validates
        "environment: [A=1, A=1]",
        "cap_add: [NET_ADMIN, NET_ADMIN]",
        "expose: ['80', '80']",
        "ulimits: {NOFILE: 1}",  # the name pattern only applies to lowercase names
        "attach: 'yes'",
        "pid: null\nentrypoint: null\ncommand: null\ndevelop: null\ndeploy: null",
        "x-anything: {a: [1]}\nnetworks: {default: {x-net: 1}}",
        "mem_swappiness: abc",  # a size: compose complains later, when it reads the value
    ],
)
def test_compose_accepts(body: str) -> None:
    check(service(body))


@pytest.mark.parametrize(
    "body",
    [
        "blkio_config: {x-a: 1}",  # no extensions in blkio_config
        "build: 5",
        "deploy: {resources: {limits: {memory: 512}}}",
        "secrets: [{source: s, uid: 5}]",
        "logging: {options: {a: [1]}}",
        "storage_opt: [a]",
        "cpus: true",
        "labels: {'': x}",
        "volumes: [{type: tmpfs, target: /t, tmpfs: {size: -1}}]",
        "gpus: some",
        "provider: {options: {a: 1}}",
        "devices: [{target: /dev/x}]",
    ],
)
def test_compose_rejects(body: str) -> None:
    error_of(service(body))


def test_top_level_sections_reject_what_compose_rejects() -> None:
    assert error_of("services:\n  web: null\n").endswith("must be a mapping, not null")
    assert "secrets.s" in error_of("services: {}\nsecrets:\n  s: null\n")
    assert "invalid name" in error_of("services: {}\nvolumes:\n  bad name: {}\n")
    assert error_of("name: 5\nservices: {}\n").endswith("name: must be a string, not an integer")


# --- agreement with the reference implementation on generated documents ------------------------

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2000), st.sampled_from([1.5, 0.0, -2.5]),
    st.sampled_from(["", "x", "web", "true", "yes", "maybe", "80", "-1", "1.5", "8080:80",
                     "all", "host", "sync", "service_started", "bind", "z", "a=b"]),
)
_KEYS = st.sampled_from(["web", "db", "x-ext", "bad name", "", "imgae", "NOFILE"])


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].split("/")[-1]]
    return node


def _values(node: Any, depth: int) -> st.SearchStrategy[Any]:
    """Documents shaped by the schema: mostly plausible, sometimes wrong, at every level."""
    node = _resolve(node)
    if depth <= 0 or not isinstance(node, dict) or not node:
        return _SCALARS
    options: list[st.SearchStrategy[Any]] = [_SCALARS]
    for branch in node.get("oneOf", []) + node.get("anyOf", []):
        options.append(st.deferred(lambda b=branch: _values(b, depth - 1)))
    if "enum" in node:
        options.append(st.sampled_from(node["enum"]))
    if "items" in node:
        options.append(st.lists(st.deferred(lambda: _values(node["items"], depth - 1)),
                                max_size=3))
    if "properties" in node or "patternProperties" in node:
        properties = node.get("properties", {})
        if properties:
            names = sorted(properties)
            options.append(
                st.lists(st.sampled_from(names), max_size=4, unique=True).flatmap(
                    lambda chosen: st.fixed_dictionaries(
                        {k: _values(properties[k], depth - 1) for k in chosen}
                    )
                )
            )
        if node.get("patternProperties"):
            value_schema = next(iter(node["patternProperties"].values()))
            options.append(st.dictionaries(
                _KEYS, st.deferred(lambda: _values(value_schema, depth - 1)), max_size=3))
    return st.one_of(options)


DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "services": st.dictionaries(
            st.sampled_from(["web", "db", "bad name"]), _values({"$ref": "#/$defs/service"}, 5),
            max_size=2),
        "networks": st.dictionaries(_KEYS, _values({"$ref": "#/$defs/network"}, 4), max_size=2),
        "volumes": st.dictionaries(_KEYS, _values({"$ref": "#/$defs/volume"}, 3), max_size=2),
        "secrets": st.dictionaries(_KEYS, _values({"$ref": "#/$defs/secret"}, 3), max_size=2),
        "models": st.dictionaries(_KEYS, _values({"$ref": "#/$defs/model"}, 3), max_size=2),
        "include": st.lists(_values({"$ref": "#/$defs/include_entry"}, 3), max_size=2),
        "name": _SCALARS,
        "x-ext": _SCALARS,
        "imgae": _SCALARS,
    },
)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(DOCUMENTS)
def test_validator_agrees_with_reference_jsonschema(document: dict[str, Any]) -> None:
    reference_accepts = REFERENCE.is_valid(document)
    original = copy.deepcopy(document)
    try:
        result = validate_schema(document, _NO_SOURCE)
    except StackError:
        # Casting only widens what is accepted: what we reject, the reference rejects.
        assert not reference_accepts
        return
    # What we accept is valid once cast; a document valid as it was is left alone.
    assert REFERENCE.is_valid(result)
    if reference_accepts:
        assert result == original


def _no_source() -> Any:
    from orchestrator.spec.errors import SourceMap

    return SourceMap("generated.yaml")


_NO_SOURCE = _no_source()


# --- speed and import weight -------------------------------------------------------------------


def test_importing_the_validator_stays_light() -> None:
    code = (
        "import sys, orchestrator.spec.schema\n"
        "heavy = {'jsonschema', 'difflib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
