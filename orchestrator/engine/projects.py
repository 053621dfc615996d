"""What each project should be: `<state root>/stacks/<project>.json`.

`up` stores the project's normalized model here before acting on it, so the
engine can keep converging after the CLI is gone, and a restarted engine
knows what every stack should look like. `down` removes the record.

Only what a container needs from the user's environment is stored (the CLI
sends the variables `environment:`-sourced secrets and configs name, see
`orchestrator.spec.environment.secret_environment`), never the whole
environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runtime.images.store_files import write_atomic
from orchestrator.spec.errors import StackError

_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass
class ProjectRecord:
    name: str
    model: dict[str, Any]
    config_hashes: dict[str, str]
    working_dir: str
    environment: dict[str, str] = field(default_factory=dict)
    updated: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ProjectStore:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, name: str) -> Path:
        if not _PROJECT_NAME.match(name):
            raise StackError(f"invalid project name {name!r}",
                             hint="lowercase letters, digits, dashes and underscores")
        return self.root / f"{name}.json"

    def save(self, record: ProjectRecord) -> None:
        document = record.to_json()
        path = self._path(record.name)
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(path.read_bytes())
            if {**stored, "updated": None} == {**document, "updated": None}:
                return  # the same desired state: no write (and no fsync) at a no-op `up`
        write_atomic(path, json.dumps(document, sort_keys=True).encode(), self.root, mode=0o600)

    def load(self, name: str) -> ProjectRecord | None:
        try:
            document = json.loads(self._path(name).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # damaged: the next `up` rewrites it
        return ProjectRecord(**{k: v for k, v in document.items()
                                if k in ProjectRecord.__dataclass_fields__})

    def names(self) -> list[str]:
        return sorted(p[: -len(".json")] for p in os.listdir(self.root)
                      if p.endswith(".json") and not p.startswith("."))

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)
