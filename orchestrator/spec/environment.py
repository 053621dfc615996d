"""How a service's environment and labels are assembled.

A service's `environment` is its env files read in order, then its own
`environment` on top, with bare names taken from the project environment;
its `labels` are its label files read in order, then its own `labels` on
top. The normalize stage calls these once all files are merged and profiles
applied, so only enabled services' files are read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .errors import SourceMap, Warnings


def resolve_environment(
    service: dict,
    path: tuple,
    environment: Mapping[str, str],
    source: SourceMap,
    warnings: Warnings | None,
) -> dict | None:
    """`environment` with env files read in and bare names taken from the project's.

    Precedence, lowest first: earlier env files, later env files, the
    service's own `environment`. A bare name (`FOO` with no value) takes the
    project environment's value, or stays null when it has none — and a null
    still overrides an env file's value, as in compose.
    """
    env_files = service.pop("env_file", None)
    own = as_mapping(service.get("environment"))
    if own is None and not env_files:
        return None
    own = own or {}
    for key, value in own.items():
        if value is None and key in environment:
            own[key] = environment[key]
    if not env_files:
        return dict(sorted(own.items()))

    from .dotenv import read_dotenv

    defined = {key: value for key, value in own.items() if value is not None}
    merged = dict(defined)
    for index, (file, required, raw) in enumerate(_env_file_entries(env_files)):
        if not os.path.exists(file):
            if required:
                raise source.error(
                    (*path, "env_file", index),
                    f"env file {file} not found",
                    hint="create it, or mark the entry `required: false`",
                )
            continue
        # A ${VAR} in an env file looks first in the project environment,
        # then in the service's own environment, then in what earlier env
        # files defined.
        merged.update(
            read_dotenv(file, {**defined, **environment}, warnings, earlier=merged, raw=raw)
        )
    merged.update(own)
    return dict(sorted(merged.items()))


def _env_file_entries(env_files: Any) -> list[tuple[str, bool, bool]]:
    """(path, required, raw format) for each `env_file` entry."""
    entries = env_files if isinstance(env_files, list) else [env_files]
    result = []
    for entry in entries:
        if isinstance(entry, dict):
            required = entry.get("required", True) is not False
            result.append((str(entry.get("path", "")), required, entry.get("format") == "raw"))
        else:
            result.append((str(entry), True, False))
    return result


def resolve_labels(service: dict, path: tuple, source: SourceMap) -> dict | None:
    """`labels` with label files read in first; the service's own labels win."""
    label_files = service.pop("label_file", None)
    own = as_mapping(service.get("labels"))
    if not label_files:
        return None if own is None else dict(sorted(own.items()))

    from .dotenv import read_dotenv

    merged: dict[str, Any] = {}
    files = label_files if isinstance(label_files, list) else [label_files]
    for index, file in enumerate(files):
        if not os.path.exists(file):
            raise source.error(
                (*path, "label_file", index), f"label file {file} not found",
                hint="create it, or remove it from label_file",
            )
        merged.update(read_dotenv(file, dict(merged)))
    merged.update(own or {})
    return dict(sorted(merged.items()))


def as_mapping(value: Any) -> dict | None:
    """A `KEY=value` list or a mapping as a fresh mapping (a bare `KEY` maps to None)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return dict(value)
    mapping: dict[str, Any] = {}
    for item in value:
        key, sep, text = str(item).partition("=")
        mapping[key] = text if sep else None
    return mapping


def secret_environment(model: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that `environment:`-sourced secrets and configs read, from `environ`."""
    wanted = {
        str(item["environment"])
        for kind in ("secrets", "configs")
        for item in (model.get(kind) or {}).values()
        if isinstance(item, Mapping) and item.get("environment")
    }
    return {name: environ[name] for name in sorted(wanted) if name in environ}
