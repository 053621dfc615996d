"""The reconcile planner: what to do so that a project's containers match its stack file.

Pure, the way h11 is: it takes the desired state (the normalized model, one
config hash per service, the options of `up`) and the actual containers, and
returns actions, each with the actions it waits for and the reason a user
reads. It never touches the runtime, so `up --dry-run` shows exactly what
`up` would do and every rule is tested in milliseconds.

This module is the planner's face: `plan_up` picks the services (the selection
and, unless --no-deps, what they depend on), decides them in start order and
deals with orphans; `plan_down` tears a project down, dependents first. What
happens to each replica is `replica_decisions`; how decisions become ordered
actions is `plan_actions`; the values it takes and gives are `plan_types`,
all importable from here.

Containers of services that left the file are orphans: warned about, removed
only when asked. One-off containers (`run`) are not `up`'s to touch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from orchestrator.engine.plan_actions import ActionList, UpActions
from orchestrator.engine.plan_types import (  # what callers of the planner use
    ACTION_KINDS,
    Action,
    Actual,
    Condition,
    ContainerSummary,
    Desired,
    Plan,
    UpOptions,
    describe,
)
from orchestrator.engine.replica_decisions import (
    ServiceDecision,
    decide_service,
    replica_count,
    what_changed,
)
from orchestrator.spec.errors import StackError
from orchestrator.spec.graph import build_graph

__all__ = [
    "ACTION_KINDS", "Action", "Actual", "Condition", "ContainerSummary", "Desired", "Plan",
    "UpOptions", "describe", "plan_down", "plan_up", "replica_count", "what_changed",
]


def plan_up(desired: Desired, actual: Actual) -> Plan:
    """The actions that converge the selected services of `desired` from `actual`."""
    options = desired.options
    if options.force_recreate and options.no_recreate:
        raise StackError("--force-recreate and --no-recreate can't be used together")
    services = desired.model.get("services") or {}
    graph = build_graph(dict(desired.model))
    for name in options.scale:
        if name not in services:
            graph.dependencies(name)  # the error, with a "did you mean"
    selected: set[str] = set()
    for name in desired.services or graph.nodes:
        needs = graph.dependencies(name, recursive=True)
        selected.update([name] if options.no_deps else [name, *needs])
    order = [name for generation in graph.start_order() for name in generation
             if name in selected]

    containers = [c for c in actual.containers if not c.oneoff]
    decided: dict[str, ServiceDecision] = {}
    for name in order:
        count = replica_count(name, services[name], options.scale.get(name))
        mine = [c for c in containers if c.service == name]
        decided[name] = decide_service(name, desired, count, mine, decided)

    plan = Plan(desired.project)
    actions = UpActions(plan, desired, decided)
    known = set(services) | set(desired.disabled_services)
    orphans = sorted((c for c in containers if c.service not in known),
                     key=lambda c: (c.service, -c.number, c.id))
    if orphans and options.remove_orphans:
        for c in orphans:
            actions.stop_and_remove(c, "Remove", f"orphan: service {c.service} is not in the file")
    elif orphans:
        plan.warnings.append(
            f"Found orphan containers ({', '.join(c.name for c in orphans)}) for this project. "
            "If you removed or renamed this service in your stack file, run this command "
            "with --remove-orphans to clean it up."
        )
    actions.resources(actual)
    for name in order:
        actions.service(name)
    return plan


# ---- down ----------------------------------------------------------------------------------


def plan_down(
    project: str,
    actual: Actual,
    model: Mapping[str, Any] | None = None,
    remove_orphans: bool = False,
    volumes: bool = False,
    *,
    timeout: int | None = None,
    disabled_services: Collection[str] = (),
) -> Plan:
    """Stop and remove the project's containers, dependents first, then its networks
    and, with `volumes`, its named volumes (and each container's anonymous ones).

    Without a model (the engine lost the project's file), every container goes,
    and `actual.networks`/`actual.volumes` are taken as the project's own: the
    caller lists them by the project label.
    """
    plan = Plan(project)
    containers = list(actual.containers)
    rank: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    if model is not None:
        services = model.get("services") or {}
        known = set(services) | set(disabled_services)
        orphans = [c for c in containers if c.service not in known]
        if orphans and not remove_orphans:
            plan.warnings.append(
                f"Found orphan containers ({', '.join(sorted(c.name for c in orphans))}) "
                "for this project. Run this command with --remove-orphans to remove them."
            )
            containers = [c for c in containers if c.service in known]
        graph = build_graph(dict(model))
        for position, generation in enumerate(graph.stop_order(), start=1):
            for name in generation:
                rank[name] = position
                # Transitively: a dependent whose own dependency has no container still waits.
                dependents[name] = graph.dependents(name, recursive=True)
    # What the file does not know (orphans, or everything without a file) goes first.
    containers.sort(key=lambda c: (rank.get(c.service, 0), c.service, -c.number, c.id))

    actions = ActionList(plan, timeout)
    first: dict[str, list[str]] = {}  # service -> its containers' first steps
    removes: list[str] = []
    for c in containers:
        after = [step for other in dependents.get(c.service, []) for step in first.get(other, [])]
        duplicate = f"remove:{c.service}:{c.number}" in actions.ids
        begun, removed = actions.stop_and_remove(c, "Remove", after=after, duplicate=duplicate,
                                                 stop_change="Stop", remove_volumes=volumes)
        first.setdefault(c.service, []).append(begun)
        removes.append(removed)
    for kind, section, existing, wanted in (("network", "networks", actual.networks, True),
                                            ("volume", "volumes", actual.volumes, volumes)):
        for name in _own(model, section, existing) if wanted else ():
            actions.add(f"remove_{kind}:{name}", f"remove_{kind}", f"remove {kind} {name}",
                        "Remove", name=name, after=removes)
    return plan


def _own(model: Mapping[str, Any] | None, section: str,
         existing: Collection[str] | None) -> list[str]:
    """The runtime names of the project's networks or volumes that may need removing."""
    if model is None:
        return sorted(existing or ())
    names = [decl.get("name") or key for key, decl in (model.get(section) or {}).items()
             if not (decl or {}).get("external")]
    return sorted(n for n in names if existing is None or n in existing)
