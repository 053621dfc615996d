"""Client of the OCI distribution API (registries): transport, auth and protocol.

Pull and push orchestration into the image store live elsewhere and call
`RegistryClient`; credentials come from Docker's `config.json`.
"""

from orchestrator.runtime.images.registry.client import FetchedManifest, RegistryClient
from orchestrator.runtime.images.registry.credentials import (
    Credentials,
    docker_config_path,
    load_credentials,
    remove_credentials,
    save_credentials,
)

__all__ = [
    "Credentials",
    "FetchedManifest",
    "RegistryClient",
    "docker_config_path",
    "load_credentials",
    "remove_credentials",
    "save_credentials",
]
