"""What `start`, `stop`, `restart`, `kill`, `pause`, `unpause`, `rm` and `wait` do to a
project's existing containers.

Each verb acts service by service in dependency order — `start` what others
need first, `stop` dependents first — and on the replicas of one service side
by side. Progress goes to an `emit` callback as the API's ProgressEvents
(`Container demo-web-1` / `Stop` / `working`, then `done`). A container the
user stops, kills or removes is marked so that its restart policy leaves it
alone; one the user starts is supervised again. Every change is published on
the engine's event stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from orchestrator.engine.planner import Action, Condition
from orchestrator.runtime.containers.launchspec import signal_number
from orchestrator.runtime.containers.runtime import Container
from orchestrator.runtime.containers.service_container import start_container
from orchestrator.runtime.nurseries import open_nursery
from orchestrator.spec.errors import StackError

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine

Emit = Callable[[dict[str, Any]], Awaitable[None]]
RUNNING = ("running", "paused")
KILL_WAIT = 10.0
"""Seconds `kill` with SIGKILL waits for the container to be gone, as docker does."""


class Lifecycle:
    def __init__(self, engine: Engine):
        self.engine = engine

    # --- which containers, in which order -------------------------------------------------

    def containers(self, project: str, services: Sequence[str] = (), *,
                   oneoff: bool = False) -> list[Container]:
        """The project's containers of `services` (all when empty), one-off ones only if asked.

        A service the project's stored model and containers do not know is an error; a
        project the engine knows nothing of simply has no containers.
        """
        known = self.services(project)
        unknown = [s for s in services if s not in known]
        if unknown and known:
            raise StackError(f"no such service: {unknown[0]}")
        found = []
        for container in self.engine.containers(project):
            service = str(container.metadata.get("service", ""))
            if services and service not in services:
                continue
            if not oneoff and dict(container.spec.labels).get(
                    "com.docker.compose.oneoff") == "True":
                continue
            found.append(container)
        return sorted(found, key=lambda c: (int(c.metadata.get("number", 0)), c.name))

    def services(self, project: str) -> set[str]:
        record = self.engine.projects.load(project)
        named = set((record.model.get("services") or {}) if record else ())
        return named | {str(c.metadata.get("service", "")) for c in self.engine.containers(project)}

    def generations(self, project: str, containers: list[Container], *,
                    reverse: bool) -> list[list[Container]]:
        """`containers` grouped by service in start order (`reverse`: stop order)."""
        by_service: dict[str, list[Container]] = {}
        for container in containers:
            by_service.setdefault(str(container.metadata.get("service", "")), []).append(container)
        order: list[list[str]] = []
        record = self.engine.projects.load(project)
        if record is not None:
            from orchestrator.spec.graph import build_graph

            with contextlib.suppress(StackError):
                order = build_graph(dict(record.model)).start_order()
        ranked = {name for generation in order for name in generation}
        # Services the stored model does not know (orphans) come with the first ones.
        order = [sorted(set(by_service) - ranked), *order]
        if reverse:
            order.reverse()
        return [[c for name in generation for c in by_service.get(name, [])]
                for generation in order
                if any(name in by_service for name in generation)]

    async def each(self, project: str, containers: list[Container], verb: str, emit: Emit,
                   act: Callable[[Container], Awaitable[None]], *, reverse: bool = False,
                   shield: bool = True) -> bool:
        """Run `act` on every container, a generation at a time; True when all succeeded.

        A client that goes away cancels what has not begun; with `shield`, a container
        already being acted on is finished first (half a restart is worse than none).
        """
        failures = 0

        async def one(container: Container) -> None:
            nonlocal failures
            resource = f"Container {container.name}"
            await emit({"resource": resource, "action": verb, "status": "working"})
            try:
                with trio.CancelScope(shield=shield):
                    await act(container)
            except StackError as error:
                failures += 1
                await emit({"resource": resource, "action": verb, "status": "error",
                            "message": str(error)})
                return
            await emit({"resource": resource, "action": verb, "status": "done"})

        for generation in self.generations(project, containers, reverse=reverse):
            async with open_nursery() as nursery:
                for container in generation:
                    nursery.start_soon(one, container)
        return failures == 0

    # --- the verbs ------------------------------------------------------------------------

    async def start(self, project: str, services: Sequence[str], emit: Emit) -> bool:
        stopped = [c for c in self.containers(project, services)
                   if c.state.status not in RUNNING]
        ready: set[str] = set()

        async def act(container: Container) -> None:
            await self._wait_for_dependencies(project, container, emit, ready)
            with trio.CancelScope(shield=True):  # a start cut short leaves a held container
                await start_container(self.engine.runtime, self.engine.networks, container.id)
                self.engine.supervisor.watch(container.id)

        # Not shielded as a whole: waiting for a dependency's health may take forever.
        return await self.each(project, stopped, "Start", emit, act, shield=False)

    async def stop(self, project: str, services: Sequence[str], timeout: int | None,
                   emit: Emit) -> bool:
        async def act(container: Container) -> None:
            await self._stop(container, timeout)

        return await self.each(project, self.containers(project, services), "Stop", emit, act,
                               reverse=True)

    async def restart(self, project: str, services: Sequence[str], timeout: int | None,
                      emit: Emit) -> bool:
        async def act(container: Container) -> None:
            await self._stop(container, timeout)
            await start_container(self.engine.runtime, self.engine.networks, container.id)
            self.engine.supervisor.watch(container.id)
            self._publish(container, "restart")

        return await self.each(project, self.containers(project, services), "Restart", emit, act)

    async def kill(self, project: str, services: Sequence[str], signal_name: str,
                   emit: Emit) -> bool:
        number = signal_number(signal_name)  # a bad name is the request's error, before anything
        running = [c for c in self.containers(project, services, oneoff=True)
                   if c.state.status in RUNNING]

        async def act(container: Container) -> None:
            # As with docker: the signal that ends a container for good (SIGKILL, or its
            # stop signal) is the user's stop; another one may end it, and then its
            # restart policy decides.
            final = number in (9, signal_number(container.spec.stop_signal))
            if final:
                self.engine.supervisor.unwatch(container.id, stopped_by_user=True)
            await self.engine.runtime.kill(container.id, signal_name)
            self._publish(container, "kill", signal=str(number))
            if final and number == 9:
                with trio.move_on_after(KILL_WAIT):
                    state = await self.engine.runtime.wait(container.id)
                    self._publish(container, "die", exitCode=str(state.exit_code or 0))

        return await self.each(project, running, "Kill", emit, act, reverse=True)

    async def pause(self, project: str, services: Sequence[str], emit: Emit) -> bool:
        running = [c for c in self.containers(project, services)
                   if c.state.status == "running"]

        async def act(container: Container) -> None:
            await self.engine.runtime.pause(container.id)
            self._publish(container, "pause")

        return await self.each(project, running, "Pause", emit, act, reverse=True)

    async def unpause(self, project: str, services: Sequence[str], emit: Emit) -> bool:
        paused = [c for c in self.containers(project, services)
                  if c.state.status == "paused"]

        async def act(container: Container) -> None:
            await self.engine.runtime.unpause(container.id)
            self._publish(container, "unpause")

        return await self.each(project, paused, "Unpause", emit, act)

    async def remove(self, project: str, services: Sequence[str], names: Sequence[str],
                     volumes: bool, emit: Emit) -> bool:
        """Remove the stopped containers (of `names` only, when given); running ones stay."""
        doomed = [c for c in self.containers(project, services)
                  if c.state.status not in RUNNING
                  and (not names or c.name in names or c.id in names)]

        async def act(container: Container) -> None:
            anonymous = self._anonymous_volumes(container) if volumes else []
            self.engine.supervisor.unwatch(container.id, stopped_by_user=True)
            await self.engine.runtime.remove(container.id)
            self.engine.supervisor.stopped_by_user.discard(container.id)
            await self.engine.networks.release(container.id)
            self._publish(container, "destroy")
            for volume in anonymous:
                await trio.to_thread.run_sync(self.engine.volumes.remove, volume)

        return await self.each(project, doomed, "Remove", emit, act, reverse=True)

    async def wait(self, containers: list[Container], emit: Emit) -> bool:
        """Emit each container's exit as it happens: {id, name, service, exit_code}."""

        async def one(container: Container) -> None:
            state = await self.engine.runtime.wait(container.id)
            code = state.exit_code if state.exit_code is not None else -1
            await emit({"id": container.id, "name": container.name,
                        "service": str(container.metadata.get("service", "")),
                        "exit_code": code})

        async with open_nursery() as nursery:
            for container in containers:
                nursery.start_soon(one, container)
        return True

    # --- helpers --------------------------------------------------------------------------

    def _fresh(self, container: Container) -> Container:
        return self.engine.runtime.get(container.id)

    async def _stop(self, container: Container, timeout: int | None) -> None:
        self.engine.supervisor.unwatch(container.id, stopped_by_user=True)
        was_running = self._fresh(container).state.status in RUNNING
        state = await self.engine.runtime.stop(container.id, timeout)
        if was_running:
            self._publish(container, "die", exitCode=str(state.exit_code or 0))
            self._publish(container, "stop")

    async def _wait_for_dependencies(self, project: str, container: Container, emit: Emit,
                                     ready: set[str]) -> None:
        """As `up` does: a dependency that must be healthy or done is waited for first."""
        record = self.engine.projects.load(project)
        if record is None:
            return
        service = (record.model.get("services") or {}).get(container.metadata.get("service"))
        for dependency, entry in ((service or {}).get("depends_on") or {}).items():
            kind = (entry or {}).get("condition", "service_started")
            if kind not in ("service_healthy", "service_completed_successfully"):
                continue
            replicas = [c for c in self.containers(project) if c.metadata.get("service")
                        == dependency]
            if not replicas or dependency in ready:
                continue
            action = Action(
                id=f"wait:{dependency}", kind="", reason="", change="Wait", service=dependency,
                condition=Condition(kind, tuple(int(c.metadata.get("number", 0))
                                                for c in replicas),
                                    tuple(c.name for c in replicas)),
            )
            verb = "WaitHealthy" if kind == "service_healthy" else "WaitCompleted"
            resource = f"Container {', '.join(c.name for c in replicas)}"
            await emit({"resource": resource, "action": verb, "status": "working"})
            try:
                if kind == "service_healthy":
                    await self.engine.supervisor.wait_healthy(action, project)
                else:
                    await self.engine.supervisor.wait_completed(action, project)
            except StackError:
                if (entry or {}).get("required", True):
                    raise
            ready.add(dependency)
            await emit({"resource": resource, "action": verb, "status": "done"})

    def _anonymous_volumes(self, container: Container) -> list[str]:
        """The anonymous volumes only this container uses (`rm -v` removes them)."""
        from orchestrator.runtime.volumes import volumes_in_use

        users = volumes_in_use(self.engine.state_root)
        anonymous = {v.name for v in self.engine.volumes.list() if v.anonymous}
        return [name for name, names in users.items()
                if name in anonymous and names == [container.name]]

    def _publish(self, container: Container, action: str, **attributes: str) -> None:
        self.engine.supervisor.publish({
            "type": "container", "action": action, "id": container.id, "name": container.name,
            "project": str(container.metadata.get("project", "")),
            "service": str(container.metadata.get("service", "")),
            **({"attributes": attributes} if attributes else {}),
        })
