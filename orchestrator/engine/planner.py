"""The reconcile planner: what to do so that a project's containers match its stack file.

Pure, the way h11 is: it takes the desired state (the normalized model, one
config hash per service, the options of `up`) and the actual containers, and
returns actions, each with the actions it waits for and the reason a user
reads. It never touches the runtime, so `up --dry-run` shows exactly what
`up` would do and every rule below is tested in milliseconds.

The rules are Docker Compose's convergence, per replica number 1..n:
- no container: create it, then start it;
- a different config hash: recreate it. The new container takes the old one's
  name, so the old one is stopped and removed first (compose creates under a
  temporary name and renames; one name at a time is simpler and cannot leak);
- same hash but not running: start it;
- running and unchanged: nothing, so a second `up` plans no action at all.
Containers numbered past n are removed, highest first. Containers of services
that left the file are orphans: warned about, removed only when asked.
One-off containers (`run`) are not `up`'s to touch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
from orchestrator.spec.errors import StackError, format_path
from orchestrator.spec.graph import NAMESPACE_KEYS, build_graph

__all__ = [
    "ACTION_KINDS", "Action", "Actual", "Condition", "ContainerSummary", "Desired", "Plan",
    "UpOptions", "describe", "plan_down", "plan_up", "replica_count", "what_changed",
]

_UP = frozenset({"running", "paused"})  # a container in these states is stopped before removal
_SHOWN = 3  # names a reason lists before it says "and N more"
_WAITS = {"service_healthy": ("wait_healthy", "healthy"),
          "service_completed_successfully": ("wait_completed", "completed successfully")}


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
    decided: dict[str, _ServicePlan] = {}
    for name in order:
        count = replica_count(name, services[name], options.scale.get(name))
        mine = [c for c in containers if c.service == name]
        decided[name] = _decide(name, desired, count, mine, decided)

    plan = Plan(desired.project)
    builder = _Builder(plan, desired, decided)
    known = set(services) | set(desired.disabled_services)
    orphans = sorted((c for c in containers if c.service not in known),
                     key=lambda c: (c.service, -c.number, c.id))
    if orphans and options.remove_orphans:
        for c in orphans:
            builder.stop_and_remove(c, "Remove", f"orphan: service {c.service} is not in the file")
    elif orphans:
        plan.warnings.append(
            f"Found orphan containers ({', '.join(c.name for c in orphans)}) for this project. "
            "If you removed or renamed this service in your stack file, run this command "
            "with --remove-orphans to clean it up."
        )
    builder.resources(actual)
    for name in order:
        builder.service(name)
    return plan


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


def what_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """`environment.DEBUG changed`: the first key paths where two service configs differ."""
    if old is None:
        return "config changed"
    found: list[tuple[str | int, ...]] = []
    _diff(_without_replicas(old), _without_replicas(new), (), found)
    paths = [format_path(path) for path in found if path]
    if not paths:
        return "config changed"
    return f"{_listing(paths)} changed"


def _listing(names: Sequence[str]) -> str:
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


@dataclass
class _Replica:
    number: int
    name: str  # the name it has, or will have once (re)created
    op: str  # create | recreate | start | restart | keep
    detail: str
    container: ContainerSummary | None


@dataclass
class _ServicePlan:
    count: int
    replicas: list[_Replica]
    surplus: list[tuple[ContainerSummary, str]]  # to stop and remove, and why

    @property
    def recreated(self) -> bool:
        return any(r.op == "recreate" for r in self.replicas)

    @property
    def changes(self) -> bool:
        """Whether any replica is created, recreated, started or restarted."""
        return any(r.op != "keep" for r in self.replicas)


def _decide(name: str, desired: Desired, count: int, containers: list[ContainerSummary],
            decided: dict[str, _ServicePlan]) -> _ServicePlan:
    options = desired.options
    service = desired.model["services"][name]
    wanted = desired.config_hashes[name]
    by_number: dict[int, list[ContainerSummary]] = {}
    for c in containers:
        by_number.setdefault(c.number, []).append(c)
    shared = _shared_namespace_recreated(service, decided)
    restart_for = [dep for dep, entry in (service.get("depends_on") or {}).items()
                   if (entry or {}).get("restart") and dep in decided and decided[dep].recreated]
    replicas: list[_Replica] = []
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
        replicas.append(_Replica(number, fresh if op in ("create", "recreate") else c.name,
                                 op, detail, c))
    surplus = [(c, f"scale down to {count}")
               for number in sorted(by_number, reverse=True) for c in by_number[number]]
    return _ServicePlan(count, replicas, surplus + duplicates)


def _shared_namespace_recreated(service: Mapping[str, Any],
                                decided: dict[str, _ServicePlan]) -> str:
    """Why a container must follow a recreated one whose namespace it joined, or ""."""
    for key in NAMESPACE_KEYS:
        value = service.get(key)
        if isinstance(value, str) and value.startswith("service:"):
            dep = value.removeprefix("service:")
            if dep in decided and decided[dep].recreated:
                return f"{dep} was recreated and this service shares its " \
                       f"{key.removesuffix('_mode')} namespace"
    return ""


class _Actions:
    """Appends actions to a plan: ids unique, prerequisites listed once each."""

    def __init__(self, plan: Plan, timeout: int | None) -> None:
        self.plan = plan
        self.timeout = timeout
        self.ids: set[str] = set()
        self.by_kind: dict[tuple[str, str], list[str]] = {}  # (service, kind) -> action ids

    def add(self, action_id: str, kind: str, reason: str, change: str, **fields: Any) -> str:
        if action_id in self.ids:  # two orphans with one number: tell them apart
            action_id += f":{str(fields.get('container_id', ''))[:12]}"
        assert action_id not in self.ids, action_id
        self.ids.add(action_id)
        fields["after"] = tuple(dict.fromkeys(fields.get("after", ())))
        fields["optional"] = tuple(dict.fromkeys(fields.get("optional", ())))
        self.plan.actions.append(Action(action_id, kind, reason, change, **fields))
        if fields.get("service"):
            self.by_kind.setdefault((fields["service"], kind), []).append(action_id)
        return action_id

    def stop_and_remove(
        self, c: ContainerSummary, change: str, detail: str = "", *, reason: str = "",
        after: Sequence[str] = (), duplicate: bool = False, stop_change: str = "",
        remove_volumes: bool = False,
    ) -> tuple[str, str]:
        """Stop `c` if it runs, then remove it: the ids of the first and the last step."""
        where = {"service": c.service, "number": c.number, "container_id": c.id, "name": c.name}
        # "remove:web:1" stays the id of the replica's own container; a duplicate's says which.
        suffix = f":{c.id[:12]}" if duplicate else ""
        first = None
        if c.status in _UP:
            stop_change = stop_change or change
            first = self.add(
                f"stop:{c.service}:{c.number}{suffix}", "stop",
                reason or _sentence(stop_change.lower(), c.name, detail), stop_change,
                detail=detail, after=after, timeout=self.timeout, **where)
            after = [first]
        removed = self.add(
            f"remove:{c.service}:{c.number}{suffix}", "remove",
            reason or _sentence(change.lower(), c.name, detail), change,
            detail=detail, after=after, remove_volumes=remove_volumes, **where)
        return first or removed, removed


class _Builder(_Actions):
    """Turns the per-service decisions of `up` into actions, each after its prerequisites."""

    def __init__(self, plan: Plan, desired: Desired, decided: dict[str, _ServicePlan]) -> None:
        super().__init__(plan, desired.options.timeout)
        self.desired = desired
        self.decided = decided
        self.no_start = desired.options.no_start
        self.resource_ids: dict[str, list[str]] = {}  # service -> its ensure_* actions
        self.waiters: dict[tuple[str, str], list[str]] = {}  # (dependency, condition) -> who
        for name, decision in decided.items():
            for dep, entry in self._dependencies(name):
                condition = (entry or {}).get("condition") or "service_started"
                if condition in _WAITS and decision.changes and decided[dep].count:
                    self.waiters.setdefault((dep, condition), []).append(name)

    def _dependencies(self, name: str) -> list[tuple[str, Any]]:
        """depends_on entries on other selected services: the rest take no part."""
        service = self.desired.model["services"][name]
        return [(dep, entry) for dep, entry in (service.get("depends_on") or {}).items()
                if dep != name and dep in self.decided]

    def resources(self, actual: Actual) -> None:
        """ensure_network / ensure_volume for what the selected services use, before them."""
        model = self.desired.model
        for kind, section, existing in (("network", "networks", actual.networks),
                                        ("volume", "volumes", actual.volumes)):
            declared = model.get(section) or {}
            users: dict[str, list[str]] = {}
            for name in self.decided:
                for key in _uses(model["services"][name], section):
                    if key in declared:
                        users.setdefault(key, []).append(name)
            for key in sorted(users):
                runtime_name = declared[key].get("name") or key
                external = bool(declared[key].get("external"))
                if existing is not None:
                    if runtime_name in existing:
                        continue
                    if external:
                        raise StackError(
                            f'{kind} "{runtime_name}" is declared external but does not exist',
                            path=(section, key),
                            hint=f"create it with `stack {kind} create {runtime_name}`",
                        )
                    change = "Create"
                elif any(self.decided[name].changes for name in users[key]):
                    change = "Check" if external else "Ensure"
                else:
                    continue
                detail = f"used by {_listing(users[key])}"
                action_id = self.add(
                    f"ensure_{kind}:{key}", f"ensure_{kind}",
                    _sentence(f"{change.lower()} {kind}", runtime_name, detail), change,
                    detail=detail, name=runtime_name, external=external)
                for name in users[key]:
                    self.resource_ids.setdefault(name, []).append(action_id)

    def service(self, name: str) -> None:
        decision = self.decided[name]
        resources = self.resource_ids.get(name, [])
        removed: dict[int, list[str]] = {}
        for c, detail in decision.surplus:
            duplicate = c.number in range(1, decision.count + 1)
            _, gone = self.stop_and_remove(c, "Remove", detail, duplicate=duplicate)
            removed.setdefault(c.number, []).append(gone)
        creates_after, creates_optional = self._gates(name, starting=False)
        starts_after: list[str] = []
        starts_optional: list[str] = []
        if decision.changes and not self.no_start:
            starts_after, starts_optional = self._gates(name, starting=True)
        for r in decision.replicas:
            if r.op == "keep":
                if r.container is not None and r.container.status == "running":
                    self.plan.running.append(r.name)
                continue
            reason = _sentence(r.op, name, r.detail)
            ids = {"service": name, "number": r.number, "name": r.name}
            if r.op in ("create", "recreate"):
                change = r.op.capitalize()
                prior = list(removed.get(r.number, []))
                if r.container is not None:
                    prior.append(self.stop_and_remove(r.container, change, r.detail,
                                                      reason=reason)[1])
                created = self.add(f"create:{name}:{r.number}", "create", reason, change,
                                   detail=r.detail, after=[*prior, *resources, *creates_after],
                                   optional=creates_optional, **ids)
                if not self.no_start:
                    self.add(f"start:{name}:{r.number}", "start", reason, "Start",
                             after=[created, *starts_after], optional=starts_optional, **ids)
                continue
            assert r.container is not None
            self.add(f"{r.op}:{name}:{r.number}", r.op, reason, r.op.capitalize(),
                     detail=r.detail, after=[*resources, *starts_after],
                     optional=starts_optional,
                     container_id=r.container.id, **ids,
                     **({"timeout": self.timeout} if r.op == "restart" else {}))

    def _gates(self, name: str, starting: bool) -> tuple[list[str], list[str]]:
        """What the service's creates (or starts) wait for, and which of those only order
        it (`required: false`). Creates follow the dependencies' creates, as in compose: a
        shared namespace or volumes_from needs the other container to exist. Starts wait
        for each dependency's condition."""
        after: list[str] = []
        optional: list[str] = []
        for dep, entry in self._dependencies(name):
            condition = (entry or {}).get("condition") or "service_started"
            if not starting:
                gates = self.by_kind.get((dep, "create"), [])
            elif condition in _WAITS:
                gates = [self._wait(dep, condition)] if self.decided[dep].count else []
            else:
                gates = [*self.by_kind.get((dep, "start"), []),
                         *self.by_kind.get((dep, "restart"), [])]
            after += gates
            if (entry or {}).get("required") is False:
                optional += gates
        return after, optional

    def _wait(self, dep: str, condition: str) -> str:
        kind, state = _WAITS[condition]
        action_id = f"{kind}:{dep}"
        if action_id in self.ids:
            return action_id
        waiters = self.waiters[(dep, condition)]
        who, s = _listing(waiters), "s" if len(waiters) == 1 else ""
        decision = self.decided[dep]
        return self.add(
            action_id, kind, f"wait for {dep} to be {state}: {who} depend{s} on it",
            f"Wait {state.split()[0]}", detail=f"{who} need{s} it",
            service=dep,
            after=[*self.by_kind.get((dep, "start"), []), *self.by_kind.get((dep, "restart"), [])],
            condition=Condition(condition, tuple(r.number for r in decision.replicas),
                                tuple(r.name for r in decision.replicas)),
        )


