"""The CLI's engine client: what it sends, how it reads answers, and how it fails."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator.cli import engine_client
from orchestrator.cli.engine_client import EngineClient, EngineError, EngineUnavailable
from orchestrator.engine.http import HttpServer, Request, Response, Router
from orchestrator.spec.errors import StackError


class FakeEngine:
    """A socket that answers each request with the next canned bytes, and notes what it got."""

    def __init__(self, path: Path, answers: list[bytes]) -> None:
        self.path = str(path)
        self.answers = answers
        self.requests: list[tuple[int, str, bytes]] = []  # connection number, line, body
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        number = 0
        while self.answers:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                self._serve(connection, number)
            number += 1

    def _serve(self, connection: socket.socket, number: int) -> None:
        data = b""
        while self.answers:
            while b"\r\n\r\n" not in data:
                more = connection.recv(65536)
                if not more:
                    return
                data += more
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            length = next((int(line.split(":")[1]) for line in lines
                           if line.lower().startswith("content-length:")), 0)
            while len(data) < length:
                data += connection.recv(65536)
            body, data = data[:length], data[length:]
            self.requests.append((number, lines[0], body))
            connection.sendall(self.answers.pop(0))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Any]:
    engines: list[FakeEngine] = []

    def make(*answers: bytes) -> FakeEngine:
        engines.append(FakeEngine(tmp_path / "s.sock", list(answers)))
        return engines[-1]

    yield make
    for engine in engines:
        engine.close()


def json_answer(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def chunked(*chunks: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")


def test_no_engine_is_one_clear_error(tmp_path: Path) -> None:
    client = EngineClient(tmp_path / "s.sock")
    with pytest.raises(EngineUnavailable, match="the stack engine is not running"):
        client.request("GET", "/v1/version")
    assert not client.is_running()


def test_a_socket_nobody_listens_on_is_not_a_running_engine(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as left_behind:
        left_behind.bind(str(tmp_path / "s.sock"))
        client = EngineClient(tmp_path / "s.sock")
        assert not client.is_running()
        with pytest.raises(EngineUnavailable):
            client.request("GET", "/v1/version")


def test_the_socket_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_SOCKET", "/somewhere/engine.sock")
    assert EngineClient().socket_path == "/somewhere/engine.sock"


def test_requests_carry_json_and_query_and_reuse_the_connection(fake: Any) -> None:
    engine = fake(json_answer(b'{"id":"abc"}'), json_answer(b"[]"))
    client = EngineClient(engine.path)
    assert client.request("PUT", "/v1/projects/demo", {"model": {"x": 1}}) == (200, {"id": "abc"})
    assert client.request("GET", "/v1/containers",
                          query={"project": "my demo", "all": True, "since": None}) == (200, [])
    assert engine.requests == [
        (0, "PUT /v1/projects/demo HTTP/1.1", b'{"model":{"x":1}}'),
        (0, "GET /v1/containers?project=my+demo&all=true HTTP/1.1", b""),
    ]


def test_a_connection_the_engine_closed_is_replaced(fake: Any) -> None:
    engine = fake(json_answer(b"1", extra=b"Connection: close\r\n"), json_answer(b"2"))
    client = EngineClient(engine.path)
    assert client.request("GET", "/v1/version") == (200, 1)
    assert client.request("GET", "/v1/version") == (200, 2)
    assert [number for number, _, _ in engine.requests] == [0, 1]


def test_a_refusal_raises_its_message_and_status(fake: Any) -> None:
    engine = fake(json_answer(b'{"message":"no such container: web"}', "404 Not Found"),
                  json_answer(b"Bad Gateway", "502 Bad Gateway"))
    client = EngineClient(engine.path)
    with pytest.raises(EngineError, match="^no such container: web$") as error:
        client.request("GET", "/v1/containers/web")
    assert error.value.status == 404
    assert isinstance(error.value, StackError)
    with pytest.raises(EngineError, match="^Bad Gateway$"):
        client.request("GET", "/v1/containers/web")


def test_stream_lines_are_whole_however_the_chunks_cut_them(fake: Any) -> None:
    engine = fake(chunked(b'{"n":1}\n{"n"', b':2}\n', b'{"n":3}', b"\n"))
    lines = EngineClient(engine.path).stream("GET", "/v1/events")
    assert list(lines) == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_a_refused_stream_raises_before_any_line(fake: Any) -> None:
    engine = fake(json_answer(b'{"message":"no such project: demo"}', "404 Not Found"))
    with pytest.raises(EngineError, match="no such project: demo"):
        next(EngineClient(engine.path).stream("POST", "/v1/projects/demo/down"))


def test_an_engine_that_stops_mid_answer_is_an_error(fake: Any) -> None:
    engine = fake(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"trunc")
    client = EngineClient(engine.path)
    with pytest.raises(StackError, match="closed the connection"):
        client.request("GET", "/v1/version")


def test_upgrade_keeps_the_bytes_that_follow_the_switch(fake: Any) -> None:
    engine = fake(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                  b"Upgrade: tcp\r\n\r\n\x01\x00\x00\x00\x00\x00\x00\x02hi")
    sock = EngineClient(engine.path).upgrade("POST", "/v1/containers/web/exec", {"cmd": ["sh"]})
    with sock:
        received = b""
        while len(received) < 10:
            received += sock.recv(100)
    assert received == b"\x01\x00\x00\x00\x00\x00\x00\x02hi"
    line = engine.requests[0][1]
    assert line == "POST /v1/containers/web/exec HTTP/1.1"


def test_a_refused_upgrade_raises_its_message(fake: Any) -> None:
    engine = fake(json_answer(b'{"message":"container web is not running"}', "409 Conflict"))
    with pytest.raises(EngineError, match="container web is not running"):
        EngineClient(engine.path).upgrade("POST", "/v1/containers/web/exec", {"cmd": ["sh"]})


@pytest.mark.trio
async def test_is_running_and_idle_connections_against_the_real_server(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def version(request: Request) -> Response:
        return Response({"version": "0.1.0", "api_version": "1"})

    router = Router()
    router.add("GET", "/v1/version", version)
    path = str(tmp_path / "s.sock")
    await nursery.start(HttpServer(router, idle_timeout=0.05).serve, path)
    client = EngineClient(path)
    assert await trio.to_thread.run_sync(client.is_running)
    assert await trio.to_thread.run_sync(client.request, "GET", "/v1/version") == (
        200, {"version": "0.1.0", "api_version": "1"})
    await trio.sleep(0.2)  # the engine closes the idle kept-alive connection meanwhile
    assert (await trio.to_thread.run_sync(client.request, "GET", "/v1/version"))[0] == 200
    client.close()
    assert caplog.text == ""


def test_the_client_loads_neither_trio_nor_h11() -> None:
    # A fresh interpreter: this test process has both loaded already.
    code = ("import sys, orchestrator.cli.engine_client; "
            "print(sorted(m for m in ('trio', 'h11') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_an_upgrade_takes_the_head_and_leaves_the_stream_s_first_bytes(fake: Any) -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"
    engine = fake(switch + b"raw frames")
    sock = EngineClient(engine.path).upgrade("POST", "/v1/x", {"a": 1})
    try:
        assert sock.recv(100) == b"raw frames"
    finally:
        sock.close()


def test_an_upgrade_head_cut_inside_its_blank_line_is_read_whole() -> None:
    ours, theirs = socket.socketpair()

    def send_in_two() -> None:
        theirs.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r")
        threading.Event().wait(0.2)  # the client has taken the first part by then
        theirs.sendall(b"\nfirst frame")

    sender = threading.Thread(target=send_in_two)
    sender.start()
    try:
        head = engine_client._upgrade_head(ours)
        sender.join()
        assert head == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"
        assert ours.recv(100) == b"first frame"
    finally:
        sender.join()
        ours.close()
        theirs.close()
