"""Profiles: which services a run of `stack` enables.

A service without `profiles` is always enabled; one with profiles is enabled
when any of them is requested, and `*` requests every profile. Disabled
services leave the model together with the networks, volumes, secrets and
configs only they used. An enabled service that depends on a disabled one is
not fixed up here: like compose, the model check reports it as a dependency
on an undefined service.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .normalize import prune_unused_resources

ALL_PROFILES = "*"


def all_profiles(data: dict) -> list[str]:
    """Every profile any service declares, sorted (what `config --profiles` lists)."""
    declared: set[str] = set()
    for service in (data.get("services") or {}).values():
        declared.update(_profiles_of(service))
    return sorted(declared)


def active_profiles(data: dict, requested: Iterable[str]) -> set[str]:
    """The profiles enabled by `--profile` flags / COMPOSE_PROFILES.

    Blank entries (from `COMPOSE_PROFILES=a,,b`) are ignored; `*` expands to
    every declared profile and stays in the set so that `apply_profiles`
    enables services whatever profiles they name.
    """
    active = {name.strip() for name in requested if name.strip()}
    if ALL_PROFILES in active:
        active.update(all_profiles(data))
    return active


def is_enabled(service: Any, profiles: set[str]) -> bool:
    """Whether a service runs with the active `profiles`."""
    declared = _profiles_of(service)
    return not declared or ALL_PROFILES in profiles or not profiles.isdisjoint(declared)


def apply_profiles(data: dict, profiles: set[str]) -> dict:
    """The document without the services the active `profiles` disable.

    Works on a document before or after `normalize`; either way, resources
    that only disabled services used are dropped, as compose does.
    """
    services = data.get("services") or {}
    enabled = {name: service for name, service in services.items()
               if is_enabled(service, profiles)}
    if len(enabled) == len(services):
        return data
    result = {**data, "services": enabled}
    prune_unused_resources(result)
    return result


def disabled_services(data: dict, profiles: set[str]) -> dict[str, Any]:
    """The services `apply_profiles` removes, by name (for the model check's messages)."""
    services = data.get("services") or {}
    return {name: service for name, service in services.items()
            if not is_enabled(service, profiles)}


def _profiles_of(service: Any) -> list[str]:
    if not isinstance(service, dict):
        return []
    declared = service.get("profiles") or []
    if isinstance(declared, str):
        return [declared]
    return [str(name) for name in declared] if isinstance(declared, list) else []
