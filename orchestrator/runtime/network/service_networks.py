"""Which networks a service's container joins, read from the normalized model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.runtime.network.manager import Attachment

# network_mode values under which the container gets no network of ours
_NO_BRIDGE = ("none", "host")


def service_attachments(
    service: Mapping[str, Any], service_name: str, project_model: Mapping[str, Any]
) -> list[Attachment]:
    """The service's networks (by their real names), with aliases, static addresses,
    MAC and priority; none under `network_mode: none|host`."""
    mode = str(service.get("network_mode") or "")
    if mode in _NO_BRIDGE or mode.startswith(("service:", "container:")):
        return []  # none, the host's, or another container's network namespace
    declared = project_model.get("networks") or {}
    attachments = []
    for key, options in (service.get("networks") or {}).items():
        options = options or {}
        declaration = declared.get(key) or {}
        real = str(declaration.get("name") or key)
        attachments.append(Attachment(
            network=real,
            aliases=tuple(str(a) for a in options.get("aliases") or ()),
            ipv4_address=str(options.get("ipv4_address") or ""),
            mac_address=str(options.get("mac_address") or service.get("mac_address") or ""),
            priority=int(options.get("priority") or 0),
        ))
    return attachments
