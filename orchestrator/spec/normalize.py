"""Project-level normalization: the merged document becomes the printed model.

By the time a document gets here every service key is already in its long
form (that is `transform`'s job, per file). What is left is what compose
decides only once all files are merged: the project name, the implicit
`default` network, resource names, dependencies implied by `links`,
`volumes_from` and `service:` namespaces, env files read into `environment`,
and the shape `docker compose config --format json` prints — keys in its
order, zero values left out the way Go's `omitempty` leaves them out, and
resources no service uses dropped.

Profiles are applied by `profiles.apply_profiles`. Run it *before* this stage
to match compose exactly: compose reads env files only for enabled services,
so a disabled service's missing env file is not an error.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from .environment import as_mapping, resolve_environment, resolve_labels
from .errors import SourceMap, Warnings
from .yamlfile import go_string

# compose prints the project's top-level keys as a Go map: sorted. Resource
# and service keys follow the field order of compose's own types.
_SERVICE_ORDER = (
    "profiles", "annotations", "attach", "build", "develop", "blkio_config", "cap_add", "cap_drop",
    "cgroup_parent", "cgroup", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota",
    "cpu_rt_period", "cpu_rt_runtime", "cpus", "cpuset", "cpu_shares", "command", "configs",
    "container_name", "credential_spec", "depends_on", "deploy", "device_cgroup_rules", "devices",
    "dns", "dns_opt", "dns_search", "dockerfile", "domainname", "entrypoint", "provider",
    "environment", "env_file", "expose", "extends", "external_links", "extra_hosts", "group_add",
    "gpus", "hostname", "healthcheck", "image", "init", "ipc", "isolation", "labels", "label_file",
    "links", "logging", "log_driver", "log_opt", "mem_limit", "mem_reservation", "memswap_limit",
    "mem_swappiness", "mac_address", "models", "net", "network_mode", "networks",
    "oom_kill_disable", "oom_score_adj", "pid", "pids_limit", "platform", "ports", "privileged",
    "pull_policy", "read_only", "restart", "runtime", "scale", "secrets", "security_opt",
    "shm_size", "stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "sysctls",
    "tmpfs", "tty", "ulimits", "use_api_socket", "user", "userns_mode", "uts", "volume_driver",
    "volumes", "volumes_from", "working_dir", "pre_start", "post_start", "pre_stop",
)
_BUILD_ORDER = (
    "context", "dockerfile", "dockerfile_inline", "entitlements", "args", "provenance", "sbom",
    "ssh", "labels", "cache_from", "cache_to", "no_cache", "no_cache_filter",
    "additional_contexts", "pull", "extra_hosts", "isolation", "network", "target", "secrets",
    "shm_size", "tags", "ulimits", "platforms", "privileged",
)
_DEPLOY_ORDER = (
    "mode", "replicas", "labels", "update_config", "rollback_config", "resources",
    "restart_policy", "placement", "endpoint_mode",
)
_NETWORK_ORDER = (
    "name", "driver", "driver_opts", "ipam", "external", "internal", "attachable", "labels",
    "enable_ipv4", "enable_ipv6",
)
_VOLUME_ORDER = (
    "name", "driver", "driver_opts", "external", "labels",
)
_FILE_OBJECT_ORDER = (
    "name", "file", "environment", "content", "external", "labels", "driver", "driver_opts",
    "template_driver",
)
_MODEL_ORDER = ("name", "model", "context_size", "runtime_flags")
_HEALTHCHECK_ORDER = (
    "test", "timeout", "interval", "retries", "start_period", "start_interval", "disable",
)
_DEPENDENCY_ORDER = ("condition", "restart", "required")
# Keys holding Go maps, which compose prints with sorted keys.
_SERVICE_MAPS = ("annotations", "sysctls", "storage_opt", "log_opt", "ulimits", "models")
_BUILD_MAPS = ("args", "labels", "additional_contexts")

# Service keys compose keeps even when empty, false or zero (pointers in its
# types); every other key is left out when it holds a zero value.
_SERVICE_KEEP_ZERO = frozenset({
    "attach", "build", "develop", "blkio_config", "credential_spec", "deploy", "extends",
    "healthcheck", "init", "logging", "provider", "scale", "stop_grace_period", "command",
    "entrypoint",
})
_DEPLOY_KEEP_ZERO = frozenset({
    "replicas", "update_config", "rollback_config", "resources", "restart_policy", "placement",
})
_HEALTHCHECK_KEEP_ZERO = frozenset({
    "timeout", "interval", "retries", "start_period", "start_interval",
})
_RESTART_POLICY_KEEP_ZERO = frozenset({"delay", "max_attempts", "window"})
_NETWORK_KEEP_ZERO = frozenset({"ipam", "enable_ipv4", "enable_ipv6"})
# The one service extension the engine reads; compose prints no extension
# below the top level.
# Namespace keys that may name another service as `service:<name>`.
_SHARED_NAMESPACES = ("network_mode", "ipc", "pid", "uts", "cgroup")
_RESOURCE_KINDS = ("networks", "volumes", "secrets", "configs", "models")


def normalize(
    data: dict,
    project_name: str,
    project_dir: str,
    environment: Mapping[str, str],
    source: SourceMap,
    warnings: Warnings | None = None,
) -> dict:
    """The merged document as `docker compose config --format json` prints it.

    `warnings` collects the unset variables env files refer to, as compose
    warns about them.
    """
    services: dict[str, Any] = data.get("services") or {}
    normalized: dict[str, Any] = {}
    uses_default_network = False
    for name in sorted(services):
        service = _normalize_service(
            name, dict(services[name] or {}), project_dir, environment, source, warnings
        )
        uses_default_network |= "default" in (service.get("networks") or {})
        normalized[name] = service

    model: dict[str, Any] = {"name": project_name, "services": normalized}
    networks = dict(data.get("networks") or {})
    if uses_default_network and "default" not in networks:
        networks["default"] = None
    for kind, tidy in (
        ("networks", _network), ("volumes", _volume), ("secrets", _file_object),
        ("configs", _file_object), ("models", _model),
    ):
        declared = networks if kind == "networks" else data.get(kind) or {}
        if declared:
            model[kind] = {
                key: tidy(key, dict(declared[key] or {}), project_name)
                for key in sorted(declared)
            }
    # Extension fields stay in the model at every level (the engine reads
    # `x-stack`); compose's JSON shows only the top-level ones, and so does
    # ours (cli/render.py). Likewise `models`, which its JSON leaves out.
    for key, value in data.items():
        if key.startswith("x-"):
            model[key] = _sorted_deep(value)
    prune_unused_resources(model)
    return {key: model[key] for key in sorted(model)}


def prune_unused_resources(model: dict) -> None:
    """Drop the networks, volumes, secrets, configs and models no service uses (in place).

    compose prints only what the enabled services refer to: an unused
    declaration is neither created nor shown.
    """
    used: dict[str, set[str]] = {kind: set() for kind in _RESOURCE_KINDS}
    for service in (model.get("services") or {}).values():
        if not isinstance(service, dict):
            continue
        used["networks"].update(_networks_used(service))
        for mount in service.get("volumes") or ():
            if isinstance(mount, dict) and mount.get("type") == "volume" and mount.get("source"):
                used["volumes"].add(mount["source"])
        secrets = list(service.get("secrets") or ())
        secrets += (service.get("build") or {}).get("secrets") or ()
        used["secrets"].update(_sources(secrets))
        used["configs"].update(_sources(service.get("configs") or ()))
        used["models"].update(service.get("models") or ())
    for kind in _RESOURCE_KINDS:
        if isinstance(model.get(kind), dict):
            kept = {key: value for key, value in model[kind].items() if key in used[kind]}
            if kept:
                model[kind] = kept
            else:
                del model[kind]


def _networks_used(service: dict) -> Iterable[str]:
    """The service's networks; before normalization, none written means `default`."""
    if service.get("networks"):
        return service["networks"]
    if "network_mode" in service or "provider" in service:
        return ()
    return ("default",)


