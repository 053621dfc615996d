"""Converters for the value spellings that many keys share.

A `KEY=VALUE` list or mapping, a duration, a byte size, a CPU count, a command
line, a list of extra hosts, a secret or config mount: compose accepts each
spelling wherever the value appears (a service's `environment` and a build's
`args`, a service's `labels` and a deploy's), so the service converters in
`transform` and the build, deploy and hook converters in `transform_runtime`
both use these. Every converter has the `Converter` signature and turns a
user's mistake into a `StackError` located at the key.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .errors import Path, SourceMap
from .shortsyntax import split_command
from .units import canonical_duration, parse_bytes
from .yamlfile import go_string

DROP = object()
"""Returned by a converter when compose would print nothing for the key."""


Converter = Callable[[Any, Path, SourceMap], Any]


def fail_at(source: SourceMap, path: Path, message: str, hint: str | None = None) -> None:
    raise source.error(path, message, hint)


def env_mapping(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    """environment / build.args: `B` alone means "take it from the shell" (null)."""
    return key_value_mapping(value, path, source, missing=None)


def label_mapping(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    """labels, annotations, sysctls, ...: string values, a bare key means ""."""
    return key_value_mapping(value, path, source, missing="")


def key_value_mapping(
    value: Any, path: Path, source: SourceMap, missing: str | None
) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            pairs[key] = missing if item is None else go_string(item)
    elif isinstance(value, list):
        for item in value:
            key, sep, text = go_string(item).partition("=")
            pairs[key] = text if sep else missing
    else:
        fail_at(source, path, "expected a list of KEY=VALUE strings or a mapping")
    return dict(sorted(pairs.items()))


def option_mapping(value: Any, path: Path, source: SourceMap) -> dict[str, Any]:
    """driver_opts, logging options: every value is a string."""
    if not isinstance(value, dict):
        fail_at(source, path, "expected a mapping")
    return {key: go_string(item) for key, item in sorted(value.items())}


def host_entries(value: Any, path: Path, source: SourceMap) -> list[str]:
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
                fail_at(
                    source,
                    (*path, index),
                    f"invalid additional host, missing IP: {text}",
                    "write HOST=IP",
                )
    else:
        fail_at(source, path, "expected a list of HOST=IP strings or a mapping")
    entries = []
    for host, ips in hosts.items():
        if not host or ":" in host or "=" in host:
            fail_at(source, path, f"bad host name '{host}'")
        for ip in ips:
            if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
                ip = ip[1:-1]
            entries.append(f"{host}={ip}")
    return sorted(entries)


MOUNT_ORDER = ("source", "target", "uid", "gid", "mode")


def file_mounts(value: Any, path: Path, source: SourceMap) -> list[Any]:
    """secrets / configs: `name` is `{source: name}`; mode prints in octal."""
    mounts: list[Any] = []
    for index, entry in enumerate(value):
        if isinstance(entry, str):
            mounts.append({"source": entry})
            continue
        if not isinstance(entry, dict):
            fail_at(source, (*path, index), "expected a name or a mapping")
        mount = dict(entry)
        for key in ("uid", "gid"):
            if key in mount and mount[key] is not None:
                mount[key] = go_string(mount[key])
        if mount.get("mode") is not None:
            mount["mode"] = file_mode(mount["mode"], (*path, index, "mode"), source)
        mounts.append(ordered(mount, MOUNT_ORDER))
    return mounts


def file_mode(value: Any, path: Path, source: SourceMap) -> str:
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            fail_at(source, path, f"invalid file mode {value!r}", "write it in octal, like 0440")
    return f"0{value:o}" if value >= 0 else f"-0{-value:o}"


def command_words(value: Any, path: Path, source: SourceMap) -> list[str]:
    if isinstance(value, list):
        return [go_string(word) for word in value]
    try:
        return split_command(go_string(value))
    except ValueError as exc:
        fail_at(source, path, str(exc), "check the quotes, or write the command as a list")
    return []


def duration_text(value: Any, path: Path, source: SourceMap) -> str:
    try:
        return canonical_duration(value)
    except ValueError as exc:
        fail_at(source, path, str(exc), "write a duration like 10s, 1m30s or 500ms")
    return ""


def byte_size(value: Any, path: Path, source: SourceMap) -> Any:
    """A size as compose prints it: `512m` -> `"536870912"`.

    compose silently ignores a size written as a YAML float (`1.5`): so do we.
    """
    if isinstance(value, float):
        return DROP
    try:
        return str(parse_bytes(value))
    except ValueError as exc:
        fail_at(source, path, str(exc), "write a size like 512m, 1g or 1024k")
    return ""


def cpu_count(value: Any, path: Path, source: SourceMap) -> int | float:
    """A CPU count, printed as compose's float32 is (`0.123456789` -> 0.12345679)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        fail_at(source, path, f"invalid CPU count {value!r}", "write a number like 0.5")
    single = struct.unpack("f", struct.pack("f", number))[0]
    for digits in range(1, 10):
        shortest = float(f"{single:.{digits}g}")
        if struct.unpack("f", struct.pack("f", shortest))[0] == single:
            break
    return int(shortest) if shortest.is_integer() else shortest


def string_list(value: Any, path: Path, source: SourceMap) -> list[Any]:
    return [value] if isinstance(value, str) else value


def ordered(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """`mapping` with compose's field order first, any other keys (x-...) after."""
    result = {key: mapping[key] for key in order if key in mapping}
    for key, value in mapping.items():
        if key not in result:
            result[key] = value
    return result
