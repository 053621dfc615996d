"""The engine: the stores, the runtime and the networks of one host, and what `up` and
`down` do with them.

`up` stores the project's desired state, plans against the containers that
exist, and runs the plan; progress goes to an `emit` callback (the API turns
it into NDJSON). Every project has a lock, so two `up`s of one project run one
after the other. Supervision — healthchecks, restart policies — lives in
`supervisor.py` and runs for as long as the engine does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from orchestrator.engine.image_cleanup import images_to_remove, remove_images
from orchestrator.engine.planner import (
    Action,
    Actual,
    ContainerSummary,
    Desired,
    Plan,
    UpOptions,
    describe,
    plan_down,
    plan_up,
)
from orchestrator.engine.projects import ProjectRecord, ProjectStore
from orchestrator.engine.scheduler import run_plan
from orchestrator.engine.supervisor import Supervisor
from orchestrator.runtime.containers.runtime import Container, ContainerRuntime
from orchestrator.runtime.containers.service_container import (
    create_service_container,
    start_container,
)
from orchestrator.runtime.containers.state import images_in_use
from orchestrator.runtime.images.store import ImageStore
from orchestrator.runtime.network.dns_answer import DnsAnswerer
from orchestrator.runtime.network.dns_server import DnsServer
from orchestrator.runtime.network.manager import NetworkManager
from orchestrator.runtime.nurseries import open_nursery
from orchestrator.runtime.volumes import VolumeStore, volumes_in_use
from orchestrator.spec.errors import StackError

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]
PROJECT_LABEL = "com.docker.compose.project"


class Engine:
    def __init__(self, state_root: Path, *, dns_port: int = 53):
        self.state_root = state_root
        self.runtime = ContainerRuntime(state_root)
        self.images = ImageStore(
            state_root / "images",
            in_use=lambda digest: digest in images_in_use(state_root / "containers"),
        )
        self.volumes = VolumeStore(
            state_root / "volumes",
            in_use=lambda name: volumes_in_use(state_root).get(name, []),
        )
        self.answerer = DnsAnswerer()
        self.dns = DnsServer(self.answerer, port=dns_port)
        self.networks = NetworkManager(state_root, self.answerer, self.dns)
        self.projects = ProjectStore(state_root / "stacks")
        self.supervisor = Supervisor(self)
        self._locks: dict[str, trio.Lock] = {}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve DNS, repair the host from the records, supervise; until cancelled."""
        async with open_nursery() as nursery:
            await nursery.start(self.dns.run)
            # A crash may have left half-made or half-removed container folders, and
            # endpoints of containers that no longer exist (a container keeps its
            # endpoints from create to remove, running or not).
            await trio.to_thread.run_sync(self.runtime.clean_leftovers)
            await self.networks.reconcile({c.id for c in self.runtime.list()})
            await self.networks.serve_dns()
            await self._finish_interrupted_starts()
            await nursery.start(self.supervisor.run)
            task_status.started()

    async def _finish_interrupted_starts(self) -> None:
        """An engine killed between starting a container (held before its command) and
        plugging its networks leaves it waiting for ever, running in name only: finish
        those starts. A one-off's client has gone with that engine: end it instead."""
        for container_id in await self.runtime.held():
            try:
                container = self.runtime.get(container_id)
                if dict(container.spec.labels).get("com.docker.compose.oneoff") == "True":
                    await self.runtime.kill(container_id, "SIGKILL")
                    continue
                await self.networks.plug(container_id, container.state.pid)
                await self.runtime.release(container_id)
            except StackError as error:
                logger.warning("container %s: finishing its start: %s", container_id[:12], error)
                with contextlib.suppress(StackError):
                    await self.runtime.kill(container_id, "SIGKILL")

    def lock(self, project: str) -> trio.Lock:
        return self._locks.setdefault(project, trio.Lock())

    # --- what exists ----------------------------------------------------------------------

    def containers(self, project: str | None = None) -> list[Container]:
        found = self.runtime.list()
        if project is not None:
            found = [c for c in found if c.metadata.get("project") == project]
        return found

    def actual(self, project: str) -> Actual:
        summaries = []
        for container in self.containers(project):
            labels = dict(container.spec.labels)
            summaries.append(ContainerSummary(
                id=container.id, name=container.name,
                service=str(container.metadata.get("service", "")),
                number=int(container.metadata.get("number", 0)),
                config_hash=labels.get("com.docker.compose.config-hash", ""),
                status=container.state.status, exit_code=container.state.exit_code,
                oneoff=labels.get("com.docker.compose.oneoff") == "True",
                health=self.supervisor.health_status(container.id),
            ))
        return Actual(
            containers=tuple(summaries),
            networks=frozenset(n.name for n in self.networks.list()),
            volumes=frozenset(v.name for v in self.volumes.list()),
        )

    # --- up and down ----------------------------------------------------------------------

    def plan(self, record: ProjectRecord, options: UpOptions,
             services: tuple[str, ...] = ()) -> Plan:
        previous = self.projects.load(record.name)
        known = {}
        if previous is not None:
            for service, digest in previous.config_hashes.items():
                if service in previous.model.get("services", {}):
                    known[digest] = previous.model["services"][service]
        desired = Desired(
            project=record.name, model=record.model, config_hashes=record.config_hashes,
            services=services, options=options, known_configs=known,
        )
        return plan_up(desired, self.actual(record.name))

    async def up(self, record: ProjectRecord, options: UpOptions, emit: Emit, *,
                 services: tuple[str, ...] = (), dry_run: bool = False) -> bool:
        """Converge the project; True when every action succeeded."""
        async with self.lock(record.name):
            plan = self.plan(record, options, services)
            for warning in plan.warnings:
                await emit({"kind": "warning", "message": warning})
            if dry_run:
                for line in describe(plan):
                    await emit({"kind": "plan", "message": line})
                return True
            self.projects.save(record)
            for name in plan.running:
                await emit({"kind": "progress", "action": "keep", "change": "Running",
                            "resource": f"Container {name}", "status": "done"})
            return await self._run(plan, record, emit)

    async def down(self, project: str, emit: Emit, *, remove_orphans: bool = False,
                   volumes: bool = False, timeout: int | None = None,
                   rmi: str | None = None) -> bool:
        async with self.lock(project):
            record = self.projects.load(project)
            images = images_to_remove(
                project, record.model if record else None, rmi,
                [c.spec.image for c in self.containers(project)]) if rmi else []
            actual = self.actual(project)
            owned = self._project_resources(project, record)
            actual = Actual(actual.containers, owned["networks"], owned["volumes"])
            plan = plan_down(project, actual, record.model if record else None,
                             remove_orphans=remove_orphans, volumes=volumes, timeout=timeout)
            ok = await self._run(plan, record, emit)
            # After the containers: an image is only removed once nothing uses it.
            await remove_images(self.images, self.runtime, images, emit)
            if ok:
                self.projects.delete(project)
            return ok

    def _project_resources(
        self, project: str, record: ProjectRecord | None
    ) -> dict[str, frozenset[str]]:
        if record is not None:
            networks = {str((d or {}).get("name") or k)
                        for k, d in (record.model.get("networks") or {}).items()
                        if not (d or {}).get("external")}
            volumes = {str((d or {}).get("name") or k)
                       for k, d in (record.model.get("volumes") or {}).items()
                       if not (d or {}).get("external")}
        else:
            networks = {n.name for n in self.networks.list() if n.name.startswith(project + "_")}
            volumes = {v.name for v in self.volumes.list()
                       if v.labels.get(PROJECT_LABEL) == project}
        existing_networks = {n.name for n in self.networks.list()}
        existing_volumes = {v.name for v in self.volumes.list()}
        return {"networks": frozenset(networks & existing_networks),
                "volumes": frozenset(volumes & existing_volumes)}

    async def _run(self, plan: Plan, record: ProjectRecord | None, emit: Emit) -> bool:
        async def execute(action: Action) -> None:
            await emit(_event(action, "working"))
            try:
                await self._execute(action, record)
            except StackError as error:
                await emit(_event(action, "error", str(error)))
                raise
            await emit(_event(action, "done"))

        outcomes = await run_plan(
            plan.actions, execute,
            optional=lambda action, prerequisite: prerequisite in action.optional,
        )
        for outcome in outcomes:
            if not outcome.ok and outcome.error.startswith("not done:"):
                await emit(_event(outcome.action, "skipped", outcome.error))
        return all(outcome.ok for outcome in outcomes)

    async def _execute(self, action: Action, record: ProjectRecord | None) -> None:
        kind = action.kind
        if kind == "ensure_network":
            await self._ensure_network(action, record)
        elif kind == "ensure_volume":
            if not action.external:
                await trio.to_thread.run_sync(self._ensure_volume, action, record)
            elif action.name not in {v.name for v in self.volumes.list()}:
                raise StackError(f"external volume {action.name} does not exist")
        elif kind == "create":
            assert record is not None and action.service and action.number
            await trio.to_thread.run_sync(self._create, action, record)
        elif kind == "start":
            container = self.runtime.get(action.name or "")
            if container.state.status not in ("running", "paused"):
                await start_container(self.runtime, self.networks, container.id)
            self.supervisor.watch(container.id)
        elif kind in ("stop", "remove"):
            await self._stop_or_remove(action)
        elif kind == "restart":
            await self.runtime.restart(action.container_id or action.name or "", action.timeout)
        elif kind == "wait_healthy":
            assert record is not None
            await self.supervisor.wait_healthy(action, record.name)
        elif kind == "wait_completed":
            assert record is not None
            await self.supervisor.wait_completed(action, record.name)
        elif kind == "remove_network":
            await self.networks.remove(action.name or "")
        elif kind == "remove_volume":
            await trio.to_thread.run_sync(self.volumes.remove, action.name or "")
        else:
            raise StackError(f"unknown action {kind}")

    async def _ensure_network(self, action: Action, record: ProjectRecord | None) -> None:
        name = action.name or ""
        if action.external:
            self.networks.get(name)  # a clear error when it is missing
            return
        key = action.id.split(":", 1)[1]
        declaration = ((record.model.get("networks") or {}).get(key) if record else None) or {}
        ipam = declaration.get("ipam") or {}
        labels = dict(declaration.get("labels") or {})
        if record is not None:
            labels.setdefault(PROJECT_LABEL, record.name)
            labels.setdefault("com.docker.compose.network", key)
        await self.networks.create(
            name, ipam_config=ipam.get("config"), internal=bool(declaration.get("internal")),
            labels=labels, driver=str(declaration.get("driver") or "bridge"),
            driver_opts=declaration.get("driver_opts"),
        )

    def _ensure_volume(self, action: Action, record: ProjectRecord | None) -> None:
        key = action.id.split(":", 1)[1]
        declaration = ((record.model.get("volumes") or {}).get(key) if record else None) or {}
        labels = dict(declaration.get("labels") or {})
        if record is not None:
            labels.setdefault(PROJECT_LABEL, record.name)
            labels.setdefault("com.docker.compose.volume", key)
        self.volumes.create(action.name or key, labels=labels,
                            driver=str(declaration.get("driver") or "local"),
                            driver_opts=declaration.get("driver_opts"))

    def _create(self, action: Action, record: ProjectRecord) -> None:
        service = record.model["services"][action.service or ""]
        create_service_container(
            self.runtime, self.images, self.volumes, service,
            project=record.name, project_dir=record.working_dir,
            service_name=action.service or "", number=action.number or 1,
            name=action.name, project_model=record.model,
            project_environment=record.environment,
            config_hash=record.config_hashes.get(action.service or "", ""),
            networks=self.networks,
        )

    async def _stop_or_remove(self, action: Action) -> None:
        target = action.container_id or action.name or ""
        try:
            container = self.runtime.get(target)
        except StackError:
            return  # gone already: what the action wanted
        self.supervisor.unwatch(container.id, stopped_by_user=True)
        await self.runtime.stop(container.id, action.timeout)
        if action.kind == "remove":
            await self.runtime.remove(container.id, force=True)
            await self.networks.release(container.id)


def _event(action: Action, status: str, message: str = "") -> dict[str, Any]:
    change = "Stop" if action.kind == "stop" else action.change  # before a Remove or Recreate
    event = {"kind": "progress", "action": action.kind, "change": change,
             "resource": _resource(action), "status": status}
    if message:
        event["message"] = message
    return event


def _resource(action: Action) -> str:
    if action.kind in ("ensure_network", "remove_network"):
        return f"Network {action.name}"
    if action.kind in ("ensure_volume", "remove_volume"):
        return f"Volume {action.name}"
    if action.kind in ("wait_healthy", "wait_completed"):
        names = action.condition.containers if action.condition else ()
        return f"Container {', '.join(names)}" if names else f"Service {action.service}"
    return f"Container {action.name}"