def _sources(references: Any) -> list[str]:
    return [
        ref["source"] if isinstance(ref, dict) else ref
        for ref in references
        if isinstance(ref, dict | str)
    ]


# ---- services ---------------------------------------------------------------------------


def _normalize_service(
    name: str,
    service: dict,
    project_dir: str,
    environment: Mapping[str, str],
    source: SourceMap,
    warnings: Warnings | None,
) -> dict:
    path = ("services", name)
    joins_networks = "network_mode" not in service and "provider" not in service
    if joins_networks and not service.get("networks"):
        service["networks"] = {"default": None}
    if isinstance(service.get("networks"), dict):
        service["networks"] = {
            key: dict(value) if isinstance(value, dict) else value
            for key, value in sorted(service["networks"].items())
        }
    if isinstance(service.get("develop"), dict):
        service["develop"] = _develop(service["develop"])
    if isinstance(service.get("provider"), dict):
        service["provider"] = _provider(service["provider"])
    if service.get("pull_policy") == "if_not_present":
        service["pull_policy"] = "missing"
    if isinstance(service.get("build"), dict):
        service["build"] = _build(service["build"], project_dir, environment)
    _check_scale(service, path, source)
    if isinstance(service.get("deploy"), dict):
        service["deploy"] = _deploy(service["deploy"])
    if isinstance(service.get("healthcheck"), dict):
        service["healthcheck"] = _ordered(
            _omit_zero(dict(service["healthcheck"]), _HEALTHCHECK_KEEP_ZERO),
            _HEALTHCHECK_ORDER,
        )
    if isinstance(service.get("logging"), dict):
        logging = _omit_zero(dict(service["logging"]), frozenset())
        service["logging"] = _sorted_maps(logging, ("options",))
    service = _sorted_maps(service, _SERVICE_MAPS)
    if service.get("secrets"):
        service["secrets"] = [_secret_mount(ref) for ref in service["secrets"]]
    if service.get("volumes"):
        service["volumes"] = [_clean_target(mount) for mount in service["volumes"]]

    env = resolve_environment(service, path, environment, source, warnings)
    if env is not None:
        service["environment"] = env
    labels = resolve_labels(service, path, source)
    if labels is not None:
        service["labels"] = labels
    dependencies = _dependencies(service)
    if dependencies:
        service["depends_on"] = dependencies

    service.setdefault("command", None)
    service.setdefault("entrypoint", None)
    return _ordered(_omit_zero(service, _SERVICE_KEEP_ZERO), _SERVICE_ORDER)


