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
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .errors import Path, SourceMap
from .units import (
    canonical_duration,
    clean_path,
    parse_bytes,
    parse_port_spec,
    parse_volume_spec,
    split_command,
)
from .yamlfile import go_string

_DROP = object()
"""Returned by a converter when compose would print nothing for the key."""

Converter = Callable[[Any, Path, SourceMap], Any]


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
            service["depends_on"] = {
                name: _dependency(entry) for name, entry in depends.items()
            }
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
        if converted is not _DROP:
            result[key] = converted
    return result


def _fail(source: SourceMap, path: Path, message: str, hint: str | None = None) -> None:
    raise source.error(path, message, hint)


def _ports(value: Any, path: Path, source: SourceMap) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = []
    for index, entry in enumerate(value):
        if isinstance(entry, dict):
            ports.append(_port_long(entry, (*path, index), source))
            continue
        if isinstance(entry, bool) or not isinstance(entry, int | str):
            _fail(source, (*path, index), "a port must be a number, a string or a mapping")
        try:
            ports.extend(parse_port_spec(str(entry)))
        except ValueError as exc:
            _fail(source, (*path, index), str(exc),
                  "expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]")
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
            _fail(source, (*path, "target"), f"invalid target port {target!r}")
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
                _fail(source, (*path, index), str(exc), "expected [SOURCE:]TARGET[:OPTIONS]")
        elif isinstance(entry, dict):
            volumes.append(_volume_long(entry, (*path, index), source))
        else:
            volumes.append(entry)
    return volumes


_VOLUME_ORDER = ("type", "source", "target", "read_only", "consistency",
                 "bind", "volume", "tmpfs", "image")


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
            options["labels"] = _labels(options["labels"], (*path, "volume", "labels"), source)
        volume["volume"] = options
    tmpfs = volume.get("tmpfs")
    if isinstance(tmpfs, dict) and "size" in tmpfs:
        tmpfs = dict(tmpfs)
        size = _bytes(tmpfs["size"], (*path, "tmpfs", "size"), source)
        if size is _DROP:
            del tmpfs["size"]
        else:
            tmpfs["size"] = size
        volume["tmpfs"] = tmpfs
    return _ordered(volume, _VOLUME_ORDER)


