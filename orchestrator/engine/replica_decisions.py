"""What `up` does with each replica of one service: create, recreate, start, restart or keep.

This is the half of the planner that judges, replica by replica, and says why
in the words a user reads; turning those decisions into ordered actions is
`plan_actions`'. Kept apart so that each rule below reads as one `elif` and can
be changed without touching how prerequisites are wired.

The rules are Docker Compose's convergence, per replica number 1..n:
- no container: create it, then start it;
- a different config hash: recreate it. The new container takes the old one's
  name, so the old one is stopped and removed first (compose creates under a
  temporary name and renames; one name at a time is simpler and cannot leak);
- same hash, but it joined the namespace of a service being recreated: recreate it;
- same hash but not running: start it;
- running, but a `depends_on` with `restart: true` is recreated: restart it;
- running and unchanged: nothing, so a second `up` plans no action at all.
Containers numbered past n are removed, highest first, and so are the extra
containers a crash mid-`up` may leave under one number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.engine.plan_types import ContainerSummary, Desired
from orchestrator.spec.errors import StackError, format_path
from orchestrator.spec.graph import NAMESPACE_KEYS

_SHOWN = 3  # names a reason lists before it says "and N more"


@dataclass
class ReplicaDecision:
    number: int
    name: str  # the name it has, or will have once (re)created
    op: str  # create | recreate | start | restart | keep
    detail: str
    container: ContainerSummary | None


@dataclass
class ServiceDecision:
    count: int
    replicas: list[ReplicaDecision]
    surplus: list[tuple[ContainerSummary, str]]  # to stop and remove, and why

    @property
    def recreated(self) -> bool:
        return any(r.op == "recreate" for r in self.replicas)

    @property
    def changes(self) -> bool:
        """Whether any replica is created, recreated, started or restarted."""
        return any(r.op != "keep" for r in self.replicas)


def replica_count(name: str, service: Mapping[str, Any], override: int | None = None) -> int:
    """How many containers a service runs: `--scale`, else deploy.replicas, else scale, else 1."""
    deploy = service.get("deploy")
    count = override
    if count is None and isinstance(deploy, Mapping):
        count = deploy.get("replicas")
    if count is None:
        count = service.get("scale")
    if count is None:
        count = 1
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise StackError(f"service {name}: the number of replicas must be 0 or more, not {count}")
    if count > 1 and service.get("container_name"):
        raise StackError(
            f'service {name} has container_name "{service["container_name"]}", '
            f"so it can't run {count} containers",
            hint="remove container_name to scale it",
        )
    return count


def decide_service(name: str, desired: Desired, count: int,
                   containers: list[ContainerSummary],
                   decided: dict[str, ServiceDecision]) -> ServiceDecision:
    """What happens to each of `count` replicas of `name`, given its existing containers.

    `decided` holds the services decided before it (its dependencies come first),
    since a recreated dependency can force a recreate or a restart here.
    """
    options = desired.options
    service = desired.model["services"][name]
    wanted = desired.config_hashes[name]
    by_number: dict[int, list[ContainerSummary]] = {}
    for c in containers:
        by_number.setdefault(c.number, []).append(c)
    shared = _shared_namespace_recreated(service, decided)
    restart_for = [dep for dep, entry in (service.get("depends_on") or {}).items()
                   if (entry or {}).get("restart") and dep in decided and decided[dep].recreated]
    replicas: list[ReplicaDecision] = []
    duplicates: list[tuple[ContainerSummary, str]] = []
    for number in range(1, count + 1):
        # After a crash mid-`up` a number can have two containers: keep the best one.
        candidates = sorted(by_number.pop(number, []), key=lambda c: (
            c.config_hash != wanted, c.status != "running", c.status != "paused", c.id))
        c = candidates[0] if candidates else None
        duplicates += [(other, f"duplicate of {c.name}") for other in candidates[1:]]
        fresh = service.get("container_name") or f"{desired.project}-{name}-{number}"
        if c is None:
            op, detail = "create", f"scale up to {count}" if containers else ""
        elif options.force_recreate:
            op, detail = "recreate", "--force-recreate"
        elif c.config_hash != wanted and not options.no_recreate:
            op, detail = "recreate", what_changed(desired.known_configs.get(c.config_hash),
                                                  service)
        elif shared and not options.no_recreate:
            op, detail = "recreate", shared
        elif c.status in ("created", "exited") and not options.no_start:
            op = "start"
            detail = "created, never started" if c.status == "created" else (
                f"exited ({c.exit_code})" if c.exit_code is not None else "exited")
        elif restart_for and c.status == "running" and not options.no_start:
            was = "was" if len(restart_for) == 1 else "were"
            op, detail = "restart", f"{', '.join(restart_for)} {was} recreated"
        else:
            op, detail = "keep", ""
        replicas.append(ReplicaDecision(number, fresh if op in ("create", "recreate") else c.name,
                                        op, detail, c))
    surplus = [(c, f"scale down to {count}")
               for number in sorted(by_number, reverse=True) for c in by_number[number]]
    return ServiceDecision(count, replicas, surplus + duplicates)


def _shared_namespace_recreated(service: Mapping[str, Any],
                                decided: dict[str, ServiceDecision]) -> str:
    """Why a container must follow a recreated one whose namespace it joined, or ""."""
    for key in NAMESPACE_KEYS:
        value = service.get(key)
        if isinstance(value, str) and value.startswith("service:"):
            dep = value.removeprefix("service:")
            if dep in decided and decided[dep].recreated:
                return f"{dep} was recreated and this service shares its " \
                       f"{key.removesuffix('_mode')} namespace"
    return ""


# ---- why a recreation ----------------------------------------------------------------------


def what_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """`environment.DEBUG changed`: the first key paths where two service configs differ."""
    if old is None:
        return "config changed"
    found: list[tuple[str | int, ...]] = []
    _diff(_without_replicas(old), _without_replicas(new), (), found)
    paths = [format_path(path) for path in found if path]
    if not paths:
        return "config changed"
    return f"{listing(paths)} changed"


def listing(names: Sequence[str]) -> str:
    """`a, b, c and 2 more`: a few names, so that a reason stays one short line."""
    text = ", ".join(names[:_SHOWN])
    return f"{text} and {len(names) - _SHOWN} more" if len(names) > _SHOWN else text


_ABSENT = object()


def _diff(old: Any, new: Any, path: tuple[str | int, ...], found: list) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            _diff(old.get(key, _ABSENT), new.get(key, _ABSENT), (*path, key), found)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            _diff(a, b, (*path, index), found)
    elif old is _ABSENT or new is _ABSENT or old != new:
        found.append(path)


def _without_replicas(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as its hash sees it: the replica count is not part of a container."""
    config = {k: v for k, v in config.items() if k != "scale"}
    if isinstance(config.get("deploy"), Mapping):
        config["deploy"] = {k: v for k, v in config["deploy"].items() if k != "replicas"}
    return config
