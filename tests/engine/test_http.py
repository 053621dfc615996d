"""The engine's HTTP server on a real unix socket: routing, JSON, streams, upgrades, failures."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from support.engine_api import ApiDocument, openapi_routes

from orchestrator.cli.engine_client import EngineClient, EngineError
from orchestrator.engine.http import (
    HttpError,
    HttpServer,
    Request,
    Response,
    Router,
    Stream,
    Upgrade,
    UpgradedStream,
    serve,
)
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.trio


async def start(
    nursery: trio.Nursery, tmp_path: Path, router: Router, **options: Any
) -> tuple[str, HttpServer]:
    path = str(tmp_path / "s.sock")
    server = HttpServer(router, **options)
    await nursery.start(server.serve, path)
    return path, server


def in_thread(function: Any, *args: Any) -> Any:
    return trio.to_thread.run_sync(function, *args)


async def echo_json(request: Request) -> Response:
    return Response({"params": request.params, "query": request.query, "body": request.json()})


class RawConnection:
    """An HTTP client over one connection, to see what a connection carries."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def send(self, method: str, target: str, body: bytes = b"") -> None:
        headers = [("Host", "stackd"), ("Content-Length", str(len(body)))]
        data = self.conn.send(h11.Request(method=method, target=target, headers=headers))
        data += self.conn.send(h11.Data(data=body)) if body else b""
        await self.stream.send_all(data + self.conn.send(h11.EndOfMessage()))

    async def response(self) -> tuple[int, bytes]:
        status, body = 0, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return status, body
            else:
                raise AssertionError(f"unexpected {event!r}")


