"""The stack file, loaded by the engine for the verbs that talk to it anyway.

A CLI process that loaded the file itself would import the YAML parser and
the whole stack-file package first, which costs more than the rest of a
no-op `up` or a `run --rm` together; the engine has them imported already
(orchestrator/engine/api_stacks.py). `stack config` still loads locally: it
must work with no engine at all. `-f -` is read here too: the engine cannot
read this process's stdin.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from orchestrator.cli.engine_client import EngineClient


class LoadedStack:
    """What the engine answered: the same facts a local `Stack` gives the CLI."""

    __slots__ = ("name", "directory", "files", "model", "warnings", "_hashes")

    def __init__(self, answer: Mapping[str, Any]) -> None:
        self.name: str = answer["name"]
        self.directory: str = answer["directory"]
        self.files: list[str] = answer["files"]
        self.model: dict[str, Any] = answer["model"]
        self.warnings: list[str] = answer["warnings"]
        self._hashes: dict[str, str] = answer["config_hashes"]

    @property
    def services(self) -> Mapping[str, Any]:
        return self.model.get("services") or {}

    def config_hash(self, service: str) -> str:
        return self._hashes[service]


def load_stack(args: argparse.Namespace, client: EngineClient | None = None) -> Any:
    """The project as `stack config` would load it (a `LoadedStack` or a `Stack`);
    warnings go to stderr."""
    if "-" in args.files:
        from orchestrator.cli.config import _load

        return _load(args)
    if client is None:
        from orchestrator.cli.stack_commands import connect

        client = connect()
    _, answer = client.request("POST", "/v1/stacks/load", {
        "cwd": os.getcwd(), "environment": dict(os.environ), "files": list(args.files),
        "project_directory": args.project_directory, "project_name": args.project_name,
        "env_files": list(args.env_files), "profiles": list(args.profiles),
    })
    stack = LoadedStack(answer)
    for message in stack.warnings:
        print(f"warning: {message}", file=sys.stderr)
    return stack
