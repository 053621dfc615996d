"""Rewrite one file's short syntax into compose's long, canonical form.

Compose lets a user write most keys two ways (`ports: ["8080:80"]` or a
mapping per port, `environment: [A=1]` or `{A: "1"}`, ...). Everything after
this stage (merge, normalize, validation, the engine) sees only the long form,
shaped and typed exactly as `docker compose config --format json` prints it:
ports' `target` an int and `published` a string, sizes as byte-count strings,
durations as Go prints them (`90s` -> `1m30s`), mappings with sorted keys.

Defaults that would be wrong to add before files are merged (a later file's
`depends_on: {db: {restart: true}}` must keep an earlier `condition`) are left
to `apply_defaults`, which the loader runs on the merged document.

This module holds the service keys most files use and the dispatch table;
how a service is built, deployed and given resources is in
`transform_runtime`, and the value spellings both share in `transform_values`.
"""

from __future__ import annotations

from typing import Any

from .errors import Path, SourceMap
from .shortsyntax import clean_path, parse_port_spec, parse_volume_spec
from .transform_runtime import (
    _blkio,
    _build,
    _deploy,
    _develop,
    _device_requests,
    _devices,
    _hooks,
    _ulimits,
)
from .transform_values import (
    DROP,
    MOUNT_ORDER,
    Converter,
    byte_size,
    command_words,
    cpu_count,
    duration_text,
    env_mapping,
    fail_at,
    file_mounts,
    host_entries,
    label_mapping,
    option_mapping,
    ordered,
    string_list,
)
from .yamlfile import go_string


def canonical(data: dict[str, Any], source: SourceMap) -> dict[str, Any]:
    """`data` with every short form rewritten to the long form (a new dict)."""
    result = dict(data)
    services = data.get("services")
    if isinstance(services, dict):
        result["services"] = {
            name: _service(service, ("services", name), source)
            if isinstance(service, dict)
            else service
            for name, service in services.items()
        }
    for kind in ("networks", "volumes", "secrets", "configs"):
        resources = data.get(kind)
        if isinstance(resources, dict):
            result[kind] = {
                name: _resource(body, (kind, name), source) if isinstance(body, dict) else body
                for name, body in resources.items()
            }
    include = data.get("include")
    if isinstance(include, list):
        result["include"] = [_include(item) for item in include]
    return result


def apply_defaults(data: dict[str, Any], project_dir: str) -> dict[str, Any]:
    """Fill the defaults compose adds once all files are merged (in place).

    A `depends_on` entry gets `condition: service_started` and
    `required: true`; a `build` without `context` builds `project_dir`.
    """
    for service in (data.get("services") or {}).values():
        if not isinstance(service, dict):
            continue
        depends = service.get("depends_on")
        if isinstance(depends, dict):
            service["depends_on"] = {name: _dependency(entry) for name, entry in depends.items()}
        build = service.get("build")
        if isinstance(build, dict) and "context" not in build:
            service["build"] = {"context": project_dir, **build}
    return data


# --- services -------------------------------------------------------------------


def _service(service: dict[str, Any], path: Path, source: SourceMap) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in service.items():
        convert = _SERVICE_KEYS.get(key)
        if convert is None or value is None:
            result[key] = value
            continue
        converted = convert(value, (*path, key), source)
        if converted is not DROP:
            result[key] = converted
    return result


def _ports(value: Any, path: Path, source: SourceMap) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = []
    for index, entry in enumerate(value):
        if isinstance(entry, dict):
            ports.append(_port_long(entry, (*path, index), source))
            continue
        if isinstance(entry, bool) or not isinstance(entry, int | str):
            fail_at(source, (*path, index), "a port must be a number, a string or a mapping")
        try:
            ports.extend(parse_port_spec(str(entry)))
        except ValueError as exc:
            fail_at(
                source,
                (*path, index),
                str(exc),
                "expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
            )
    return ports


