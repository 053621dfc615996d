"""One-off containers (`stack run`): a service's container for one command, by compose's rules.

A one-off container is the service with a few things replaced — the command,
the entrypoint, some environment, extra volumes — under its own name,
`<project>-<service>-run-<12 hex>`, labelled `oneoff`, so `up` never mistakes
it for a replica. It publishes the service's ports only when asked
(`--service-ports`): the service's own container usually holds them. It never
restarts on its own: its restart policy is dropped, as its output belongs to
whoever ran it. Before it is created, the networks and volumes it uses are
made, and unless `--no-deps`, the services it depends on are brought up the
way `up` would, then waited for as its `depends_on` conditions say.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from orchestrator.engine.engine import Emit, Engine
from orchestrator.engine.planner import (
    Action,
    Actual,
    Condition,
    Desired,
    Plan,
    UpOptions,
    plan_up,
)
from orchestrator.engine.projects import ProjectRecord
from orchestrator.runtime.containers.runtime import Container
from orchestrator.runtime.containers.service_container import (
    create_service_container,
    start_container,
)
from orchestrator.spec.errors import StackError


@dataclass(frozen=True)
class RunOptions:
    """What `stack run` changes in the service; None leaves the service's own setting."""

    service: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: tuple[str, ...] = ()  # KEY=value
    name: str = ""
    user: str | None = None
    working_dir: str | None = None
    volumes: tuple[Mapping[str, Any], ...] = ()  # long syntax, sources absolute
    service_ports: bool = False
    no_deps: bool = False
    tty: bool = False
    interactive: bool = True  # stdin open
    remove: bool = False  # --rm


def oneoff_name(project: str, service: str) -> str:
    return f"{project}-{service}-run-{secrets.token_hex(6)}"


def oneoff_service(service: Mapping[str, Any], options: RunOptions) -> dict[str, Any]:
    """The service of the normalized model as the one-off container runs it."""
    oneoff = copy.deepcopy(dict(service))
    oneoff.pop("container_name", None)
    if options.command is not None:
        oneoff["command"] = list(options.command)
    if options.entrypoint is not None:
        oneoff["entrypoint"] = list(options.entrypoint)
        if options.command is None:  # a new entrypoint does not take the old arguments
            oneoff["command"] = []
    if options.environment:
        environment = dict(oneoff.get("environment") or {})
        for entry in options.environment:
            key, _, value = entry.partition("=")
            environment[key] = value
        oneoff["environment"] = environment
    if options.user is not None:
        oneoff["user"] = options.user
    if options.working_dir is not None:
        oneoff["working_dir"] = options.working_dir
    if not options.service_ports:
        oneoff.pop("ports", None)
    if options.volumes:
        oneoff["volumes"] = [*(oneoff.get("volumes") or ()), *map(dict, options.volumes)]
    oneoff["tty"] = options.tty
    oneoff["stdin_open"] = options.interactive
    oneoff["restart"] = "no"
    deploy = oneoff.get("deploy")
    if isinstance(deploy, dict):
        deploy.pop("restart_policy", None)
    return oneoff


def dependencies(model: Mapping[str, Any], service: str) -> dict[str, dict[str, Any]]:
    """The services `service` depends on, with their depends_on entries."""
    entries = (model["services"][service].get("depends_on") or {})
    return {name: dict(entry or {}) for name, entry in entries.items() if name != service}


# --- doing it -------------------------------------------------------------------------------


async def prepare(engine: Engine, record: ProjectRecord, options: RunOptions,
                  emit: Emit) -> Container:
    """Networks, volumes and dependencies, then the one-off container, created."""
    await _ensure_resources(engine, record, options.service, emit)
    if not options.no_deps:
        await _start_dependencies(engine, record, options.service, emit)
    return await trio.to_thread.run_sync(_create, engine, record, options)


async def _ensure_resources(engine: Engine, record: ProjectRecord, service: str,
                            emit: Emit) -> None:
    # The networks and volumes of the plan `up <service> --no-start` would make. Which
    # of them exist is all it needs: the project's containers are not read (with 50
    # of them, reading their states was a sixth of a `run --rm`).
    desired = Desired(project=record.name, model=record.model,
                      config_hashes=record.config_hashes, services=(service,),
                      options=UpOptions(no_deps=True, no_start=True))
    existing = Actual(networks=frozenset(engine.networks.names()),
                      volumes=frozenset(v.name for v in engine.volumes.list()))
    plan = plan_up(desired, existing)
    resources = [a for a in plan.actions if a.kind in ("ensure_network", "ensure_volume")]
    if not resources:
        return
    async with engine.lock(record.name):
        if not await engine._run(Plan(record.name, resources), record, emit):
            raise StackError(f"cannot run {service}: its networks or volumes could not be made")


