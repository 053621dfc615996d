"""The /v1 routes of the lifecycle verbs: what `stack start|stop|restart|kill|pause|unpause|
rm|wait|top|images|cp` ask the engine (schemas/engine-api.yaml says the shapes).

The project verbs stream a ProgressEvent per container and step, as `up` does;
`wait` streams each container's exit; `cp` switches the connection to frames
(raw_frames.py) that carry a tar archive one way and tar's verdict back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from orchestrator.engine.api_progress import progress_stream
from orchestrator.engine.container_copy import ContainerCopy
from orchestrator.engine.http import HttpError, Request, Response, Router, Stream, Upgrade
from orchestrator.engine.lifecycle import Emit, Lifecycle
from orchestrator.engine.process_table import (
    TITLES,
    boot_time,
    effective_uid,
    parse_stat,
    process_row,
)
from orchestrator.runtime.containers.runtime import Container
from orchestrator.spec.errors import StackError

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine

Operation = Callable[[Emit], Awaitable[bool]]
_VERB_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "start": {"services": list},
    "stop": {"services": list, "timeout": int},
    "restart": {"services": list, "timeout": int},
    "kill": {"services": list, "signal": str},
    "pause": {"services": list},
    "unpause": {"services": list},
    "remove": {"services": list, "containers": list, "volumes": bool},
}


def add_lifecycle_routes(router: Router, engine: Engine) -> None:
    api = LifecycleApi(engine)
    for verb in _VERB_FIELDS:
        router.add("POST", f"/v1/projects/{{project}}/{verb}", api.verb_handler(verb))
    router.add("POST", "/v1/projects/{project}/wait", api.wait)
    router.add("GET", "/v1/projects/{project}/images", api.images)
    router.add("GET", "/v1/containers/{id}/top", api.top)
    router.add("GET", "/v1/containers/{id}/archive", api.archive_out)
    router.add("PUT", "/v1/containers/{id}/archive", api.archive_in)
    router.add("GET", "/v1/containers/{id}/archive/stat", api.archive_stat)


class LifecycleApi:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.lifecycle = Lifecycle(engine)

    # --- project verbs --------------------------------------------------------------------

    def verb_handler(self, verb: str) -> Callable[[Request], Awaitable[Stream]]:
        async def handle(request: Request) -> Stream:
            body = request.json_object(_VERB_FIELDS[verb])
            project = request.params["project"]
            services = _strings(body, "services")
            self.lifecycle.containers(project, services)  # an unknown service: a 400, now
            operation = self._operation(verb, project, services, body)

            async def locked(emit: Emit) -> bool:
                async with self.engine.lock(project):
                    return await operation(emit)

            return progress_stream(locked)

        return handle

    def _operation(self, verb: str, project: str, services: tuple[str, ...],
                   body: dict[str, Any]) -> Operation:
        lifecycle = self.lifecycle
        timeout = body.get("timeout")
        if timeout is not None and timeout < 0:
            raise HttpError(400, "request body: field 'timeout' must not be negative")
        if verb == "start":
            return lambda emit: lifecycle.start(project, services, emit)
        if verb == "stop":
            return lambda emit: lifecycle.stop(project, services, timeout, emit)
        if verb == "restart":
            return lambda emit: lifecycle.restart(project, services, timeout, emit)
        if verb == "kill":
            signal_name = str(body.get("signal") or "SIGKILL")
            from orchestrator.runtime.containers.launchspec import signal_number

            signal_number(signal_name)  # a bad signal is the request's fault: a 400 now
            return lambda emit: lifecycle.kill(project, services, signal_name, emit)
        if verb == "pause":
            return lambda emit: lifecycle.pause(project, services, emit)
        if verb == "unpause":
            return lambda emit: lifecycle.unpause(project, services, emit)
        names = _strings(body, "containers")
        volumes = bool(body.get("volumes"))
        return lambda emit: lifecycle.remove(project, services, names, volumes, emit)

    async def wait(self, request: Request) -> Stream:
        body = request.json_object({"services": list})
        project = request.params["project"]
        running = [c for c in self.lifecycle.containers(project, _strings(body, "services"),
                                                        oneoff=True)
                   if c.state.status in ("running", "paused")]
        if not running:
            raise HttpError(404, f"no running containers in project {project}")
        return progress_stream(lambda emit: self.lifecycle.wait(running, emit))

    async def images(self, request: Request) -> Response:
        project = request.params["project"]
        services = tuple(request.query.get("service", []))
        rows = [self._image_row(c) for c in self.lifecycle.containers(project, services,
                                                                      oneoff=True)]
        return Response(sorted(rows, key=lambda row: row["container"]))

    def _image_row(self, container: Container) -> dict[str, Any]:
        from orchestrator.runtime.images.reference import parse_reference

        row: dict[str, Any] = {"container": container.name,
                               "service": str(container.metadata.get("service", "")),
                               "repository": "", "tag": "", "image_id": "", "size": None}
        if not container.spec.image:
            row["repository"] = "(host rootfs)"
            return row
        try:
            reference = parse_reference(container.spec.image).with_default_tag()
            row["repository"] = reference.familiar_repository
            row["tag"] = reference.tag or ""
        except StackError:
            row["repository"] = container.spec.image
        try:
            record = self.engine.images.image(container.spec.image_id)
        except StackError:
            return row  # removed from the store since: the container keeps its layers
        row["image_id"] = record.config_digest
        row["size"] = record.size
        return row

    # --- one container --------------------------------------------------------------------

    def _container(self, request: Request) -> Container:
        try:
            return self.engine.runtime.get(request.params["id"])
        except StackError as error:
            raise HttpError(404, str(error)) from None

    async def top(self, request: Request) -> Response:
        container = self._container(request)
        if container.state.status not in ("running", "paused"):
            raise HttpError(409, f"container {container.name} is not running")
        rows = await trio.to_thread.run_sync(_process_table, container.id)
        return Response({"titles": list(TITLES), "processes": rows})

    def _copy(self, request: Request) -> tuple[ContainerCopy, str]:
        container = self._container(request)
        path = request.query_str("path")
        if not path:
            raise HttpError(400, "query parameter path: missing")
        if container.state.status != "running":
            raise HttpError(409, f"container {container.name} is not running, and stack cp "
                                 f"copies with the container's own tar: start it first")
        # As docker cp: a path in the container is from its root, the first '/' optional.
        return ContainerCopy(self.engine.runtime, container), "/" + path.lstrip("/")

    async def archive_stat(self, request: Request) -> Response:
        copy, path = self._copy(request)
        return Response({"path": path, "kind": await copy.path_kind(path)})

    async def archive_out(self, request: Request) -> Upgrade:
        copy, path = self._copy(request)
        follow = request.query_bool("follow_links")

        async def run(stream: trio.abc.HalfCloseableStream) -> None:
            await copy.send_archive(path, follow, stream.send_all)

        return Upgrade(run)

    async def archive_in(self, request: Request) -> Upgrade:
        copy, path = self._copy(request)
        keep_owner = request.query_bool("keep_owner")

        async def run(stream: trio.abc.HalfCloseableStream) -> None:
            await copy.receive_archive(path, keep_owner, stream, stream.send_all)

        return Upgrade(run)


def _strings(body: dict[str, Any], field: str) -> tuple[str, ...]:
    values = body.get(field) or []
    if not all(isinstance(v, str) for v in values):
        raise HttpError(400, f"request body: field {field!r} must be a list of strings")
    return tuple(values)


def _process_table(container_id: str) -> list[list[str]]:
    """`ps -ef` rows for every process in the container's cgroup (a blocking read of /proc)."""
    import pwd

    from orchestrator.runtime.containers.cgroups import Cgroup

    cgroup = Cgroup.open(container_id)
    if cgroup is None:
        return []
    with open("/proc/stat", encoding="ascii") as file:
        booted = boot_time(file.read())
    hz = os.sysconf("SC_CLK_TCK")
    now = time.time()
    rows = []
    for pid in cgroup.pids():
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as file:
                stat = parse_stat(file.read())
            with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as file:
                uid = effective_uid(file.read())
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                cmdline = file.read()
        except (OSError, ValueError, IndexError):
            continue  # it exited while we read
        try:
            user = pwd.getpwuid(uid).pw_name  # the host's name for it, as ps on the host says
        except KeyError:
            user = str(uid)
        rows.append(process_row(stat, user, cmdline, booted=booted, now=now, hz=hz))
    return rows
