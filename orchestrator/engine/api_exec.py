"""`exec` and `run` over the API: a process in a running container, or a one-off container,
attached to the client through an upgraded connection (see `attach.py`).

    POST /v1/containers/{id}/exec   ExecRequest; 101 then frames, or 204 with `detach`
    POST /v1/projects/{project}/run RunRequest; 101 then frames, or NDJSON progress and
                                    the container with `detach`

What can be refused is refused before the switch, as an HTTP error; once the
connection carries frames, a failure is the exit frame's `error` (a command
that cannot run exits 126 or 127, as with Docker).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import trio

from orchestrator.engine import oneoff
from orchestrator.engine.api_progress import check_model, progress_line
from orchestrator.engine.attach import FrameSender, ProcessEnds, close_fds, open_stdio, relay
from orchestrator.engine.attach_frames import PROGRESS, json_frame
from orchestrator.engine.engine import Engine
from orchestrator.engine.http import (
    HttpError,
    Request,
    Response,
    Router,
    Send,
    Stream,
    Upgrade,
    UpgradedStream,
)
from orchestrator.engine.projects import ProjectRecord
from orchestrator.runtime.containers.launchspec import ProcessSpec
from orchestrator.runtime.containers.runtime import Container
from orchestrator.runtime.containers.userdb import resolve_user
from orchestrator.runtime.nurseries import open_nursery
from orchestrator.spec.errors import StackError

logger = logging.getLogger(__name__)

_EXEC_FIELDS: dict[str, type | tuple[type, ...]] = {
    "cmd": list, "tty": bool, "stdin": bool, "user": str, "env": list, "working_dir": str,
    "detach": bool, "rows": int, "cols": int,
}
_RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": dict, "config_hashes": dict, "working_dir": str, "environment": dict,
    "service": str, "command": (list, type(None)), "entrypoint": (list, type(None)),
    "env": list, "name": str, "user": str, "workdir": str, "volumes": list,
    "service_ports": bool, "no_deps": bool, "rm": bool, "detach": bool, "tty": bool,
    "interactive": bool, "rows": int, "cols": int,
}


def add_exec_routes(router: Router, engine: Engine) -> None:
    routes = ExecRoutes(engine)
    router.add("POST", "/v1/containers/{id}/exec", routes.exec)
    router.add("POST", "/v1/projects/{project}/run", routes.run, max_body=16 * 1024 * 1024)


class ExecRoutes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- exec -----------------------------------------------------------------------------

    async def exec(self, request: Request) -> Response | Upgrade:
        body = request.json_object(_EXEC_FIELDS, required=("cmd",))
        argv = _strings(body["cmd"], "cmd")
        if not argv:
            raise HttpError(400, "cmd: no command to run")
        env = _strings(body.get("env") or [], "env")
        for entry in env:
            if "=" not in entry or entry.startswith("="):
                raise HttpError(400, f"env: expected KEY=value, got {entry!r}")
        size = _size(body)
        try:
            container = self.engine.runtime.get(request.params["id"])
        except StackError as error:
            raise HttpError(404, str(error)) from None
        if container.state.status != "running":
            state = container.state.status
            raise HttpError(409, f"container {container.name} is {state}, not running",
                            hint="unpause it first" if state == "paused" else None)
        process = self._process(container, argv, body, env)
        if body.get("detach"):
            await self._exec_detached(container.id, process)
            return Response(None, status=204)
        stdin = bool(body.get("stdin"))
        return Upgrade(lambda stream: self._exec_attached(stream, container.id, process,
                                                          stdin, size))

    def _process(self, container: Container, argv: list[str], body: dict[str, Any],
                 env: list[str]) -> ProcessSpec:
        runtime = self.engine.runtime
        cwd = body.get("working_dir") or None
        if cwd is not None and not cwd.startswith("/"):
            raise HttpError(400, f"working_dir {cwd!r} must be an absolute path")
        user = None
        groups: tuple[int, ...] = ()
        if body.get("user"):
            lowers = [runtime.root / container.id / "upper", *container.spec.rootfs.lowers]
            try:
                resolved = resolve_user(body["user"], (), lowers)
            except StackError as error:
                raise HttpError(400, error.message, hint=error.hint) from None
            user, groups = (resolved.uid, resolved.gid), resolved.additional_gids
            if not any(entry.startswith("HOME=") for entry in env):
                env = [f"HOME={resolved.home}", *env]
        process = runtime.exec_process(container, argv, user=user, env=env, cwd=cwd,
                                       tty=bool(body.get("tty")))
        return dataclasses.replace(process, additional_gids=groups) if groups else process

    async def _exec_detached(self, container_id: str, process: ProcessSpec) -> None:
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        failure: StackError | None = None
        try:
            async with open_nursery() as nursery:
                try:
                    await nursery.start(self.engine.runtime.exec, container_id, process,
                                        (null, null, null))
                except StackError as error:
                    failure = error
                # It runs: stop waiting for it (the keeper reaps it), as `exec -d` asks.
                nursery.cancel_scope.cancel()
        finally:
            os.close(null)
        if failure is not None:
            raise failure

    async def _exec_attached(self, stream: UpgradedStream, container_id: str,
                             process: ProcessSpec, stdin: bool,
                             size: tuple[int, int] | None) -> None:
        sender = FrameSender(stream)
        ends, theirs = open_stdio(tty=process.tty, stdin=stdin, size=size)
        finished = trio.Event()
        result: list[int] = []

        async def execute(task_status: trio.TaskStatus[int]) -> None:
            result.append(await self.engine.runtime.exec(container_id, process, theirs,
                                                         task_status=task_status))
            finished.set()

        async def exit_code() -> int:
            await finished.wait()
            return result[0]

        code: int | None = None
        try:
            async with open_nursery() as nursery:
                try:
                    await nursery.start(execute)
                except StackError as error:
                    await sender.exit(oneoff.exit_code_of_start_failure(str(error), 126),
                                      str(error))
                    return
                finally:
                    close_fds(theirs)  # the keeper has its copies: our pipes end with the process
                code = await relay(stream, sender, ends, exit_code)
                if code is None:  # the client left: stop waiting for the process
                    nursery.cancel_scope.cancel()
        finally:
            ends.close()
        if code is not None:
            await sender.exit(code)

    # --- run ------------------------------------------------------------------------------

    async def run(self, request: Request) -> Stream | Upgrade:
        body = request.json_object(_RUN_FIELDS,
                                   required=("model", "config_hashes", "working_dir", "service"))
        project = request.params["project"]
        check_model(body["model"])
        record = ProjectRecord(project, body["model"], dict(body["config_hashes"]),
                               body["working_dir"], dict(body.get("environment") or {}))
        service = body["service"]
        if service not in body["model"]["services"]:
            raise HttpError(404, f"no such service: {service}")
        options = self._run_options(body)
        try:
            oneoff.oneoff_service(body["model"]["services"][service], options)
            for name in oneoff.dependencies(body["model"], service):
                if name not in body["model"]["services"]:
                    raise StackError(f"service {service} depends on undefined service {name}")
        except StackError as error:
            raise HttpError(400, str(error)) from None
        if body.get("detach"):
            return self._run_detached(record, options)
        size = _size(body)
        return Upgrade(lambda stream: self._run_attached(stream, record, options, size))

    def _run_options(self, body: dict[str, Any]) -> oneoff.RunOptions:
        command = body.get("command")
        entrypoint = body.get("entrypoint")
        env = _strings(body.get("env") or [], "env")
        for entry in env:
            if "=" not in entry or entry.startswith("="):
                raise HttpError(400, f"env: expected KEY=value, got {entry!r}")
        try:
            volumes = oneoff.check_volumes(body.get("volumes") or [])
        except StackError as error:
            raise HttpError(400, str(error)) from None
        return oneoff.RunOptions(
            service=body["service"],
            command=None if command is None else tuple(_strings(command, "command")),
            entrypoint=None if entrypoint is None else tuple(_strings(entrypoint, "entrypoint")),
            environment=tuple(env), name=body.get("name") or "",
            user=body.get("user") or None, working_dir=body.get("workdir") or None,
            volumes=volumes, service_ports=bool(body.get("service_ports")),
            no_deps=bool(body.get("no_deps")), tty=bool(body.get("tty")),
            interactive=bool(body.get("interactive", True)), remove=bool(body.get("rm")),
        )

    def _run_detached(self, record: ProjectRecord, options: oneoff.RunOptions) -> Stream:
        from orchestrator.runtime.containers.service_container import start_container

        async def run(send: Send) -> None:
            async def emit(event: dict[str, Any]) -> None:
                await send(progress_line(event))

            try:
                container = await oneoff.prepare(self.engine, record, options, emit)
            except StackError as error:
                await send({"error": str(error)})
                return
            try:
                await start_container(self.engine.runtime, self.engine.networks, container.id)
            except StackError as error:
                if options.remove:
                    await oneoff.remove(self.engine, container.id)
                await send({"error": str(error)})
                return
            if options.remove:
                self._background().start_soon(oneoff.remove_when_exited, self.engine,
                                              container.id)
            await send({"id": container.id, "name": container.name})

        return Stream(producer=run)

    def _background(self) -> trio.Nursery:
        """Where work that outlives a request runs: the supervisor's nursery, which lives
        as long as the engine."""
        nursery = self.engine.supervisor._nursery
        if nursery is None:
            raise StackError("the engine is not running its supervisor")
        return nursery

    async def _run_attached(self, stream: UpgradedStream, record: ProjectRecord,
                            options: oneoff.RunOptions, size: tuple[int, int] | None) -> None:
        sender = FrameSender(stream)

        async def emit(event: dict[str, Any]) -> None:
            await sender.send(json_frame(PROGRESS, progress_line(event)))

        container: Container | None = None
        ends = ProcessEnds()
        try:
            container = await oneoff.prepare(self.engine, record, options, emit)
            ends, theirs = open_stdio(tty=options.tty, stdin=options.interactive, size=size)
            try:
                await oneoff.start_attached(self.engine, container.id, theirs)
            except BaseException:
                ends.close()
                raise
            finally:
                close_fds(theirs)  # the keeper has its copies: our pipes end with the container
        except StackError as error:
            ends.close()
            if container is not None and options.remove:
                with trio.CancelScope(shield=True):
                    await oneoff.remove(self.engine, container.id)
            code = oneoff.exit_code_of_start_failure(str(error), 1) if container else 1
            await sender.exit(code, str(error))
            return
        runtime = self.engine.runtime
        container_id = container.id

        async def exit_code() -> int:
            state = await runtime.wait(container_id)
            return state.exit_code if state.exit_code is not None else 255

        code: int | None = None
        try:
            code = await relay(stream, sender, ends, exit_code)
        finally:
            # Nobody is left to read it (or the engine is stopping): the run ends here, as
            # `docker run` ends when its client is killed. Shielded, so it is done.
            with trio.CancelScope(shield=True):
                if code is None:
                    await _stop_quietly(self.engine, container_id)
                if options.remove:
                    await oneoff.remove(self.engine, container_id)
        if code is not None:
            await sender.exit(code)


async def _stop_quietly(engine: Engine, container_id: str) -> None:
    try:
        await engine.runtime.stop(container_id)
    except StackError as error:
        logger.warning("stopping one-off container %s: %s", container_id[:12], error)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise HttpError(400, f"{where}: expected a list of strings")
    return list(value)


def _size(body: dict[str, Any]) -> tuple[int, int] | None:
    rows, cols = body.get("rows"), body.get("cols")
    if rows is None and cols is None:
        return None
    if not isinstance(rows, int) or not isinstance(cols, int) or rows < 1 or cols < 1:
        raise HttpError(400, "rows and cols: expected two positive integers")
    return rows, cols