async def _start_dependencies(engine: Engine, record: ProjectRecord, service: str,
                              emit: Emit) -> None:
    needs = dependencies(record.model, service)
    if not needs:
        return  # up with no services would bring up all of them
    if not await engine.up(record, UpOptions(), emit, services=tuple(needs)):
        raise StackError(f"cannot run {service}: a service it depends on did not start")
    for name, entry in needs.items():
        condition = entry.get("condition") or "service_started"
        if condition == "service_started":
            continue
        try:
            await _wait_for(engine, record.name, name, condition, emit)
        except StackError:
            if entry.get("required", True):
                raise


async def _wait_for(engine: Engine, project: str, dependency: str, condition: str,
                    emit: Emit) -> None:
    replicas = sorted((c for c in engine.containers(project)
                       if c.metadata.get("service") == dependency
                       and dict(c.spec.labels).get("com.docker.compose.oneoff") != "True"),
                      key=lambda c: int(c.metadata.get("number", 0)))
    healthy = condition == "service_healthy"
    kind, change = ("wait_healthy", "Wait healthy") if healthy else (
        "wait_completed", "Wait completed")
    names = tuple(c.name for c in replicas)
    action = Action(
        id=f"{kind}:{dependency}", kind=kind, reason=f"wait for {dependency}", change=change,
        service=dependency,
        condition=Condition(condition, tuple(int(c.metadata.get("number", 0)) for c in replicas),
                            names),
    )
    resource = f"Container {', '.join(names) or dependency}"
    await emit({"kind": "progress", "action": kind, "change": change, "resource": resource,
                "status": "working"})
    try:
        if healthy:
            await engine.supervisor.wait_healthy(action, project)
        else:
            await engine.supervisor.wait_completed(action, project)
    except StackError as error:
        await emit({"kind": "progress", "action": kind, "change": change, "resource": resource,
                    "status": "error", "message": str(error)})
        raise
    await emit({"kind": "progress", "action": kind, "change": change, "resource": resource,
                "status": "done"})


def _create(engine: Engine, record: ProjectRecord, options: RunOptions) -> Container:
    service = oneoff_service(record.model["services"][options.service], options)
    return create_service_container(
        engine.runtime, engine.images, engine.volumes, service,
        project=record.name, project_dir=record.working_dir, service_name=options.service,
        number=1, name=options.name or oneoff_name(record.name, options.service),
        project_model=record.model, project_environment=record.environment,
        oneoff=True, networks=engine.networks,
    )


async def start_attached(engine: Engine, container_id: str, stdio: tuple[int, int, int]) -> None:
    """Start the one-off container on the client's pipes or terminal, its networks plugged
    in before its command runs."""
    await start_container(engine.runtime, engine.networks, container_id, stdio=stdio)


async def remove(engine: Engine, container_id: str) -> None:
    """`--rm`: the container, its addresses and its anonymous volumes, as if never run."""
    try:
        container = engine.runtime.get(container_id)
    except StackError:
        return
    await engine.runtime.remove(container_id, force=True)
    # Its veths go with its namespace: the client is not kept waiting for the kernel.
    await engine.networks.release(container_id, defer_links=True)
    sources = {m.source for m in container.spec.mounts if m.origin == "volume"}
    for volume in engine.volumes.list():
        if volume.anonymous and str(volume.path) in sources:
            with contextlib.suppress(StackError):  # another container uses it too
                await trio.to_thread.run_sync(engine.volumes.remove, volume.name)


async def remove_when_exited(engine: Engine, container_id: str) -> None:
    """`run -d --rm`: the engine removes the container once it has exited."""
    await engine.runtime.wait(container_id)
    await remove(engine, container_id)


def exit_code_of_start_failure(message: str, other: int) -> int:
    """Docker's codes for a command that cannot run: 127 not found, 126 not executable;
    `other` for any other failure to start."""
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return 127
    if "permission denied" in lowered or "is a directory" in lowered:
        return 126
    return other


def check_volumes(volumes: Sequence[Any]) -> tuple[Mapping[str, Any], ...]:
    """`-v` entries as the CLI sends them: long syntax with a type, a target and, for a
    bind, an absolute source."""
    checked = []
    for index, volume in enumerate(volumes):
        where = f"volumes[{index}]"
        if not isinstance(volume, dict):
            raise StackError(f"{where}: expected an object in the long volume syntax")
        if volume.get("type") not in ("bind", "volume", "tmpfs"):
            raise StackError(f"{where}: type must be bind, volume or tmpfs")
        if not str(volume.get("target") or "").startswith("/"):
            raise StackError(f"{where}: target must be an absolute path")
        if volume["type"] == "bind" and not str(volume.get("source") or "").startswith("/"):
            raise StackError(f"{where}: a bind's source must be an absolute path")
        checked.append(volume)
    return tuple(checked)
