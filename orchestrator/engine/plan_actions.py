"""Turning decisions into a plan's actions: unique ids, prerequisites, resources and waits.

`replica_decisions` says what happens to each replica and why; this module says
in which order, and what each step waits for: a recreation's stop and remove
before its create, networks and volumes before the containers that use them,
dependencies' creates before a service's creates, and their starts (or a wait
for their `condition`) before its starts. Kept apart from the decisions because
this wiring is what the scheduler runs, and it changes for different reasons.

`ActionList` is shared with `plan_down`; `UpActions` is `up`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.engine.plan_types import (
    Action,
    Actual,
    Condition,
    ContainerSummary,
    Desired,
    Plan,
)
from orchestrator.engine.replica_decisions import ServiceDecision, listing
from orchestrator.spec.errors import StackError

_UP = frozenset({"running", "paused"})  # a container in these states is stopped before removal
_WAITS = {"service_healthy": ("wait_healthy", "healthy"),
          "service_completed_successfully": ("wait_completed", "completed successfully")}


class ActionList:
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


class UpActions(ActionList):
    """Turns the per-service decisions of `up` into actions, each after its prerequisites."""

    def __init__(self, plan: Plan, desired: Desired,
                 decided: dict[str, ServiceDecision]) -> None:
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
                detail = f"used by {listing(users[key])}"
                action_id = self.add(
                    f"ensure_{kind}:{key}", f"ensure_{kind}",
                    _sentence(f"{change.lower()} {kind}", runtime_name, detail), change,
                    detail=detail, name=runtime_name, external=external)
                for name in users[key]:
                    self.resource_ids.setdefault(name, []).append(action_id)

    def service(self, name: str) -> None:
        """The actions of one service's decision, after its resources and dependencies."""
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
        who, s = listing(waiters), "s" if len(waiters) == 1 else ""
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
