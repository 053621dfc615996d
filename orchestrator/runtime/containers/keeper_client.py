"""Talking to the keeper from trio code, starting it when nobody answers.

One connection per request: connecting to a unix socket costs microseconds,
and a connection that carries a long wait (an exec, a `wait`) then belongs to
exactly one caller, which cancelling simply closes.
"""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from orchestrator.runtime.containers.keeper import SOCKET_NAME
from orchestrator.spec.errors import StackError

START_TIMEOUT = 10.0


class KeeperConnection:
    def __init__(self, sock: trio.socket.SocketType):
        self.sock = sock
        self.buffer = b""

    async def send(self, request: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        data = json.dumps(request).encode() + b"\n"
        if fds:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            await self.sock.sendmsg([data], rights)
        else:
            await self.sock.send(data)

    async def receive(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.sock.recv(65536)
            if not chunk:
                raise StackError("the container keeper went away while answering")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        self.sock.close()

    async def __aenter__(self) -> KeeperConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class KeeperClient:
    def __init__(self, root: Path):
        self.root = root
        self.path = root / SOCKET_NAME

    async def connect(self) -> KeeperConnection:
        try:
            return await self._try_connect()
        except OSError:
            pass
        self._spawn()
        with trio.move_on_after(START_TIMEOUT):
            while True:
                try:
                    return await self._try_connect()
                except OSError:
                    await trio.sleep(0.005)
        raise StackError(f"the container keeper did not start; see {self.root / 'keeper.log'}")

    async def _try_connect(self) -> KeeperConnection:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.connect(str(self.path))
        except BaseException:
            sock.close()
            raise
        return KeeperConnection(sock)

    def _spawn(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = os.open(self.root / "keeper.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            subprocess.Popen(
                [sys.executable, "-m", "orchestrator.runtime.containers.keeper", str(self.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True,
            )
        finally:
            os.close(log)

    async def request(self, request: dict[str, Any], fds: tuple[int, ...] = ()) -> dict[str, Any]:
        async with await self.connect() as connection:
            await connection.send(request, fds)
            return await connection.receive()

    async def running(self) -> bool:
        try:
            connection = await self._try_connect()
        except OSError:
            return False
        connection.close()
        return True

    async def shutdown(self) -> None:
        """Stop the keeper (tests, uninstall); containers it started keep running."""
        if await self.running():
            async with await self._try_connect() as connection:
                await connection.send({"op": "shutdown"})
                await connection.receive()
            with trio.move_on_after(5):
                while self.path.exists():
                    await trio.sleep(0.01)