def _develop(develop: dict) -> dict:
    develop = dict(develop)
    if isinstance(develop.get("watch"), list):
        develop["watch"] = [
            dict(trigger) if isinstance(trigger, dict) else trigger
            for trigger in develop["watch"]
        ]
    return develop


def _provider(provider: dict) -> dict:
    """Provider options are lists of strings in compose's model, one value or many."""
    provider = dict(provider)
    options = provider.get("options")
    if isinstance(options, dict):
        provider["options"] = {
            key: [go_string(v) for v in value] if isinstance(value, list) else [go_string(value)]
            for key, value in sorted(options.items())
        }
    return provider


def _build(build: dict, project_dir: str, environment: Mapping[str, str]) -> dict:
    build = dict(build)
    # The paths stage resolves a written context; an omitted one means the
    # project directory.
    build.setdefault("context", project_dir)
    # Only an absent dockerfile gets the default; one interpolated to ""
    # stays empty (and is then left out), as in compose.
    if "dockerfile" not in build and not build.get("dockerfile_inline"):
        build["dockerfile"] = "Dockerfile"
    args = build.get("args")
    if isinstance(args, dict):
        # A build argument with no value takes it from the environment, and
        # is left out when the environment does not have it either.
        resolved = {}
        for key, value in args.items():
            if value is None:
                if key not in environment:
                    continue
                value = environment[key]
            resolved[key] = value
        build["args"] = resolved
    build = _sorted_maps(build, _BUILD_MAPS)
    return _ordered(_omit_zero(build, frozenset()), _BUILD_ORDER)


def _check_scale(service: dict, path: tuple, source: SourceMap) -> None:
    deploy = service.get("deploy")
    replicas = deploy.get("replicas") if isinstance(deploy, dict) else None
    scale = service.get("scale")
    if scale is not None and replicas is not None and scale != replicas:
        raise source.error(
            (*path, "scale"),
            f"can't set distinct values on 'scale' ({scale}) and 'deploy.replicas' ({replicas})",
            hint="keep one of them, or give both the same value",
        )


def _deploy(deploy: dict) -> dict:
    deploy = dict(deploy)
    resources = dict(deploy.get("resources") or {})
    for kind in ("limits", "reservations"):
        if isinstance(resources.get(kind), dict):
            resources[kind] = _omit_zero(dict(resources[kind]), frozenset())
    deploy["resources"] = resources
    _sorted_maps(deploy, ("labels",))
    deploy["placement"] = _omit_zero(dict(deploy.get("placement") or {}), frozenset())
    if isinstance(deploy.get("restart_policy"), dict):
        deploy["restart_policy"] = _omit_zero(
            dict(deploy["restart_policy"]), _RESTART_POLICY_KEEP_ZERO
        )
    return _ordered(_omit_zero(deploy, _DEPLOY_KEEP_ZERO), _DEPLOY_ORDER)


def _secret_mount(ref: Any) -> Any:
    """A secret mounted without a target goes to /run/secrets/<name>."""
    if isinstance(ref, str):
        ref = {"source": ref}
    if isinstance(ref, dict) and not ref.get("target") and ref.get("source"):
        ref = {**ref, "target": f"/run/secrets/{ref['source']}"}
    return ref


