"""What the planner takes and gives: containers as they are, the desired state, actions.

Plain frozen values (the planner is pure), each with `to_json` for the API,
and `describe`, which prints a plan the way `up --dry-run` shows it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

ACTION_KINDS = frozenset({
    "ensure_network", "ensure_volume", "create", "start", "stop", "remove", "restart",
    "wait_healthy", "wait_completed", "remove_network", "remove_volume",
})


@dataclass(frozen=True)
class ContainerSummary:
    """One existing container of the project, as its compose labels and its state say."""

    id: str
    name: str
    service: str
    number: int
    config_hash: str
    status: str  # created | running | paused | exited
    exit_code: int | None = None
    oneoff: bool = False
    # "" (no healthcheck) | starting | healthy | unhealthy. Plans never depend on it: health
    # can change before a wait runs, so the scheduler checks it then.
    health: str = ""


@dataclass(frozen=True)
class Actual:
    """What exists now. `networks` and `volumes` are the names present on the host, or
    None when the caller did not look: then each one a changing container uses is ensured."""

    containers: Sequence[ContainerSummary] = ()
    networks: Collection[str] | None = None
    volumes: Collection[str] | None = None


@dataclass(frozen=True)
class UpOptions:
    """The flags of `up` that change the plan; `scale` is `--scale` as {service: count}."""

    force_recreate: bool = False
    no_recreate: bool = False
    no_start: bool = False
    no_deps: bool = False
    remove_orphans: bool = False
    scale: Mapping[str, int] = field(default_factory=dict)
    timeout: int | None = None


@dataclass(frozen=True)
class Desired:
    """What the project should look like.

    `config_hashes` holds `Stack.config_hash(service)` for every service: the
    planner compares hashes, it never computes one. `services` is the selection
    (empty: all). `known_configs` maps a config hash to the service config it was
    made from, as far as the engine remembers, so that a recreation can say what
    changed. `disabled_services` are in the file but switched off by profiles:
    their containers are not orphans.
    """

    project: str
    model: Mapping[str, Any]
    config_hashes: Mapping[str, str]
    services: Sequence[str] = ()
    options: UpOptions = field(default_factory=UpOptions)
    known_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    disabled_services: Collection[str] = ()


@dataclass(frozen=True)
class Condition:
    """What a wait action waits for: every listed replica of its service meets `kind`."""

    kind: str  # service_healthy | service_completed_successfully
    numbers: tuple[int, ...]
    containers: tuple[str, ...]  # their names, for messages


@dataclass(frozen=True)
class Action:
    """One step of a plan.

    It may run once every action in `after` has succeeded; one listed in
    `optional` as well (a `required: false` dependency) only orders it: its
    failure does not block this action.
    """

    id: str
    kind: str  # one of ACTION_KINDS
    reason: str  # the sentence a user reads: "recreate web: environment.DEBUG changed"
    change: str  # what describe() calls it: Create, Recreate, Start, Stop, Remove, ...
    detail: str = ""  # why, in a few words
    service: str | None = None
    number: int | None = None
    container_id: str | None = None  # the existing container it acts on
    name: str | None = None  # the container's name, or the network's or volume's
    after: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    condition: Condition | None = None  # wait_healthy and wait_completed only
    external: bool = False  # ensure_*: only check that it exists, never create it
    timeout: int | None = None  # stop, restart: seconds before SIGKILL (None: the service's)
    remove_volumes: bool = False  # remove: its anonymous volumes too (`down -v`)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """Actions in an order where each comes after its prerequisites; no actions: no change."""

    project: str
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Containers left running as they are: compose shows them as `Running` at an `up`.
    running: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "actions": [a.to_json() for a in self.actions],
                "warnings": list(self.warnings), "running": list(self.running)}


# ---- dry run -------------------------------------------------------------------------------


def describe(plan: Plan) -> list[str]:
    """One line per change, compose's dry-run style: `Container p-web-1  Recreate (why)`.

    The steps of one change (stop, remove and create of a recreation) make one line.
    Warnings are not included: the caller shows them as warnings.
    """
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    for action in plan.actions:
        if action.condition is not None:
            labels = [f"Container {name}" for name in action.condition.containers]
        elif action.kind.endswith("_network"):
            labels = [f"Network {action.name}"]
        elif action.kind.endswith("_volume"):
            labels = [f"Volume {action.name}"]
        else:
            labels = [f"Container {action.name}"]
        for label in labels:
            if (label, action.change) in seen:
                continue
            seen.add((label, action.change))
            detail = f" ({action.detail})" if action.detail else ""
            lines.append(f"{label}  {action.change}{detail}")
    return lines
