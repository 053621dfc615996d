"""POST /v1/stacks/load: the engine loads a stack file on a CLI's behalf.

Why the engine and not the CLI: loading needs the YAML parser and the whole
stack-file package, and importing them costs a fresh CLI process several
times what the load itself does (tens of milliseconds, most of a no-op `up`).
The engine has them imported once. The CLI sends what it knows that the
engine does not — its working directory, its environment and its
command-line options — and gets back exactly what a local load returns. The
engine runs as root on the same host, so it reads the same files the CLI
names; only `-f -` (stdin) stays a local load, in the CLI.
"""

from __future__ import annotations

import os
from typing import Any

import trio

from orchestrator.engine.http import HttpError, Request, Response, Router
from orchestrator.spec.discovery import ProjectOptions
from orchestrator.spec.errors import StackError
from orchestrator.spec.loader import load_stack

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "cwd": str, "environment": dict, "files": list, "project_directory": (str, type(None)),
    "project_name": (str, type(None)), "env_files": list, "profiles": list,
}


def add_stack_routes(router: Router) -> None:
    loads = StackLoads()
    router.add("POST", "/v1/stacks/load", loads.load, max_body=4 * 1024 * 1024)


class StackLoads:
    def __init__(self) -> None:
        # One load at a time: `include:` keeps the files being included in
        # module state, and a load is a few milliseconds of CPU anyway.
        self._lock = trio.Lock()

    async def load(self, request: Request) -> Response:
        body = request.json_object(_FIELDS, required=("cwd", "environment"))
        options = ProjectOptions(
            files=_strings(body, "files"),
            project_directory=body.get("project_directory"),
            project_name=body.get("project_name"),
            env_files=_strings(body, "env_files"),
            profiles=_strings(body, "profiles"),
            environ=_environment(body["environment"]),
            cwd=_directory(body["cwd"]),
        )
        async with self._lock:
            stack = await trio.to_thread.run_sync(_load, options)
        services = stack.model.get("services") or {}
        return Response({
            "name": stack.name, "directory": stack.directory, "files": stack.files,
            "model": stack.model, "warnings": stack.warnings,
            "config_hashes": {name: stack.config_hash(name) for name in services},
        })


def _load(options: ProjectOptions) -> Any:
    try:
        return load_stack(options)
    except StackError as error:
        error.name_files_relative_to(options.cwd or "/")
        raise


def _strings(body: dict[str, Any], key: str) -> list[str]:
    values = body.get(key) or []
    if not all(isinstance(value, str) for value in values):
        raise HttpError(400, f"request body: {key}: expected a list of strings")
    if "-" in values and key == "files":
        raise HttpError(400, "request body: files: the engine cannot read the CLI's stdin")
    return list(values)


def _environment(value: dict[str, Any]) -> dict[str, str]:
    if not all(isinstance(v, str) for v in value.values()):
        raise HttpError(400, "request body: environment: expected string values")
    return {str(k): v for k, v in value.items()}


def _directory(cwd: str) -> str:
    if not os.path.isabs(cwd):
        raise HttpError(400, f"request body: cwd: expected an absolute path, got {cwd!r}")
    return cwd