def _port_long(entry: dict[str, Any], path: Path, source: SourceMap) -> dict[str, Any]:
    port: dict[str, Any] = {}
    if entry.get("name"):
        port["name"] = entry["name"]
    port["mode"] = entry.get("mode") or "ingress"
    if entry.get("host_ip"):
        port["host_ip"] = entry["host_ip"]
    target = entry.get("target")
    if isinstance(target, str):
        if not target.isdigit():
            fail_at(source, (*path, "target"), f"invalid target port {target!r}")
        target = int(target)
    if target:
        port["target"] = target
    published = entry.get("published")
    if published is not None and published != "":
        port["published"] = go_string(published)
    port["protocol"] = entry.get("protocol") or "tcp"
    if entry.get("app_protocol"):
        port["app_protocol"] = entry["app_protocol"]
    _keep_extensions(entry, port)
    return port


def _volumes(value: Any, path: Path, source: SourceMap) -> list[Any]:
    volumes: list[Any] = []
    for index, entry in enumerate(value):
        if isinstance(entry, str):
            try:
                volumes.append(parse_volume_spec(entry))
            except ValueError as exc:
                fail_at(source, (*path, index), str(exc), "expected [SOURCE:]TARGET[:OPTIONS]")
        elif isinstance(entry, dict):
            volumes.append(_volume_long(entry, (*path, index), source))
        else:
            volumes.append(entry)
    return volumes


_VOLUME_ORDER = (
    "type",
    "source",
    "target",
    "read_only",
    "consistency",
    "bind",
    "volume",
    "tmpfs",
    "image",
)


def _volume_long(entry: dict[str, Any], path: Path, source: SourceMap) -> dict[str, Any]:
    volume = dict(entry)
    if isinstance(volume.get("target"), str) and volume["target"]:
        volume["target"] = clean_path(volume["target"])
    if not volume.get("read_only"):
        volume.pop("read_only", None)
    bind = volume.get("bind")
    if isinstance(bind, dict) and bind.get("create_host_path") is False:
        volume["bind"] = {k: v for k, v in bind.items() if k != "create_host_path"}
    options = volume.get("volume")
    if isinstance(options, dict):
        options = {k: v for k, v in options.items() if v is not None and v is not False}
        if "labels" in options:
            options["labels"] = label_mapping(
                options["labels"], (*path, "volume", "labels"), source
            )
        volume["volume"] = options
    tmpfs = volume.get("tmpfs")
    if isinstance(tmpfs, dict) and "size" in tmpfs:
        tmpfs = dict(tmpfs)
        size = byte_size(tmpfs["size"], (*path, "tmpfs", "size"), source)
        if size is DROP:
            del tmpfs["size"]
        else:
            tmpfs["size"] = size
        volume["tmpfs"] = tmpfs
    return ordered(volume, _VOLUME_ORDER)


