"""Watching running containers: healthchecks, restart policies, and waits on them.

For every container the engine starts (or finds running when it starts), a
task probes its health and another waits for its exit and applies its restart
policy. The tasks live in the supervisor's nursery, which lives as long as the
engine: a container that dies at 3 a.m. is handled by its policy with no CLI
around. What the user stops is marked, so no policy brings it back.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

import trio

from orchestrator.engine.health import HealthState, healthcheck_of, run_healthchecks
from orchestrator.engine.restart import RestartPolicy, decide, decide_on_engine_start
from orchestrator.runtime.containers.service_container import start_container
from orchestrator.runtime.images.image_config import parse_image_config
from orchestrator.runtime.nurseries import open_nursery
from orchestrator.spec.errors import StackError

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine
    from orchestrator.engine.planner import Action


@dataclass
class Watch:
    container_id: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    health: HealthState | None = None
    changed: trio.Event = field(default_factory=trio.Event)
    restart_count: int = 0
    previous_delay: float = 0.0


class Supervisor:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.watches: dict[str, Watch] = {}
        self.stopped_by_user: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._subscribers: set[trio.MemorySendChannel[dict[str, Any]]] = set()

    def publish(self, event: dict[str, Any]) -> None:
        """Tell every `events()` reader; a reader too slow to keep up loses events."""
        from datetime import datetime

        stamp = datetime.now(UTC).isoformat(timespec="microseconds")
        event = {"time": stamp.replace("+00:00", "Z"), **event}  # RFC 3339, as the API says
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                pass
            except trio.ClosedResourceError:
                self._subscribers.discard(channel)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](1024)
        self._subscribers.add(send)
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            self._subscribers.discard(send)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._adopt()
            task_status.started()
            await trio.sleep_forever()

    async def _adopt(self) -> None:
        """At engine start: watch what runs; restart what its policy wants running."""
        for container in self.engine.runtime.list():
            service = self._service_of(container.metadata)
            oneoff = dict(container.spec.labels).get("com.docker.compose.oneoff") == "True"
            if container.state.status in ("running", "paused"):
                self.watch(container.id)
            elif service is not None and container.state.status == "exited" and not oneoff:
                policy = RestartPolicy.parse(service)
                decision = decide_on_engine_start(
                    policy, container.state.exit_code or 0, 0,
                    container.state.stopped_by_user or container.id in self.stopped_by_user,
                )
                if decision.restart:
                    await start_container(self.engine.runtime, self.engine.networks,
                                          container.id)
                    self.watch(container.id)

    def _service_of(self, metadata: dict[str, Any]) -> dict[str, Any] | None:
        record = self.engine.projects.load(str(metadata.get("project", "")))
        if record is None:
            return None
        return record.model.get("services", {}).get(str(metadata.get("service", "")))

    # --- watching -------------------------------------------------------------------------

    def watch(self, container_id: str) -> None:
        if container_id in self.watches or self._nursery is None:
            return
        self.stopped_by_user.discard(container_id)
        with contextlib.suppress(StackError, OSError):
            self.engine.runtime.mark_stopped_by_user(container_id, False)
        watch = Watch(container_id)
        self.watches[container_id] = watch
        self._nursery.start_soon(self._supervise, watch)

    def unwatch(self, container_id: str, *, stopped_by_user: bool) -> None:
        if stopped_by_user:
            self.stopped_by_user.add(container_id)
            with contextlib.suppress(StackError, OSError):
                self.engine.runtime.mark_stopped_by_user(container_id, True)
        watch = self.watches.pop(container_id, None)
        if watch is not None:
            watch.scope.cancel()
            watch.changed.set()

    def health_status(self, container_id: str) -> str:
        watch = self.watches.get(container_id)
        return watch.health.status if watch and watch.health else ""

    async def _supervise(self, watch: Watch) -> None:
        runtime = self.engine.runtime
        with watch.scope:
            while True:
                container = runtime.get(watch.container_id)
                service = self._service_of(container.metadata) or {}
                async with trio.open_nursery() as nursery:
                    spec = healthcheck_of(service, self._image_healthcheck(container.spec))
                    if spec is not None and container.state.started_at:
                        watch.health = HealthState(spec, container.state.started_at)
                        nursery.start_soon(self._probe, watch, spec, container.state.started_at)
                    self.publish({"type": "container", "action": "start", "id": container.id,
                                  "name": container.name})
                    state = await runtime.wait(watch.container_id)
                    nursery.cancel_scope.cancel()
                self.publish({"type": "container", "action": "die", "id": container.id,
                              "name": container.name, "exit_code": state.exit_code})
                watch.changed.set()
                watch.changed = trio.Event()
                oneoff = dict(container.spec.labels).get("com.docker.compose.oneoff") == "True"
                if watch.container_id in self.stopped_by_user or oneoff:
                    self.watches.pop(watch.container_id, None)
                    return  # what the user stopped, and `run` containers, stay stopped
                decision = decide(
                    RestartPolicy.parse(service), state.exit_code or 0, watch.restart_count,
                    False, time.time(), container.state.started_at,
                    previous_delay=watch.previous_delay,
                )
                if not decision.restart:
                    self.watches.pop(watch.container_id, None)
                    return
                watch.restart_count = decision.restart_count
                watch.previous_delay = decision.delay
                await trio.sleep(decision.delay)
                await start_container(runtime, self.engine.networks, watch.container_id)

    def _image_healthcheck(self, spec: Any) -> Any:
        if not spec.image_id:
            return None
        try:
            record = self.engine.images.image(spec.image_id)
            config = parse_image_config(self.engine.images.read_blob(record.config_digest))
            return config.healthcheck
        except (StackError, OSError):
            return None

    async def _probe(self, watch: Watch, spec: Any, started_at: float) -> None:
        async def on_change(state: HealthState) -> None:
            self.publish({"type": "container", "action": f"health_status: {state.status}",
                          "id": watch.container_id})
            watch.changed.set()
            watch.changed = trio.Event()

        assert watch.health is not None
        await run_healthchecks(spec, self._exec_probe(watch.container_id), on_change,
                               started_at, state=watch.health)

    def _exec_probe(self, container_id: str) -> Any:
        runtime = self.engine.runtime

        async def exec_probe(argv: Sequence[str], timeout: float) -> tuple[int, str]:
            process = runtime.exec_process(runtime.get(container_id), list(argv))
            read_end, write_end = os.pipe()
            stdin = os.open("/dev/null", os.O_RDONLY)
            output = bytearray()
            async with trio.lowlevel.FdStream(read_end) as stream, \
                    open_nursery() as nursery:

                async def drain() -> None:
                    while chunk := await stream.receive_some():
                        output.extend(chunk)

                nursery.start_soon(drain)
                try:
                    code = await runtime.exec(container_id, process, (stdin, write_end, write_end))
                finally:
                    os.close(write_end)
                    os.close(stdin)
            return code, output.decode(errors="replace")

        return exec_probe

    # --- what `up` waits for --------------------------------------------------------------

    def _replicas(self, action: Action, project: str) -> list[str]:
        assert action.condition is not None
        return [c.id for c in self.engine.containers(project)
                if c.metadata.get("service") == action.service
                and int(c.metadata.get("number", 0)) in action.condition.numbers]

    async def wait_healthy(self, action: Action, project: str) -> None:
        for container_id in self._replicas(action, project):
            name = self.engine.runtime.get(container_id).name
            while True:
                watch = self.watches.get(container_id)
                if watch is None:
                    raise StackError(f"dependency failed to start: container {name} exited")
                if watch.health is None:
                    raise StackError(f"container {name} has no healthcheck configured",
                                     hint="depends_on condition service_healthy needs one")
                if watch.health.status == "healthy":
                    break
                if watch.health.status == "unhealthy":
                    raise StackError(f"dependency failed to start: container {name} is unhealthy")
                await watch.changed.wait()

    async def wait_completed(self, action: Action, project: str) -> None:
        for container_id in self._replicas(action, project):
            state = await self.engine.runtime.wait(container_id)
            if state.exit_code != 0:
                name = self.engine.runtime.get(container_id).name
                raise StackError(
                    f"service {action.service} didn't complete successfully: "
                    f"container {name} exited with code {state.exit_code}"
                )