Connect = Callable[[str], Awaitable[RawConnection]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Opens raw connections to a server, and closes them after the test."""
    opened: list[RawConnection] = []

    async def open_connection(path: str) -> RawConnection:
        opened.append(RawConnection(await trio.open_unix_socket(path)))
        return opened[-1]

    yield open_connection
    for connection in opened:
        await connection.stream.aclose()


# --- the socket ---------------------------------------------------------------------------------


async def test_socket_is_not_world_accessible(nursery: trio.Nursery, tmp_path: Path) -> None:
    path, _ = await start(nursery, tmp_path, Router())
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


async def test_stale_socket_file_is_replaced(nursery: trio.Nursery, tmp_path: Path) -> None:
    # What a killed engine leaves behind: a socket file nobody listens on.
    dead = trio.socket.socket(trio.socket.AF_UNIX)
    await dead.bind(str(tmp_path / "s.sock"))
    dead.close()
    router = Router()
    router.add("GET", "/v1/version", lambda request: _answer({"version": "x"}))
    path, _ = await start(nursery, tmp_path, router)
    assert await in_thread(EngineClient(path).request, "GET", "/v1/version") == (
        200, {"version": "x"})


async def test_a_live_engine_socket_is_not_taken_over(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path, _ = await start(nursery, tmp_path, Router())
    with pytest.raises(StackError, match="already serving"):
        await serve(path, Router())


async def test_a_file_in_the_sockets_place_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "s.sock").write_text("precious")
    with pytest.raises(StackError, match="not a socket"):
        await serve(tmp_path / "s.sock", Router())
    assert (tmp_path / "s.sock").read_text() == "precious"


async def _answer(body: Any) -> Response:
    return Response(body)


# --- requests and answers -----------------------------------------------------------------------


async def test_one_connection_serves_several_requests(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    router = Router()
    router.add("POST", "/v1/things/{id}", echo_json)
    path, _ = await start(nursery, tmp_path, router)
    connection = await connect(path)
    for number in range(3):
        await connection.send("POST", f"/v1/things/{number}?a=1&a=2", b'{"n": %d}' % number)
        status, body = await connection.response()
        assert status == 200
        assert json.loads(body) == {
            "params": {"id": str(number)}, "query": {"a": ["1", "2"]}, "body": {"n": number}}


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    router = Router()
    router.add("GET", "/v1/version", lambda request: _answer({}))
    path, _ = await start(nursery, tmp_path, router, idle_timeout=0.05)
    connection = await connect(path)
    await connection.send("GET", "/v1/version")
    assert (await connection.response())[0] == 200
    with trio.fail_after(2):
        assert await connection.stream.receive_some(100) == b""


async def test_path_parameters_are_decoded_without_splitting(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    router = Router()
    router.add("GET", "/v1/containers/{id}/logs", echo_json)
    router.add("GET", "/v1/containers/{id}", echo_json)
    path, _ = await start(nursery, tmp_path, router)
    status, body = await in_thread(EngineClient(path).request, "GET", "/v1/containers/a%2Fb%20c")
    assert (status, body["params"]) == (200, {"id": "a/b c"})


async def test_unknown_path_is_404_with_a_message(nursery: trio.Nursery, tmp_path: Path) -> None:
    path, _ = await start(nursery, tmp_path, Router())
    with pytest.raises(EngineError, match="no such endpoint: /v1/nothing") as error:
        await in_thread(EngineClient(path).request, "GET", "/v1/nothing")
    assert error.value.status == 404


async def test_wrong_method_is_405_naming_the_allowed_ones(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    router = Router()
    router.add("GET", "/v1/version", lambda request: _answer({}))
    path, _ = await start(nursery, tmp_path, router)
    connection = await connect(path)
    await connection.send("DELETE", "/v1/version")
    status, body = await connection.response()
    assert status == 405
    assert json.loads(body) == {"message": "method DELETE not allowed on /v1/version "
                                           "(allowed: GET)"}


async def test_malformed_http_is_400(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    path, _ = await start(nursery, tmp_path, Router())
    stream = (await connect(path)).stream
    await stream.send_all(b"this is not http\r\n\r\n")
    answer = b""
    while data := await stream.receive_some(65536):
        answer += data
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"message":"malformed request' in answer


async def test_malformed_json_is_400(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    router = Router()
    router.add("POST", "/v1/things", echo_json)
    path, _ = await start(nursery, tmp_path, router)
    connection = await connect(path)
    await connection.send("POST", "/v1/things", b'{"model": ')
    status, body = await connection.response()
    assert status == 400
    assert json.loads(body)["message"].startswith("request body is not valid JSON")


async def test_fields_of_the_wrong_type_or_unknown_are_400(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def apply(request: Request) -> Response:
        body = request.json_object(
            {"model": dict, "working_dir": str, "scale": int}, required=("model",))
        return Response(body)

    router = Router()
    router.add("PUT", "/v1/projects/{project}", apply)
    path, _ = await start(nursery, tmp_path, router)
    client = EngineClient(path)
    refusals = {
        "request body: field 'working_dir' must be a string, not a number":
            {"model": {}, "working_dir": 3},
        "request body: field 'scale' must be an integer, not a boolean":
            {"model": {}, "scale": True},
        "request body: unknown field 'modle' (known fields: model, scale, working_dir)":
            {"modle": {}},
        "request body: missing field 'model'": {},
        "request body: expected an object, got a list": [1],
    }
    for message, body in refusals.items():
        with pytest.raises(EngineError) as error:
            await in_thread(client.request, "PUT", "/v1/projects/demo", body)
        assert (error.value.status, str(error.value)) == (400, message)
    good = {"model": {"services": {}}, "working_dir": "/srv", "scale": 2}
    assert await in_thread(client.request, "PUT", "/v1/projects/demo", good) == (200, good)


async def test_bad_query_values_are_400(nursery: trio.Nursery, tmp_path: Path) -> None:
    async def logs(request: Request) -> Response:
        return Response({"follow": request.query_bool("follow"),
                         "tail": request.query_int("tail")})

    router = Router()
    router.add("GET", "/v1/logs", logs)
    path, _ = await start(nursery, tmp_path, router)
    client = EngineClient(path)
    assert await in_thread(client.request, "GET", "/v1/logs?follow=true&tail=5") == (
        200, {"follow": True, "tail": 5})
    with pytest.raises(EngineError, match="query parameter tail: expected an integer"):
        await in_thread(client.request, "GET", "/v1/logs?tail=many")
    with pytest.raises(EngineError, match="query parameter follow: expected true or false"):
        await in_thread(client.request, "GET", "/v1/logs?follow=maybe")


async def test_a_declared_huge_body_is_413_without_being_read(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    router = Router()
    router.add("PUT", "/v1/projects/{project}", echo_json, max_body=16 << 20)
    path, _ = await start(nursery, tmp_path, router)
    stream = (await connect(path)).stream
    await stream.send_all(b"PUT /v1/projects/demo HTTP/1.1\r\nHost: stackd\r\n"
                          b"Content-Length: 17000000\r\n\r\n{")
    answer = b""
    while data := await stream.receive_some(65536):
        answer += data
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.endswith(b'{"message":"request body too large (the limit is 16 MiB)"}')


async def test_a_client_expecting_100_continue_is_told_to_go_on(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    router = Router()
    router.add("PUT", "/v1/projects/{project}", echo_json)
    path, _ = await start(nursery, tmp_path, router)
    stream = (await connect(path)).stream
    await stream.send_all(b"PUT /v1/projects/demo HTTP/1.1\r\nHost: s\r\n"
                          b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert await stream.receive_some(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    await stream.send_all(b"{}")
    assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_body_over_the_routes_limit_is_413(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    router = Router()
    router.add("POST", "/v1/small", echo_json, max_body=1000)
    router.add("GET", "/v1/version", lambda request: _answer({"version": "x"}))
    path, _ = await start(nursery, tmp_path, router)
    client = EngineClient(path)
    with pytest.raises(EngineError, match=r"too large \(the limit is 1000 bytes\)") as error:
        await in_thread(client.request, "POST", "/v1/small", {"data": "x" * 5_000_000})
    assert error.value.status == 413
    # Chunked, so that no Content-Length gives the size away before the body is read.
    stream = (await connect(path)).stream
    await stream.send_all(b"POST /v1/small HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n"
                          b"\r\n" + b"200\r\n" + b" " * 0x200 + b"\r\n" + b"400\r\n" + b" " * 0x400)
    assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 413 ")
    assert await in_thread(client.request, "GET", "/v1/version") == (200, {"version": "x"})


async def test_a_users_mistake_is_400_or_the_status_it_carries(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def refuse(request: Request) -> Response:
        raise StackError("services.web.image: must be a string", hint="quote it")

    async def missing(request: Request) -> Response:
        raise HttpError(404, f"no such container: {request.params['id']}")

    router = Router()
    router.add("POST", "/v1/refuse", refuse)
    router.add("GET", "/v1/containers/{id}", missing)
    path, _ = await start(nursery, tmp_path, router)
    client = EngineClient(path)
    with pytest.raises(EngineError) as error:
        await in_thread(client.request, "POST", "/v1/refuse")
    assert (error.value.status, str(error.value)) == (
        400, "services.web.image: must be a string (quote it)")
    with pytest.raises(EngineError) as error:
        await in_thread(client.request, "GET", "/v1/containers/web")
    assert (error.value.status, str(error.value)) == (404, "no such container: web")


async def test_a_failing_handler_is_500_and_the_server_keeps_serving(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Request) -> Response:
        raise KeyError("spec")

    async def unsendable(request: Request) -> Response:
        return Response({"when": object()})

    async def no_content_with_content(request: Request) -> Response:
        return Response({"stopped": True}, 204)

    router = Router()
    router.add("GET", "/v1/broken", broken)
    router.add("GET", "/v1/unsendable", unsendable)
    router.add("GET", "/v1/contradiction", no_content_with_content)
    router.add("GET", "/v1/version", lambda request: _answer({"version": "x"}))
    path, _ = await start(nursery, tmp_path, router)
    client = EngineClient(path)
    for endpoint in ("/v1/broken", "/v1/unsendable", "/v1/contradiction"):
        with pytest.raises(EngineError, match="internal error in the engine") as error:
            await in_thread(client.request, "GET", endpoint)
        assert error.value.status == 500
        assert await in_thread(client.request, "GET", "/v1/version") == (200, {"version": "x"})
    assert "GET /v1/broken failed" in caplog.text


async def test_no_content_answers_have_no_body(nursery: trio.Nursery, tmp_path: Path) -> None:
    router = Router()
    router.add("POST", "/v1/containers/{id}/start", lambda request: _answer_status(204))
    path, _ = await start(nursery, tmp_path, router)
    client = EngineClient(path)
    for _ in range(2):  # and the connection is still good for the next request
        assert await in_thread(client.request, "POST", "/v1/containers/a/start") == (204, None)


async def _answer_status(status: int) -> Response:
    return Response(None, status)


# --- streams --------------------------------------------------------------------------------------


async def test_ndjson_lines_reach_the_client_while_the_handler_produces(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    steps = [trio.Event() for _ in range(3)]

    async def progress(request: Request) -> Stream:
        async def events() -> AsyncIterator[dict[str, Any]]:
            for number, step in enumerate(steps):
                yield {"resource": f"container demo-web-{number}", "action": "start",
                       "status": "done"}
                await step.wait()  # the next line only once the client has seen this one

        return Stream(events())

    router = Router()
    router.add("PUT", "/v1/projects/{project}", progress)
    path, _ = await start(nursery, tmp_path, router)
    lines = EngineClient(path).stream("PUT", "/v1/projects/demo", {"model": {}})
    for number, step in enumerate(steps):
        line = await in_thread(next, lines)
        assert line["resource"] == f"container demo-web-{number}"
        step.set()
    assert await in_thread(list, lines) == []


async def test_a_client_that_leaves_cancels_the_stream(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cleaned_up = trio.Event()

    async def follow(request: Request) -> Stream:
        async def lines() -> AsyncIterator[dict[str, Any]]:
            try:
                yield {"time": "2024-01-01T00:00:00.000000000Z", "stream": "stdout",
                       "line": "hello"}
                await trio.sleep_forever()  # follow: nothing more is written
            finally:
                cleaned_up.set()

        return Stream(lines())

    router = Router()
    router.add("GET", "/v1/containers/{id}/logs", follow)
    path, _ = await start(nursery, tmp_path, router)
    lines = EngineClient(path).stream("GET", "/v1/containers/web/logs?follow=true")
    assert (await in_thread(next, lines))["line"] == "hello"
    lines.close()
    with trio.fail_after(5):
        await cleaned_up.wait()


async def test_a_client_that_leaves_cancels_a_plain_request(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    cancelled = trio.Event()

    async def wait(request: Request) -> Response:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    router = Router()
    router.add("POST", "/v1/containers/{id}/wait", wait)
    path, _ = await start(nursery, tmp_path, router)
    connection = await connect(path)
    await connection.send("POST", "/v1/containers/web/wait")
    await trio.sleep(0.05)
    await connection.stream.aclose()
    with trio.fail_after(5):
        await cancelled.wait()


async def test_a_stream_that_fails_ends_with_an_error_line(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def up(request: Request) -> Stream:
        async def events() -> AsyncIterator[dict[str, Any]]:
            yield {"resource": "container demo-db-1", "action": "start", "status": "error"}
            raise StackError("dependency db failed to start")

        return Stream(events())

    router = Router()
    router.add("PUT", "/v1/projects/{project}", up)
    path, _ = await start(nursery, tmp_path, router)
    seen: list[dict[str, Any]] = []

    def read() -> None:
        for line in EngineClient(path).stream("PUT", "/v1/projects/demo", {}):
            seen.append(line)

    with pytest.raises(EngineError, match="^dependency db failed to start$"):
        await in_thread(read)
    assert seen == [{"resource": "container demo-db-1", "action": "start", "status": "error"}]


# --- upgrades -------------------------------------------------------------------------------------


async def echo_upgrade(request: Request) -> Upgrade:
    async def echo(stream: UpgradedStream) -> None:
        while data := await stream.receive_some(65536):
            await stream.send_all(data.upper())
        await stream.send_eof()

    return Upgrade(echo)


async def test_upgrade_hands_over_the_raw_stream(nursery: trio.Nursery, tmp_path: Path) -> None:
    router = Router()
    router.add("POST", "/v1/containers/{id}/exec", echo_upgrade)
    path, _ = await start(nursery, tmp_path, router)

    def talk() -> bytes:
        sock = EngineClient(path).upgrade("POST", "/v1/containers/web/exec", {"cmd": ["sh"]})
        with sock:
            sock.sendall(b"hello ")
            received = sock.recv(100)
            sock.sendall(b"world")
            sock.shutdown(1)
            while data := sock.recv(100):
                received += data
        return received

    assert await in_thread(talk) == b"HELLO WORLD"


async def test_bytes_sent_right_after_the_upgrade_request_are_kept(
    nursery: trio.Nursery, tmp_path: Path, connect: Connect
) -> None:
    async def slow_to_switch(request: Request) -> Upgrade:
        await trio.sleep(0.1)  # the early bytes and the client's EOF are there before the 101
        return await echo_upgrade(request)

    router = Router()
    router.add("POST", "/v1/containers/{id}/exec", slow_to_switch)
    path, _ = await start(nursery, tmp_path, router)
    stream = (await connect(path)).stream
    await stream.send_all(b"POST /v1/containers/web/exec HTTP/1.1\r\nHost: s\r\n"
                          b"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
                          b"early bytes")
    await stream.send_eof()
    answer = b""
    while data := await stream.receive_some(65536):
        answer += data
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert rest == b"EARLY BYTES"


async def test_an_upgrade_endpoint_without_upgrade_headers_is_400(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    router = Router()
    router.add("POST", "/v1/containers/{id}/exec", echo_upgrade)
    path, _ = await start(nursery, tmp_path, router)
    with pytest.raises(EngineError, match="needs 'Connection: Upgrade'"):
        await in_thread(EngineClient(path).request, "POST", "/v1/containers/web/exec")


# --- stopping -------------------------------------------------------------------------------------


async def test_stop_lets_a_running_request_finish_and_refuses_new_ones(
    tmp_path: Path, connect: Connect
) -> None:
    started = trio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await trio.sleep(0.2)
        return Response({"done": True})

    router = Router()
    router.add("POST", "/v1/slow", slow)
    router.add("GET", "/v1/version", lambda request: _answer({}))
    path = str(tmp_path / "s.sock")
    async with trio.open_nursery() as nursery:
        server: HttpServer = await nursery.start(serve, path, router)
        idle = await connect(path)
        await idle.send("GET", "/v1/version")
        assert (await idle.response())[0] == 200
        busy = await connect(path)
        await busy.send("POST", "/v1/slow")
        await started.wait()
        server.stop()
        assert await busy.response() == (200, b'{"done":true}')
        assert await idle.stream.receive_some(100) == b""  # the idle connection was closed
    assert not os.path.exists(path)
    assert not await in_thread(EngineClient(path).is_running)


async def test_stop_cancels_what_outlives_the_grace_period(
    tmp_path: Path, connect: Connect
) -> None:
    cancelled = trio.Event()

    async def events(request: Request) -> Stream:
        async def forever() -> AsyncIterator[dict[str, Any]]:
            try:
                await trio.sleep_forever()
                yield {}
            finally:
                cancelled.set()

        return Stream(forever())

    router = Router()
    router.add("GET", "/v1/events", events)
    path = str(tmp_path / "s.sock")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server: HttpServer = await nursery.start(
                lambda task_status: serve(path, router, task_status=task_status, grace=0.1))
            connection = await connect(path)
            await connection.send("GET", "/v1/events")
            await trio.sleep(0.05)
            server.stop()
    assert cancelled.is_set()


# --- the API document ----------------------------------------------------------------------------

CONTAINER = {
    "id": "3f2a9c1b7d4e", "name": "demo-web-1", "project": "demo", "service": "web",
    "number": 1, "oneoff": False, "image": "busybox:latest", "command": "httpd -f",
    "state": "running", "health": "healthy", "exit_code": None, "created": 1700000000.5,
    "started_at": 1700000001.0, "finished_at": None,
    "labels": {"com.docker.compose.project": "demo"},
    "publishers": [{"url": "127.0.0.1", "target_port": 80, "published_port": 8080,
                    "protocol": "tcp"}],
    "networks": ["demo_default"],
}
PROGRESS = [
    {"resource": "network demo_default", "action": "create", "status": "done"},
    {"resource": "container demo-web-1", "action": "recreate", "status": "working",
     "message": "environment.DEBUG changed"},
    {"resource": "container demo-web-1", "action": "recreate", "status": "done"},
]


def stream_of(*items: dict[str, Any]) -> Any:
    async def handler(request: Request) -> Stream:
        async def lines() -> AsyncIterator[dict[str, Any]]:
            for item in items:
                yield item

        return Stream(lines())

    return handler


def answer(body: Any, status: int = 200) -> Any:
    async def handler(request: Request) -> Response:
        return Response(body, status)

    return handler


def sample_router() -> Router:
    """A handler for every operation of the document, answering what a real one would."""
    no_content = answer(None, 204)
    routes = {
        ("GET", "/v1/version"): answer({"version": "0.1.0", "api_version": "1", "pid": 42}),
        ("GET", "/v1/projects"): answer([{"name": "demo", "status": "running(2)",
                                          "working_dir": "/srv/demo",
                                          "config_files": ["/srv/demo/compose.yaml"]}]),
        ("PUT", "/v1/projects/{project}"): stream_of(*PROGRESS),
        ("POST", "/v1/projects/{project}/down"): stream_of(
            {"resource": "container demo-web-1", "action": "remove", "status": "done"},
            {"error": "network demo_default is in use"}),
        ("POST", "/v1/stacks/load"): answer({
            "name": "demo", "directory": "/srv/demo", "files": ["/srv/demo/compose.yaml"],
            "model": {"name": "demo", "services": {"web": {"image": "busybox"}}},
            "warnings": [], "config_hashes": {"web": "ab" * 32}}),
        ("GET", "/v1/containers"): answer([CONTAINER]),
        ("GET", "/v1/containers/{id}"): answer({**CONTAINER, "pid": 1234, "oom_killed": False,
                                                "restart_count": 0, "spec": {}}),
        ("DELETE", "/v1/containers/{id}"): no_content,
        ("GET", "/v1/containers/{id}/logs"): stream_of(
            {"time": "2024-05-01T10:00:00.123456789Z", "stream": "stdout", "line": "ready"},
            {"time": "2024-05-01T10:00:01.000000000Z", "stream": "stderr", "line": ""}),
        ("POST", "/v1/containers/{id}/wait"): answer({"exit_code": 3}),
        ("POST", "/v1/containers/{id}/exec"): echo_upgrade,
        ("POST", "/v1/projects/{project}/run"): stream_of(
            *PROGRESS, {"id": "3f2a9c1b" * 8, "name": "demo-web-run-0123456789ab"}),
        ("GET", "/v1/events"): stream_of(
            {"time": "2024-05-01T10:00:00.000000000Z", "type": "container",
             "action": "health_status", "id": "3f2a9c1b7d4e", "project": "demo",
             "service": "web", "attributes": {"health_status": "healthy"}}),
        ("POST", "/v1/engine/stop"): answer({"message": "stopping"}, 202),
    }
    for action in ("start", "stop", "restart", "kill", "pause", "unpause"):
        routes[("POST", f"/v1/containers/{{id}}/{action}")] = no_content
    for action in ("start", "stop", "restart", "kill", "pause", "unpause", "remove"):
        routes[("POST", f"/v1/projects/{{project}}/{action}")] = stream_of(*PROGRESS)
    routes |= {
        ("POST", "/v1/projects/{project}/wait"): stream_of(
            {"id": "3f2a9c1b" * 8, "name": "demo-job-1", "service": "job", "exit_code": 3}),
        ("GET", "/v1/projects/{project}/images"): answer([
            {"container": "demo-web-1", "service": "web", "repository": "busybox",
             "tag": "latest", "image_id": "sha256:" + "ab" * 32, "size": 4_260_000}]),
        ("GET", "/v1/containers/{id}/top"): answer({
            "titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "processes": [["root", "4242", "4230", "0", "10:00", "?", "00:00:00", "httpd -f"]]}),
        ("GET", "/v1/containers/{id}/archive"): echo_upgrade,
        ("PUT", "/v1/containers/{id}/archive"): echo_upgrade,
        ("GET", "/v1/containers/{id}/archive/stat"): answer({"path": "/www", "kind": "directory"}),
    }
    router = Router()
    for (method, pattern), handler in routes.items():
        router.add(method, pattern, handler)
    return router


async def test_the_api_document_is_valid_openapi() -> None:
    import openapi_spec_validator

    openapi_spec_validator.validate(ApiDocument().document)


async def test_every_documented_operation_has_a_handler_and_no_more() -> None:
    assert sample_router().routes() == openapi_routes()


async def test_documented_request_bodies_refuse_unknown_fields() -> None:
    import jsonschema

    document = ApiDocument()
    apply = {"model": {"name": "demo", "services": {}}, "config_hashes": {"web": "0" * 64},
             "working_dir": "/srv/demo", "options": {"scale": {"web": 3}, "dry_run": True}}
    document.check_request("PUT", "/v1/projects/{project}", apply)
    with pytest.raises(jsonschema.ValidationError):
        document.check_request("PUT", "/v1/projects/{project}", {**apply, "extra": 1})
    with pytest.raises(jsonschema.ValidationError):
        document.check_request("POST", "/v1/containers/{id}/exec", {"cmd": "sh"})


async def test_answers_match_the_documented_schemas(nursery: trio.Nursery, tmp_path: Path) -> None:
    document = ApiDocument()
    path, _ = await start(nursery, tmp_path, sample_router())
    client = EngineClient(path)

    def call(method: str, pattern: str) -> tuple[int, Any]:
        target = pattern.replace("{id}", "demo-web-1").replace("{project}", "demo")
        media = document.response_content_type(method, pattern, 200)
        if media == "application/x-ndjson":
            lines: list[dict[str, Any]] = []
            try:
                lines.extend(client.stream(method, target, {}))
            except EngineError as error:  # the error line, checked as a line
                lines.append({"error": str(error)})
            return 200, lines
        if pattern.endswith("/exec"):
            client.upgrade(method, target, {"cmd": ["sh"]}).close()
            return 101, None
        if pattern.endswith("/archive"):
            client.upgrade(method, target, query={"path": "/www"}).close()
            return 101, None
        return client.request(method, target)

    for method, pattern in sorted(openapi_routes()):
        status, body = await in_thread(call, method, pattern)
        document.check_response(method, pattern, status, body)
    with pytest.raises(EngineError) as error:
        await in_thread(client.request, "GET", "/v1/nothing")
    client.close()
    document.check_response("GET", "/v1/version", error.value.status,
                            {"message": str(error.value)})