def _depends_on(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    if isinstance(value, list):
        return {name: {"condition": "service_started", "required": True} for name in sorted(value)}
    if isinstance(value, dict):
        return {
            name: ordered(entry, ("condition", "restart", "required"))
            if isinstance(entry, dict)
            else entry
            for name, entry in sorted(value.items())
        }
    fail_at(source, path, "expected a list of service names or a mapping")
    return {}


def _dependency(entry: Any) -> Any:
    if not isinstance(entry, dict):
        entry = {}
    result = {"condition": entry.get("condition") or "service_started"}
    if entry.get("restart"):
        result["restart"] = True
    _keep_extensions(entry, result)
    result["required"] = entry.get("required", True)
    return result


def _name_map(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    """networks / models: a list of names is a mapping to null."""
    if isinstance(value, list):
        return dict.fromkeys(sorted(go_string(name) for name in value))
    if isinstance(value, dict):
        return dict(sorted(value.items()))
    fail_at(source, path, "expected a list of names or a mapping")
    return {}


def _secrets(value: Any, path: Path, source: SourceMap) -> list[Any]:
    """A service's secrets are mounted under /run/secrets/ unless a target is given."""
    mounts = file_mounts(value, path, source)
    for mount in mounts:
        if isinstance(mount, dict) and "target" not in mount:
            mount["target"] = f"/run/secrets/{mount.get('source')}"
    return [ordered(m, MOUNT_ORDER) if isinstance(m, dict) else m for m in mounts]


def _healthcheck(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    check = dict(value)
    test = check.get("test")
    if isinstance(test, str):
        check["test"] = ["CMD-SHELL", test]
    elif test == []:
        del check["test"]
    for key in ("timeout", "interval", "start_period", "start_interval"):
        if check.get(key) is not None:
            check[key] = duration_text(check[key], (*path, key), source)
    if not check.get("disable"):
        check.pop("disable", None)
    return ordered(
        check,
        ("test", "timeout", "interval", "retries", "start_period", "start_interval", "disable"),
    )


def _expose(value: Any, path: Path, source: SourceMap) -> list[str]:
    return [go_string(item) for item in value]


def _env_file(value: Any, path: Path, source: SourceMap) -> list[Any]:
    files: list[Any] = []
    for entry in string_list(value, path, source):
        if isinstance(entry, str):
            files.append({"path": entry, "required": True})
        else:
            files.append({"required": True, **entry} if "required" not in entry else entry)
    return files


def _logging(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    logging = dict(value)
    if logging.get("options") is not None:
        logging["options"] = option_mapping(logging["options"], (*path, "options"), source)
    return logging


def _extends(value: Any, path: Path, source: SourceMap) -> Any:
    return {"service": value} if isinstance(value, str) else value


_SERVICE_KEYS: dict[str, Converter] = {
    "annotations": label_mapping,
    "blkio_config": _blkio,
    "build": _build,
    "command": command_words,
    "configs": file_mounts,
    "cpu_percent": cpu_count,
    "cpus": cpu_count,
    "depends_on": _depends_on,
    "deploy": _deploy,
    "develop": _develop,
    "devices": _devices,
    "dns": string_list,
    "dns_search": string_list,
    "entrypoint": command_words,
    "env_file": _env_file,
    "environment": env_mapping,
    "expose": _expose,
    "extends": _extends,
    "extra_hosts": host_entries,
    "gpus": _device_requests,
    "healthcheck": _healthcheck,
    "label_file": string_list,
    "labels": label_mapping,
    "logging": _logging,
    "mem_limit": byte_size,
    "mem_reservation": byte_size,
    "mem_swappiness": byte_size,
    "memswap_limit": byte_size,
    "models": _name_map,
    "networks": _name_map,
    "ports": _ports,
    "post_start": _hooks,
    "pre_start": _hooks,
    "pre_stop": _hooks,
    "secrets": _secrets,
    "shm_size": byte_size,
    "stop_grace_period": duration_text,
    "storage_opt": option_mapping,
    "sysctls": label_mapping,
    "tmpfs": string_list,
    "ulimits": _ulimits,
    "volumes": _volumes,
}


# --- top-level resources and include --------------------------------------------


def _resource(body: dict[str, Any], path: Path, source: SourceMap) -> dict[str, Any]:
    """networks/volumes/secrets/configs entries: labels, options, `external.name`."""
    resource = dict(body)
    external = resource.get("external")
    if isinstance(external, dict):
        resource["external"] = True
        legacy = external.get("name")
        if legacy is not None:
            if "name" in resource and resource["name"] != legacy:
                fail_at(
                    source, (*path, "external"), "name and external.name conflict; only use name"
                )
            resource.setdefault("name", legacy)
    if resource.get("labels") is not None:
        resource["labels"] = label_mapping(resource["labels"], (*path, "labels"), source)
    if resource.get("driver_opts") is not None:
        resource["driver_opts"] = option_mapping(
            resource["driver_opts"], (*path, "driver_opts"), source
        )
    ipam = resource.get("ipam")
    if isinstance(ipam, dict) and ipam.get("options") is not None:
        resource["ipam"] = {
            **ipam,
            "options": option_mapping(ipam["options"], (*path, "ipam", "options"), source),
        }
    return resource


def _include(item: Any) -> Any:
    """`include: [file.yaml]` entries become `{path: [file.yaml]}`."""
    if isinstance(item, str):
        return {"path": [item]}
    if isinstance(item, dict):
        entry = dict(item)
        for key in ("path", "env_file"):
            if isinstance(entry.get(key), str):
                entry[key] = [entry[key]]
        return entry
    return item


# --- helpers ----------------------------------------------------------------------


def _keep_extensions(original: dict[str, Any], target: dict[str, Any]) -> None:
    for key, value in original.items():
        if key.startswith("x-"):
            target[key] = value