def _clean_target(mount: Any) -> Any:
    if isinstance(mount, dict) and isinstance(mount.get("target"), str) and mount["target"]:
        target = posixpath.normpath(mount["target"])
        if target.startswith("//"):  # normpath keeps a leading "//", Go's path.Clean does not
            target = "/" + target.lstrip("/")
        mount = {**mount, "target": target}
    return mount


def _dependencies(service: dict) -> dict:
    """depends_on, plus the services that links, namespaces and volumes_from need.

    An explicit entry wins; implied ones restart with their dependency except
    volumes_from's.
    """
    dependencies = dict(service.get("depends_on") or {})
    implied: list[tuple[str, bool]] = []
    for link in service.get("links") or ():
        implied.append((link.split(":")[0] if link.count(":") == 1 else link, True))
    for key in _SHARED_NAMESPACES:
        value = service.get(key)
        if isinstance(value, str) and value.startswith("service:"):
            implied.append((value[len("service:"):], True))
    for spec in service.get("volumes_from") or ():
        if not spec.startswith("container:"):
            implied.append((spec.split(":")[0], False))
    for name, restart in implied:
        if name not in dependencies:
            dependencies[name] = {"condition": "service_started", "restart": restart,
                                  "required": True}
    return {name: _dependency(dependencies[name]) for name in sorted(dependencies)}


def _dependency(entry: Any) -> dict:
    """One depends_on entry as printed: `restart` only when true, `required` always."""
    entry = {"condition": "service_started", "required": True, **(entry or {})}
    if not entry.get("restart"):
        entry.pop("restart", None)
    return _ordered(dict(entry), _DEPENDENCY_ORDER)


# ---- top-level resources -----------------------------------------------------------------


def _network(key: str, network: dict, project_name: str) -> dict:
    network = _named(key, network, project_name)
    network.setdefault("ipam", {})
    if isinstance(network["ipam"], dict):
        network["ipam"] = dict(network["ipam"])
    return _ordered(_omit_zero(network, _NETWORK_KEEP_ZERO), _NETWORK_ORDER)


def _volume(key: str, volume: dict, project_name: str) -> dict:
    return _ordered(_omit_zero(_named(key, volume, project_name), frozenset()), _VOLUME_ORDER)


def _file_object(key: str, obj: dict, project_name: str) -> dict:
    obj = _named(key, obj, project_name)
    if obj.get("environment"):
        obj.pop("content", None)  # compose never prints a value read from the environment
    return _ordered(_omit_zero(obj, frozenset()), _FILE_OBJECT_ORDER)


def _model(key: str, model: dict, project_name: str) -> dict:
    return _ordered(_omit_zero(dict(model), frozenset()), _MODEL_ORDER)


def _named(key: str, resource: dict, project_name: str) -> dict:
    """The resource with its runtime name: given, its key if external, else project-scoped."""
    resource = dict(resource)
    external = resource.get("external")
    if isinstance(external, dict):  # the old `external: {name: x}` spelling
        if external.get("name") and not resource.get("name"):
            resource["name"] = external["name"]
        external = resource["external"] = True
    if isinstance(resource.get("labels"), list):
        resource["labels"] = as_mapping(resource["labels"])
    _sorted_maps(resource, ("labels", "driver_opts"))
    if not resource.get("name"):
        resource["name"] = key if external is True else f"{project_name}_{key}"
    return resource


# ---- printing shape ------------------------------------------------------------------------


def _omit_zero(mapping: dict, keep: frozenset[str]) -> dict:
    """Leave out false, zero, empty and null values, as Go's `omitempty` does."""
    return {
        key: value
        for key, value in mapping.items()
        if key in keep or not (value is None or value is False or value in _ZEROS)
    }


_ZEROS = (0, "", [], {})


def _sorted_maps(mapping: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        if isinstance(mapping.get(key), dict):
            mapping[key] = dict(sorted(mapping[key].items()))
    return mapping


def _sorted_deep(value: Any) -> Any:
    """An extension's value as Go prints free-form data: every mapping's keys sorted."""
    if isinstance(value, dict):
        return {key: _sorted_deep(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted_deep(item) for item in value]
    return value


def _ordered(mapping: dict, order: list[str] | tuple[str, ...]) -> dict:
    """The keys in `order` first, in that order, then any others sorted."""
    result = {key: mapping[key] for key in order if key in mapping}
    for key in sorted(mapping):
        if key not in result:
            result[key] = mapping[key]
    return result
