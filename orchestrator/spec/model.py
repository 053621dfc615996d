"""The loaded stack: one validated, normalized model and facts derived from it.

The model is plain JSON-shaped data, key for key what `docker compose config
--format json` prints, so it serializes canonically, hashes stably and is
readable by anyone who knows compose. `Stack` wraps it read-only with the
few things the engine asks of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .errors import Path, SourceMap

# Service keys the engine implements (or is planned to in the open issues).
# Anything else is valid and kept, and `stack config` lists it as not
# implemented yet, so nobody is surprised that it has no effect.
ENGINE_SERVICE_KEYS = frozenset({
    "build", "cap_add", "cap_drop", "command", "configs", "container_name", "cpu_shares",
    "cpus", "cpuset", "depends_on", "deploy", "dns", "dns_search", "dns_opt", "domainname",
    "entrypoint", "env_file", "environment", "expose", "extends", "extra_hosts", "group_add",
    "healthcheck", "hostname", "image", "init", "ipc", "labels", "links", "logging",
    "mac_address", "mem_limit",
    "mem_reservation", "memswap_limit", "network_mode", "networks", "pid", "pids_limit",
    "platform", "ports", "privileged", "profiles", "pull_policy", "read_only", "restart",
    "scale", "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period",
    "stop_signal", "sysctls", "tmpfs", "tty", "ulimits", "user", "volumes", "volumes_from",
    "working_dir", "x-stack",
})
ENGINE_DEPLOY_KEYS = frozenset({"replicas", "resources", "restart_policy"})
# Keys compose itself always prints, present whether or not the user wrote them.
_ALWAYS_PRESENT = frozenset({"command", "entrypoint"})


class Stack:
    """A loaded project: its name, directory, files and normalized model."""

    __slots__ = ("name", "directory", "files", "model", "source", "warnings", "declared_profiles")

    def __init__(
        self,
        name: str,
        directory: str,
        files: list[str],
        model: dict[str, Any],
        source: SourceMap,
        warnings: list[str],
        declared_profiles: list[str],
    ) -> None:
        self.name = name
        self.directory = directory
        self.files = files
        self.model = model
        self.source = source
        self.warnings = warnings
        self.declared_profiles = declared_profiles  # of every service, enabled or not

    @property
    def services(self) -> Mapping[str, Any]:
        return MappingProxyType(self.model.get("services") or {})

    def canonical_json(self) -> str:
        return canonical_json(self.model)

    def config_hash(self, service: str) -> str:
        """A digest of what makes the service's container: equal hashes, no recreate.

        The replica count is left out: scaling adds or removes containers,
        it does not change the ones that exist.
        """
        config = dict(self.model["services"][service])
        config.pop("scale", None)
        if isinstance(config.get("deploy"), dict):
            config["deploy"] = {k: v for k, v in config["deploy"].items() if k != "replicas"}
        return hashlib.sha256(canonical_json(config).encode()).hexdigest()

    def unimplemented_keys(self) -> list[Path]:
        """Key paths the file uses that the engine does not act on yet."""
        found: list[Path] = []
        services = self.model.get("services")
        for name, service in services.items() if isinstance(services, dict) else ():
            if not isinstance(service, dict):
                continue
            for key, value in service.items():
                if key in _ALWAYS_PRESENT or key.startswith("x-") and key != "x-stack":
                    continue
                if key not in ENGINE_SERVICE_KEYS:
                    found.append(("services", name, key))
                elif key == "deploy" and isinstance(value, dict):
                    found.extend(
                        ("services", name, "deploy", sub)
                        for sub in value
                        if sub not in ENGINE_DEPLOY_KEYS and value[sub] not in ({}, None)
                    )
        return found


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