def _mapping_with_equals(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    """environment / build.args: `B` alone means "take it from the shell" (null)."""
    return _key_values(value, path, source, missing=None)


def _labels(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    """labels, annotations, sysctls, ...: string values, a bare key means ""."""
    return _key_values(value, path, source, missing="")


def _key_values(value: Any, path: Path, source: SourceMap, missing: str | None) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            pairs[key] = missing if item is None else go_string(item)
    elif isinstance(value, list):
        for item in value:
            key, sep, text = go_string(item).partition("=")
            pairs[key] = text if sep else missing
    else:
        _fail(source, path, "expected a list of KEY=VALUE strings or a mapping")
    return dict(sorted(pairs.items()))


def _options(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    """driver_opts, logging options: every value is a string."""
    if not isinstance(value, dict):
        _fail(source, path, "expected a mapping")
    return {key: go_string(item) for key, item in sorted(value.items())}


def _extra_hosts(value: Any, path: Path, source: SourceMap) -> list[str]:
    hosts: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for host, ips in value.items():
            if isinstance(ips, list):
                hosts[host] = [go_string(ip) for ip in ips]
            else:
                hosts[host] = ["" if ips is None else go_string(ips)]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            text = go_string(item)
            for separator in ("=", ":"):
                host, sep, ips = text.partition(separator)
                if sep:
                    hosts.setdefault(host, []).extend(ips.split(","))
                    break
            else:
                _fail(source, (*path, index), f"invalid additional host, missing IP: {text}",
                      "write HOST=IP")
    else:
        _fail(source, path, "expected a list of HOST=IP strings or a mapping")
    entries = []
    for host, ips in hosts.items():
        if not host or ":" in host or "=" in host:
            _fail(source, path, f"bad host name '{host}'")
        for ip in ips:
            if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
                ip = ip[1:-1]
            entries.append(f"{host}={ip}")
    return sorted(entries)


def _depends_on(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    if isinstance(value, list):
        return {
            name: {"condition": "service_started", "required": True}
            for name in sorted(value)
        }
    if isinstance(value, dict):
        return {
            name: _ordered(entry, ("condition", "restart", "required"))
            if isinstance(entry, dict)
            else entry
            for name, entry in sorted(value.items())
        }
    _fail(source, path, "expected a list of service names or a mapping")
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
    _fail(source, path, "expected a list of names or a mapping")
    return {}


def _secrets(value: Any, path: Path, source: SourceMap) -> list[Any]:
    """A service's secrets are mounted under /run/secrets/ unless a target is given."""
    mounts = _file_mounts(value, path, source)
    for mount in mounts:
        if isinstance(mount, dict) and "target" not in mount:
            mount["target"] = f"/run/secrets/{mount.get('source')}"
    return [_ordered(m, _MOUNT_ORDER) if isinstance(m, dict) else m for m in mounts]


_MOUNT_ORDER = ("source", "target", "uid", "gid", "mode")


def _file_mounts(value: Any, path: Path, source: SourceMap) -> list[Any]:
    """secrets / configs: `name` is `{source: name}`; mode prints in octal."""
    mounts: list[Any] = []
    for index, entry in enumerate(value):
        if isinstance(entry, str):
            mounts.append({"source": entry})
            continue
        if not isinstance(entry, dict):
            _fail(source, (*path, index), "expected a name or a mapping")
        mount = dict(entry)
        for key in ("uid", "gid"):
            if key in mount and mount[key] is not None:
                mount[key] = go_string(mount[key])
        if mount.get("mode") is not None:
            mount["mode"] = _file_mode(mount["mode"], (*path, index, "mode"), source)
        mounts.append(_ordered(mount, _MOUNT_ORDER))
    return mounts


def _file_mode(value: Any, path: Path, source: SourceMap) -> str:
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            _fail(source, path, f"invalid file mode {value!r}", "write it in octal, like 0440")
    return f"0{value:o}" if value >= 0 else f"-0{-value:o}"


def _command(value: Any, path: Path, source: SourceMap) -> list[str]:
    if isinstance(value, list):
        return [go_string(word) for word in value]
    try:
        return split_command(go_string(value))
    except ValueError as exc:
        _fail(source, path, str(exc), "check the quotes, or write the command as a list")
    return []


def _healthcheck(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    check = dict(value)
    test = check.get("test")
    if isinstance(test, str):
        check["test"] = ["CMD-SHELL", test]
    elif test == []:
        del check["test"]
    for key in ("timeout", "interval", "start_period", "start_interval"):
        if check.get(key) is not None:
            check[key] = _duration(check[key], (*path, key), source)
    if not check.get("disable"):
        check.pop("disable", None)
    return _ordered(check, ("test", "timeout", "interval", "retries", "start_period",
                            "start_interval", "disable"))


def _duration(value: Any, path: Path, source: SourceMap) -> str:
    try:
        return canonical_duration(value)
    except ValueError as exc:
        _fail(source, path, str(exc), "write a duration like 10s, 1m30s or 500ms")
    return ""


def _bytes(value: Any, path: Path, source: SourceMap) -> Any:
    """A size as compose prints it: `512m` -> `"536870912"`.

    compose silently ignores a size written as a YAML float (`1.5`): so do we.
    """
    if isinstance(value, float):
        return _DROP
    try:
        return str(parse_bytes(value))
    except ValueError as exc:
        _fail(source, path, str(exc), "write a size like 512m, 1g or 1024k")
    return ""


def _cpus(value: Any, path: Path, source: SourceMap) -> int | float:
    """A CPU count, printed as compose's float32 is (`0.123456789` -> 0.12345679)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        _fail(source, path, f"invalid CPU count {value!r}", "write a number like 0.5")
    single = struct.unpack("f", struct.pack("f", number))[0]
    for digits in range(1, 10):
        shortest = float(f"{single:.{digits}g}")
        if struct.unpack("f", struct.pack("f", shortest))[0] == single:
            break
    return int(shortest) if shortest.is_integer() else shortest


def _string_list(value: Any, path: Path, source: SourceMap) -> list[Any]:
    return [value] if isinstance(value, str) else value


def _expose(value: Any, path: Path, source: SourceMap) -> list[str]:
    return [go_string(item) for item in value]


def _devices(value: Any, path: Path, source: SourceMap) -> list[Any]:
    devices: list[Any] = []
    for index, entry in enumerate(value):
        if isinstance(entry, dict):
            devices.append(_ordered(entry, ("source", "target", "permissions")))
            continue
        parts = go_string(entry).split(":")
        if len(parts) > 3:
            _fail(source, (*path, index),
                  f"confusing device mapping, please use long syntax: {entry}")
        host = parts[0]
        target = parts[1] if len(parts) > 1 and parts[1] else host
        permissions = parts[2] if len(parts) > 2 else "rwm"
        devices.append({"source": host, "target": target, "permissions": permissions})
    return devices


def _ulimits(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    for name, limit in sorted(value.items()):
        if isinstance(limit, dict):
            limits[name] = {k: limit[k] for k in ("soft", "hard") if limit.get(k)}
        else:
            limits[name] = limit
    return limits


def _device_requests(value: Any, path: Path, source: SourceMap) -> list[Any]:
    """gpus / deploy devices: `count: all` is -1, which is also the default."""
    if value == "all":
        return [{"count": -1}]
    requests: list[Any] = []
    for index, entry in enumerate(value):
        request = dict(entry)
        count = request.get("count")
        if isinstance(count, str):
            if count.lower() == "all":
                request["count"] = -1
            elif count.lstrip("+-").isdigit():
                request["count"] = int(count)
            else:
                _fail(source, (*path, index, "count"),
                      f"invalid value {count!r}, the only value allowed is 'all' or a number")
        elif "count" not in request and "device_ids" not in request:
            request["count"] = -1
        if isinstance(request.get("options"), dict):
            request["options"] = _labels(request["options"], (*path, index, "options"), source)
        requests.append(_ordered(request, ("capabilities", "driver", "count", "device_ids",
                                           "options")))
    return requests


def _build(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    if isinstance(value, str):
        return {"context": value}
    build = dict(value)
    for key, convert in _BUILD_KEYS.items():
        if build.get(key) is not None:
            converted = convert(build[key], (*path, key), source)
            if converted is _DROP:
                del build[key]
            else:
                build[key] = converted
    for key in ("provenance", "sbom"):
        if key in build and not isinstance(build[key], str):
            build[key] = go_string(build[key])
    return build


def _additional_contexts(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    if isinstance(value, list):
        for item in value:
            if "=" not in go_string(item):
                _fail(source, path, f"invalid value {item}, expected key=value")
    return _labels(value, path, source)


def _ssh(value: Any, path: Path, source: SourceMap) -> list[str]:
    """build.ssh as compose prints it: `default`, or `ID=PATH`."""
    keys: dict[str, str | None] = {}
    if isinstance(value, dict):
        keys = {k: None if v is None else go_string(v) for k, v in value.items()}
    else:
        for item in _string_list(value, path, source):
            key, sep, key_path = go_string(item).partition("=")
            if not sep and key != "default":
                _fail(source, path, f'invalid ssh key "{item}"', "write ID=PATH or default")
            keys[key] = key_path if sep else None
    return [key if key_path is None else f"{key}={key_path}" for key, key_path in keys.items()]


def _deploy(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    deploy = dict(value)
    if deploy.get("labels") is not None:
        deploy["labels"] = _labels(deploy["labels"], (*path, "labels"), source)
    for key in ("update_config", "rollback_config"):
        update = deploy.get(key)
        if isinstance(update, dict):
            update = dict(update)
            for field in ("delay", "monitor"):
                if update.get(field) is not None:
                    text = _duration(update[field], (*path, key, field), source)
                    if text == "0s":  # not a pointer in compose: zero is not printed
                        del update[field]
                    else:
                        update[field] = text
            deploy[key] = update
    policy = deploy.get("restart_policy")
    if isinstance(policy, dict):
        policy = dict(policy)
        for field in ("delay", "window"):
            if policy.get(field) is not None:
                policy[field] = _duration(policy[field], (*path, "restart_policy", field), source)
        deploy["restart_policy"] = policy
    resources = deploy.get("resources") or {}
    deploy["resources"] = {
        kind: _resource_limits(limits, (*path, "resources", kind), source)
        for kind, limits in resources.items()
        if limits is not None
    }
    deploy.setdefault("placement", {})
    return _ordered(deploy, ("mode", "replicas", "labels", "update_config", "rollback_config",
                             "resources", "restart_policy", "placement", "endpoint_mode"))


def _resource_limits(value: Any, path: Path, source: SourceMap) -> Any:
    if not isinstance(value, dict):
        return value
    limits = dict(value)
    if limits.get("cpus") is not None:
        limits["cpus"] = _cpus(limits["cpus"], (*path, "cpus"), source)
    if limits.get("memory") is not None:
        memory = _bytes(limits["memory"], (*path, "memory"), source)
        if memory is _DROP:
            del limits["memory"]
        else:
            limits["memory"] = memory
    if limits.get("devices") is not None:
        limits["devices"] = _device_requests(limits["devices"], (*path, "devices"), source)
    return _ordered(limits, ("cpus", "memory", "pids", "devices", "generic_resources"))


def _blkio(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    """blkio_config: compose prints device entries with Go's field names, Path/Rate."""
    blkio = dict(value)
    if blkio.get("weight_device") is not None:
        blkio["weight_device"] = [
            {"Path": entry.get("path", ""), "Weight": entry.get("weight", 0)}
            for entry in blkio["weight_device"]
        ]
    for key in ("device_read_bps", "device_read_iops", "device_write_bps", "device_write_iops"):
        if blkio.get(key) is not None:
            blkio[key] = [
                {"Path": entry.get("path", ""),
                 "Rate": _bytes(entry.get("rate", 0), (*path, key, index, "rate"), source)}
                for index, entry in enumerate(blkio[key])
            ]
    return blkio


def _env_file(value: Any, path: Path, source: SourceMap) -> list[Any]:
    files: list[Any] = []
    for entry in _string_list(value, path, source):
        if isinstance(entry, str):
            files.append({"path": entry, "required": True})
        else:
            files.append({"required": True, **entry} if "required" not in entry else entry)
    return files


def _logging(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    logging = dict(value)
    if logging.get("options") is not None:
        logging["options"] = _options(logging["options"], (*path, "options"), source)
    return logging


def _extends(value: Any, path: Path, source: SourceMap) -> Any:
    return {"service": value} if isinstance(value, str) else value


def _develop(value: Any, path: Path, source: SourceMap) -> Any:
    develop = dict(value)
    watch = develop.get("watch")
    if isinstance(watch, list):
        triggers = []
        for index, trigger in enumerate(watch):
            trigger = dict(trigger)
            for key in ("ignore", "include"):
                if isinstance(trigger.get(key), str):
                    trigger[key] = [trigger[key]]
            exec_hook = trigger.get("exec") or {}
            trigger["exec"] = _hook(exec_hook, (*path, "watch", index, "exec"), source)
            triggers.append(_ordered(trigger, ("path", "action", "target", "exec", "include",
                                               "ignore", "initial_sync")))
        develop["watch"] = triggers
    return develop


def _hook(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    hook = dict(value)
    command = hook.get("command")
    hook["command"] = None if command is None else _command(command, (*path, "command"), source)
    if hook.get("environment") is not None:
        hook["environment"] = _mapping_with_equals(hook["environment"],
                                                   (*path, "environment"), source)
    return hook


def _hooks(value: Any, path: Path, source: SourceMap) -> list[Any]:
    return [_hook(hook, (*path, index), source) for index, hook in enumerate(value)]


_SERVICE_KEYS: dict[str, Converter] = {
    "annotations": _labels,
    "blkio_config": _blkio,
    "build": _build,
    "command": _command,
    "configs": _file_mounts,
    "cpu_percent": _cpus,
    "cpus": _cpus,
    "depends_on": _depends_on,
    "deploy": _deploy,
    "develop": _develop,
    "devices": _devices,
    "dns": _string_list,
    "dns_search": _string_list,
    "entrypoint": _command,
    "env_file": _env_file,
    "environment": _mapping_with_equals,
    "expose": _expose,
    "extends": _extends,
    "extra_hosts": _extra_hosts,
    "gpus": _device_requests,
    "healthcheck": _healthcheck,
    "label_file": _string_list,
    "labels": _labels,
    "logging": _logging,
    "mem_limit": _bytes,
    "mem_reservation": _bytes,
    "mem_swappiness": _bytes,
    "memswap_limit": _bytes,
    "models": _name_map,
    "networks": _name_map,
    "ports": _ports,
    "post_start": _hooks,
    "pre_start": _hooks,
    "pre_stop": _hooks,
    "secrets": _secrets,
    "shm_size": _bytes,
    "stop_grace_period": _duration,
    "storage_opt": _options,
    "sysctls": _labels,
    "tmpfs": _string_list,
    "ulimits": _ulimits,
    "volumes": _volumes,
}

_BUILD_KEYS: dict[str, Converter] = {
    "args": _mapping_with_equals,
    "labels": _labels,
    "additional_contexts": _additional_contexts,
    "extra_hosts": _extra_hosts,
    "ssh": _ssh,
    "secrets": _file_mounts,
    "ulimits": _ulimits,
    "shm_size": _bytes,
    "cache_from": _string_list,
    "cache_to": _string_list,
    "no_cache_filter": _string_list,
    "tags": _string_list,
    "platforms": _string_list,
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
                _fail(source, (*path, "external"),
                      "name and external.name conflict; only use name")
            resource.setdefault("name", legacy)
    if resource.get("labels") is not None:
        resource["labels"] = _labels(resource["labels"], (*path, "labels"), source)
    if resource.get("driver_opts") is not None:
        resource["driver_opts"] = _options(resource["driver_opts"], (*path, "driver_opts"),
                                           source)
    ipam = resource.get("ipam")
    if isinstance(ipam, dict) and ipam.get("options") is not None:
        resource["ipam"] = {**ipam, "options": _options(ipam["options"],
                                                        (*path, "ipam", "options"), source)}
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


def _ordered(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """`mapping` with compose's field order first, any other keys (x-...) after."""
    result = {key: mapping[key] for key in order if key in mapping}
    for key, value in mapping.items():
        if key not in result:
            result[key] = value
    return result


def _keep_extensions(original: dict[str, Any], target: dict[str, Any]) -> None:
    for key, value in original.items():
        if key.startswith("x-"):
            target[key] = value
