"""Canonical forms of how a service is built, deployed and given resources.

`build`, `deploy` (with its resource limits and restart and update policies),
`blkio_config`, `devices`, `gpus`, `ulimits`, `develop` and the lifecycle
hooks (`post_start`, `pre_stop`, ...) rewritten into the long form compose
prints, for `transform`'s service dispatch table.
"""

from __future__ import annotations

from typing import Any

from .errors import Path, SourceMap
from .transform_values import (
    DROP,
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
    ordered,
    string_list,
)
from .yamlfile import go_string


def _devices(value: Any, path: Path, source: SourceMap) -> list[Any]:
    devices: list[Any] = []
    for index, entry in enumerate(value):
        if isinstance(entry, dict):
            devices.append(ordered(entry, ("source", "target", "permissions")))
            continue
        parts = go_string(entry).split(":")
        if len(parts) > 3:
            fail_at(
                source, (*path, index), f"confusing device mapping, please use long syntax: {entry}"
            )
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
                fail_at(
                    source,
                    (*path, index, "count"),
                    f"invalid value {count!r}, the only value allowed is 'all' or a number",
                )
        elif "count" not in request and "device_ids" not in request:
            request["count"] = -1
        if isinstance(request.get("options"), dict):
            request["options"] = label_mapping(
                request["options"], (*path, index, "options"), source
            )
        requests.append(
            ordered(request, ("capabilities", "driver", "count", "device_ids", "options"))
        )
    return requests


def _build(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    if isinstance(value, str):
        return {"context": value}
    build = dict(value)
    for key, convert in _BUILD_KEYS.items():
        if build.get(key) is not None:
            converted = convert(build[key], (*path, key), source)
            if converted is DROP:
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
                fail_at(source, path, f"invalid value {item}, expected key=value")
    return label_mapping(value, path, source)


def _ssh(value: Any, path: Path, source: SourceMap) -> list[str]:
    """build.ssh as compose prints it: `default`, or `ID=PATH`."""
    keys: dict[str, str | None] = {}
    if isinstance(value, dict):
        keys = {k: None if v is None else go_string(v) for k, v in value.items()}
    else:
        for item in string_list(value, path, source):
            key, sep, key_path = go_string(item).partition("=")
            if not sep and key != "default":
                fail_at(source, path, f'invalid ssh key "{item}"', "write ID=PATH or default")
            keys[key] = key_path if sep else None
    return [key if key_path is None else f"{key}={key_path}" for key, key_path in keys.items()]


_BUILD_KEYS: dict[str, Converter] = {
    "args": env_mapping,
    "labels": label_mapping,
    "additional_contexts": _additional_contexts,
    "extra_hosts": host_entries,
    "ssh": _ssh,
    "secrets": file_mounts,
    "ulimits": _ulimits,
    "shm_size": byte_size,
    "cache_from": string_list,
    "cache_to": string_list,
    "no_cache_filter": string_list,
    "tags": string_list,
    "platforms": string_list,
}


def _deploy(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    deploy = dict(value)
    if deploy.get("labels") is not None:
        deploy["labels"] = label_mapping(deploy["labels"], (*path, "labels"), source)
    for key in ("update_config", "rollback_config"):
        update = deploy.get(key)
        if isinstance(update, dict):
            update = dict(update)
            for field in ("delay", "monitor"):
                if update.get(field) is not None:
                    text = duration_text(update[field], (*path, key, field), source)
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
                policy[field] = duration_text(
                    policy[field], (*path, "restart_policy", field), source
                )
        deploy["restart_policy"] = policy
    resources = deploy.get("resources") or {}
    deploy["resources"] = {
        kind: _resource_limits(limits, (*path, "resources", kind), source)
        for kind, limits in resources.items()
        if limits is not None
    }
    deploy.setdefault("placement", {})
    return ordered(
        deploy,
        (
            "mode",
            "replicas",
            "labels",
            "update_config",
            "rollback_config",
            "resources",
            "restart_policy",
            "placement",
            "endpoint_mode",
        ),
    )


def _resource_limits(value: Any, path: Path, source: SourceMap) -> Any:
    if not isinstance(value, dict):
        return value
    limits = dict(value)
    if limits.get("cpus") is not None:
        limits["cpus"] = cpu_count(limits["cpus"], (*path, "cpus"), source)
    if limits.get("memory") is not None:
        memory = byte_size(limits["memory"], (*path, "memory"), source)
        if memory is DROP:
            del limits["memory"]
        else:
            limits["memory"] = memory
    if limits.get("devices") is not None:
        limits["devices"] = _device_requests(limits["devices"], (*path, "devices"), source)
    return ordered(limits, ("cpus", "memory", "pids", "devices", "generic_resources"))


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
                {
                    "Path": entry.get("path", ""),
                    "Rate": byte_size(entry.get("rate", 0), (*path, key, index, "rate"), source),
                }
                for index, entry in enumerate(blkio[key])
            ]
    return blkio


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
            triggers.append(
                ordered(
                    trigger,
                    ("path", "action", "target", "exec", "include", "ignore", "initial_sync"),
                )
            )
        develop["watch"] = triggers
    return develop


def _hook(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    hook = dict(value)
    command = hook.get("command")
    hook["command"] = (
        None if command is None else command_words(command, (*path, "command"), source)
    )
    if hook.get("environment") is not None:
        hook["environment"] = env_mapping(hook["environment"], (*path, "environment"), source)
    return hook


def _hooks(value: Any, path: Path, source: SourceMap) -> list[Any]:
    return [_hook(hook, (*path, index), source) for index, hook in enumerate(value)]