def _uses(service: Mapping[str, Any], section: str) -> list[str]:
    """The keys of the networks or named volumes a service uses."""
    if section == "networks":
        networks = service.get("networks")
        return list(networks) if isinstance(networks, Mapping) else []
    return [mount["source"] for mount in service.get("volumes") or ()
            if isinstance(mount, Mapping) and mount.get("type") == "volume"
            and mount.get("source")]


def _sentence(verb: str, subject: str, detail: str) -> str:
    return f"{verb} {subject}: {detail}" if detail else f"{verb} {subject}"


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

    builder = _Actions(plan, timeout)
    first: dict[str, list[str]] = {}  # service -> its containers' first steps
    removes: list[str] = []
    for c in containers:
        after = [step for other in dependents.get(c.service, []) for step in first.get(other, [])]
        duplicate = f"remove:{c.service}:{c.number}" in builder.ids
        begun, removed = builder.stop_and_remove(c, "Remove", after=after, duplicate=duplicate,
                                                 stop_change="Stop", remove_volumes=volumes)
        first.setdefault(c.service, []).append(begun)
        removes.append(removed)
    for kind, section, existing, wanted in (("network", "networks", actual.networks, True),
                                            ("volume", "volumes", actual.volumes, volumes)):
        for name in _own(model, section, existing) if wanted else ():
            builder.add(f"remove_{kind}:{name}", f"remove_{kind}", f"remove {kind} {name}",
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
