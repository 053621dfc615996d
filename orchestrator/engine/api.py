"""The /v1 API: HTTP requests to engine operations (schemas/engine-api.yaml says the shapes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from orchestrator.engine.api_exec import add_exec_routes
from orchestrator.engine.api_lifecycle import add_lifecycle_routes
from orchestrator.engine.api_progress import check_model, progress_stream
from orchestrator.engine.api_stacks import add_stack_routes
from orchestrator.engine.engine import Engine
from orchestrator.engine.http import HttpError, Request, Response, Router, Stream
from orchestrator.engine.planner import UpOptions
from orchestrator.engine.projects import ProjectRecord
from orchestrator.runtime.containers.log_reader import follow_log, read_log
from orchestrator.runtime.containers.runtime import Container
from orchestrator.spec.errors import StackError

VERSION = "0.1.0"
_UP_OPTIONS = {
    "services": list, "config_files": list, "force_recreate": bool, "no_recreate": bool,
    "no_deps": bool, "no_start": bool, "remove_orphans": bool, "scale": dict, "timeout": int,
    "wait": bool, "wait_timeout": int, "dry_run": bool,
}


def build_router(engine: Engine, stop: Callable[[], None]) -> Router:
    api = Api(engine, stop)
    router = Router()
    router.add("GET", "/v1/version", api.version)
    router.add("GET", "/v1/projects", api.projects)
    router.add("PUT", "/v1/projects/{project}", api.apply, max_body=16 * 1024 * 1024)
    router.add("POST", "/v1/projects/{project}/down", api.down)
    router.add("GET", "/v1/containers", api.containers)
    router.add("GET", "/v1/containers/{id}", api.inspect)
    router.add("DELETE", "/v1/containers/{id}", api.remove)
    router.add("GET", "/v1/containers/{id}/logs", api.logs)
    for verb in ("start", "stop", "restart", "kill", "pause", "unpause", "wait"):
        router.add("POST", f"/v1/containers/{{id}}/{verb}", getattr(api, f"container_{verb}"))
    router.add("GET", "/v1/events", api.events)
    router.add("POST", "/v1/engine/stop", api.stop_engine)
    add_exec_routes(router, engine)
    add_lifecycle_routes(router, engine)
    add_stack_routes(router)
    return router


class Api:
    def __init__(self, engine: Engine, stop: Callable[[], None]):
        self.engine = engine
        self.stop = stop

    async def version(self, request: Request) -> Response:
        import os

        return Response({"version": VERSION, "api_version": "1", "pid": os.getpid(),
                         "state_root": str(self.engine.state_root)})

    async def projects(self, request: Request) -> Response:
        listing = []
        for name in self.engine.projects.names():
            record = self.engine.projects.load(name)
            states = [c.state.status for c in self.engine.containers(name)]
            running = states.count("running")
            status = f"running({running})" if running else f"exited({len(states)})"
            listing.append({"name": name, "status": status,
                            "working_dir": record.working_dir if record else ""})
        return Response(listing)

    async def apply(self, request: Request) -> Stream:
        body = request.json_object(
            {"model": dict, "config_hashes": dict, "working_dir": str, "environment": dict,
             "options": dict},
            required=("model", "config_hashes", "working_dir"),
        )
        project = request.params["project"]
        options = _check(body.get("options") or {}, _UP_OPTIONS)
        check_model(body["model"])
        record = ProjectRecord(project, body["model"], body["config_hashes"],
                               body["working_dir"], dict(body.get("environment") or {}))
        up = UpOptions(
            force_recreate=bool(options.get("force_recreate")),
            no_recreate=bool(options.get("no_recreate")),
            no_start=bool(options.get("no_start")), no_deps=bool(options.get("no_deps")),
            remove_orphans=bool(options.get("remove_orphans")),
            scale={str(k): int(v) for k, v in (options.get("scale") or {}).items()},
            timeout=options.get("timeout"),
        )
        services = tuple(str(s) for s in options.get("services") or ())
        dry_run = bool(options.get("dry_run"))
        self.engine.plan(record, up, services)  # a bad request fails now, as an HTTP error
        return progress_stream(
            lambda emit: self.engine.up(record, up, emit, services=services, dry_run=dry_run)
        )

    async def down(self, request: Request) -> Stream:
        body = request.json_object({"remove_orphans": bool, "volumes": bool, "rmi": str,
                                    "timeout": int, "model": dict})
        project = request.params["project"]
        rmi = body.get("rmi")
        if rmi is not None and rmi not in ("local", "all"):
            raise HttpError(400, "request body: field 'rmi' must be 'local' or 'all'")
        return progress_stream(lambda emit: self.engine.down(
            project, emit, remove_orphans=bool(body.get("remove_orphans")),
            volumes=bool(body.get("volumes")), timeout=body.get("timeout"), rmi=rmi,
        ))

    async def containers(self, request: Request) -> Response:
        project = request.query_str("project")
        show_all = request.query_bool("all")
        found = [c for c in self.engine.containers(project)
                 if show_all or c.state.status in ("running", "paused")]
        return Response([self._summary(c) for c in found])

    def _summary(self, container: Container) -> dict[str, Any]:
        labels = dict(container.spec.labels)
        state = container.state
        publishers = []
        networks = []
        for network in self.engine.networks.list():
            endpoint = network.endpoints.get(container.id)
            if endpoint is None:
                continue
            networks.append(network.name)
            for port in endpoint.ports:
                publishers.append({
                    "url": port.get("host_ip") or "0.0.0.0", "target_port": port["container_port"],
                    "published_port": port["host_port"], "protocol": port["protocol"],
                })
        return {
            "id": container.id, "name": container.name,
            "project": str(container.metadata.get("project", "")),
            "service": str(container.metadata.get("service", "")),
            "number": int(container.metadata.get("number", 1) or 1),
            "oneoff": labels.get("com.docker.compose.oneoff") == "True",
            "image": container.spec.image or "(host rootfs)",
            "command": " ".join(container.spec.process.argv),
            "state": state.status, "health": self.engine.supervisor.health_status(container.id),
            "exit_code": state.exit_code, "created": state.created_at,
            "started_at": state.started_at, "finished_at": state.finished_at,
            "labels": labels, "publishers": publishers, "networks": networks,
        }

    async def inspect(self, request: Request) -> Response:
        container = self._container(request)
        return Response(self._summary(container) | {"spec": container.spec.to_json(),
                                                   "oom_killed": container.state.oom_killed,
                                                   "pid": container.state.pid})

    def _container(self, request: Request) -> Container:
        try:
            return self.engine.runtime.get(request.params["id"])
        except StackError as error:
            raise HttpError(404, str(error)) from None

    async def remove(self, request: Request) -> Response:
        container = self._container(request)
        self.engine.supervisor.unwatch(container.id, stopped_by_user=True)
        await self.engine.runtime.remove(container.id, force=request.query_bool("force"))
        await self.engine.networks.release(container.id)
        return Response(None, status=204)

    async def logs(self, request: Request) -> Stream:
        container = self._container(request)
        folder = self.engine.runtime.root / container.id
        tail = request.query_int("tail")
        since = _float(request.query_str("since"))
        until = _float(request.query_str("until"))

        async def lines() -> AsyncIterator[dict[str, Any]]:
            if request.query_bool("follow"):
                def running() -> bool:
                    return self.engine.runtime.get(container.id).state.status in (
                        "running", "paused")
                async for entry in follow_log(folder, is_running=running, tail=tail,
                                              since=since, until=until):
                    yield {"time": entry.time, "stream": entry.stream, "line": entry.text}
            else:
                entries = await trio.to_thread.run_sync(
                    lambda: read_log(folder, tail=tail, since=since, until=until))
                for entry in entries:
                    yield {"time": entry.time, "stream": entry.stream, "line": entry.text}

        return Stream(lines())

    async def container_start(self, request: Request) -> Response:
        from orchestrator.runtime.containers.service_container import start_container

        container = self._container(request)
        await start_container(self.engine.runtime, self.engine.networks, container.id)
        self.engine.supervisor.watch(container.id)
        return Response(None, status=204)

    async def container_stop(self, request: Request) -> Response:
        container = self._container(request)
        self.engine.supervisor.unwatch(container.id, stopped_by_user=True)
        await self.engine.runtime.stop(container.id, request.query_int("timeout"))
        return Response(None, status=204)

    async def container_restart(self, request: Request) -> Response:
        container = self._container(request)
        self.engine.supervisor.unwatch(container.id, stopped_by_user=True)
        await self.engine.runtime.stop(container.id, request.query_int("timeout"))
        from orchestrator.runtime.containers.service_container import start_container

        await start_container(self.engine.runtime, self.engine.networks, container.id)
        self.engine.supervisor.watch(container.id)
        return Response(None, status=204)

    async def container_kill(self, request: Request) -> Response:
        container = self._container(request)
        await self.engine.runtime.kill(container.id, request.query_str("signal") or "SIGKILL")
        return Response(None, status=204)

    async def container_pause(self, request: Request) -> Response:
        await self.engine.runtime.pause(self._container(request).id)
        return Response(None, status=204)

    async def container_unpause(self, request: Request) -> Response:
        await self.engine.runtime.unpause(self._container(request).id)
        return Response(None, status=204)

    async def container_wait(self, request: Request) -> Response:
        state = await self.engine.runtime.wait(self._container(request).id)
        return Response({"exit_code": state.exit_code, "oom_killed": state.oom_killed})

    async def events(self, request: Request) -> Stream:
        return Stream(self.engine.supervisor.events())

    async def stop_engine(self, request: Request) -> Response:
        self.stop()
        return Response({"message": "stopping"}, status=202)


def _check(options: dict[str, Any], fields: dict[str, type]) -> dict[str, Any]:
    for key, value in options.items():
        expected = fields.get(key)
        if expected is None:
            raise HttpError(400, f"options: unknown field {key!r}")
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise HttpError(400, f"options.{key}: expected {expected.__name__}")
    return options


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise HttpError(400, f"expected a Unix time, got {text!r}") from None
