"""Resolve top-level `include`: other stack files brought in as sub-projects.

Each entry names one file, or a list of files merged like `-f a -f b`, with an
optional `project_directory` (what its relative paths are relative to; by
default the first file's directory) and `env_file` (the variables its
interpolation sees; by default the `.env` of that directory, when it exists).
The included project is loaded on its own, its own includes too, and then its
services, networks, volumes, secrets, configs and models are added to the
including file. Its `name` and `x-*` keys are not. A resource the including
file defines as well is an error unless both definitions are identical.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .errors import Path, StackError
from .merge import Merger
from .yamlfile import Document

LoadProject = Callable[[list[str], str, list[str]], Document]
"""`(files, project_directory, env_files) -> Document`: the files read, merged and
included in turn, interpolated with the environment plus `env_files`."""

IMPORTED = ("services", "volumes", "networks", "secrets", "configs", "models")

# The files whose includes are being loaded right now, outermost first: a file
# that includes one of them again closes a loop. Loading is single-threaded
# and nested through load_project, so a stack held across calls is enough.
_including: list[str] = []


def apply_include(
    document: Document, load_project: LoadProject, base_dir: str | None = None
) -> Document:
    """`document` with its `include` entries loaded and their resources added.

    The `include` key is removed. Relative paths in an entry (`path`,
    `project_directory`, `env_file`) are relative to `base_dir`, the including
    file's project directory (as for its other paths); by default the including
    file's own directory. The input document is not changed.
    """
    data = document.data
    if "include" not in data:
        return document
    entries = data["include"]
    result = {key: value for key, value in data.items() if key != "include"}
    if entries is None:
        return document._replace(data=result)
    if not isinstance(entries, list):
        raise document.source.error(("include",), "include must be a list of files")
    source = document.source.rebase((), ())
    _including.append(document.filename)
    try:
        for index, entry in enumerate(entries):
            files, directory, env_files = _read_entry(document, index, entry, base_dir)
            cycle = _loop_through(files[0])
            if cycle is not None:
                raise document.source.error(
                    ("include", index),
                    "files include each other in a loop: " + " -> ".join(cycle),
                    hint="remove one of these includes",
                )
            included = load_project(files, directory, env_files)
            _import(document, included, result, source, index, files[0])
    finally:
        _including.pop()
    return document._replace(data=result, source=source)


def _read_entry(
    document: Document, index: int, entry: Any, base_dir: str | None
) -> tuple[list[str], str, list[str]]:
    """(files, project directory, env files) of one include entry, all absolute."""
    at: Path = ("include", index)
    if base_dir is None:
        base_dir = os.path.dirname(document.filename)
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict):
        raise document.source.error(at, "an include entry is a file path or a mapping with `path`")
    paths = entry.get("path")
    if isinstance(paths, str):
        paths = [paths]
    if not paths or not isinstance(paths, list):
        raise document.source.error(at, "an include entry needs a `path`")
    files = []
    for position, path in enumerate(paths):
        file = os.path.normpath(os.path.join(base_dir, str(path)))
        if not os.path.isfile(file):
            where = _written(document, (*at, "path", position))
            raise document.source.error(where, f"the included file does not exist: {path}")
        files.append(file)

    directory = entry.get("project_directory")
    if directory is None or directory == "":
        directory = os.path.dirname(files[0])
    else:
        directory = os.path.normpath(os.path.join(base_dir, str(directory)))

    env_files = entry.get("env_file")
    if env_files is None:
        default = os.path.join(directory, ".env")
        return files, directory, [default] if os.path.isfile(default) else []
    if isinstance(env_files, str):
        env_files = [env_files]
    resolved = []
    for position, env_file in enumerate(env_files):
        if env_file == "/dev/null":
            continue
        path = os.path.normpath(os.path.join(base_dir, str(env_file)))
        if not os.path.isfile(path):
            where = _written(document, (*at, "env_file", position))
            raise document.source.error(where, f"the env file does not exist: {env_file}")
        resolved.append(path)
    return files, directory, resolved


def _written(document: Document, path: Path) -> Path:
    """`path`, or its nearest ancestor the user wrote (a short form has fewer levels)."""
    while len(path) > 2 and path not in document.source:
        path = path[:-1]
    return path


def _loop_through(file: str) -> list[str] | None:
    if file not in _including:
        return None
    start = _including.index(file)
    return [os.path.basename(f) for f in (*_including[start:], file)]


def _import(
    document: Document,
    included: Document,
    result: dict[str, Any],
    source: Any,
    index: int,
    file: str,
) -> None:
    """Add the included resources to `result`; a clashing definition is an error."""
    take = Merger(included.source, source, set()).take
    for kind in IMPORTED:
        resources = included.data.get(kind)
        if not isinstance(resources, dict) or not resources:
            continue
        own = result.get(kind)
        merged = dict(own) if isinstance(own, dict) else {}
        for name, definition in resources.items():
            if name in merged:
                if merged[name] == definition:
                    continue
                raise _conflict(document, kind, name, index, file)
            merged[name] = take(definition, (kind, name), (kind, name))
        result[kind] = merged


def _conflict(document: Document, kind: str, name: str, index: int, file: str) -> StackError:
    where: Path = (kind, name) if (kind, name) in document.source else ("include", index)
    return document.source.error(
        where,
        f"{kind}.{name} conflicts with the definition imported from {os.path.basename(file)}",
        hint="rename one of them, or define it in one file only",
    )
