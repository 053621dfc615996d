"""Bad requests to a real stackd get a 4xx with a message and change nothing."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack_cli import engine_env, engine_process

pytestmark = pytest.mark.slow


@pytest.fixture
def engine_socket(container_root: Path, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "stack.sock"
    with engine_process(engine_env(container_root, path)):
        yield path


def raw(path: Path, request: bytes) -> tuple[int, dict]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        while len(body) < length:
            body += sock.recv(65536)
    return status, json.loads(body) if body else {}


def put(path: Path, body: bytes, extra: str = "") -> tuple[int, dict]:
    return raw(path, (f"PUT /v1/projects/demo HTTP/1.1\r\nHost: x\r\n{extra}"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)


def test_socket_is_not_world_writable(engine_socket: Path) -> None:
    mode = stat.S_IMODE(engine_socket.stat().st_mode)
    assert mode & 0o007 == 0


def test_malformed_json_is_a_400_with_a_message(engine_socket: Path) -> None:
    status, body = put(engine_socket, b"{not json")
    assert status == 400 and "not valid JSON" in body["message"]


def test_unknown_field_and_wrong_types_are_400(engine_socket: Path) -> None:
    status, body = put(engine_socket, json.dumps(
        {"model": {}, "config_hashes": {}, "working_dir": "/", "bogus": 1}).encode())
    assert status == 400 and "bogus" in body["message"]
    status, body = put(engine_socket, json.dumps(
        {"model": [], "config_hashes": {}, "working_dir": "/"}).encode())
    assert status == 400 and "model" in body["message"]


def test_huge_body_is_a_413(engine_socket: Path) -> None:
    status, body = raw(engine_socket, b"PUT /v1/projects/demo HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 999999999\r\n\r\n")
    assert status == 413 and body["message"]


def test_unknown_path_is_404_and_nothing_changed(engine_socket: Path,
                                                  container_root: Path) -> None:
    status, body = raw(engine_socket, b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404 and body["message"]
    assert not (container_root / "stacks" / "demo.json").exists()


def test_model_that_is_not_a_stack_is_a_400(engine_socket: Path) -> None:
    status, body = put(engine_socket, json.dumps(
        {"model": {"name": "demo", "services": {"web": {"image": 5, "ports": "x"}}},
         "config_hashes": {}, "working_dir": "/"}).encode())
    assert status == 400 and body["message"].startswith("invalid model:")
