"""An operation's progress, streamed by the real HTTP server to a real client: it ends the
way a client expects, on any trio version, and an operation that finishes at once (a
`down` with nothing left to do) ends its stream at once, every time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator.cli.engine_client import EngineClient, EngineError
from orchestrator.engine.api_progress import Emit, progress_stream
from orchestrator.engine.http import HttpServer, Request, Router, Stream
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.trio


async def serve(nursery: trio.Nursery, tmp_path: Path, operation: Any) -> str:
    async def handler(request: Request) -> Stream:
        return progress_stream(operation)

    router = Router()
    router.add("POST", "/v1/projects/{project}/down", handler)
    path = str(tmp_path / "s.sock")
    await nursery.start(HttpServer(router).serve, path)
    return path


def read_all(path: str) -> list[dict[str, Any]]:
    return list(EngineClient(path).stream("POST", "/v1/projects/demo/down", {}))


async def test_a_client_that_leaves_cancels_the_operation(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cancelled = trio.Event()

    async def operation(emit: Emit) -> None:
        await emit({"kind": "warning", "message": "first"})
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    path = await serve(nursery, tmp_path, operation)
    lines = EngineClient(path).stream("POST", "/v1/projects/demo/down", {})
    assert (await trio.to_thread.run_sync(next, lines))["message"] == "first"
    lines.close()
    with trio.fail_after(5):
        await cancelled.wait()


async def test_a_users_mistake_ends_the_stream_with_one_error_line(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def operation(emit: Emit) -> None:
        await emit({"kind": "warning", "message": "working"})
        raise StackError("service web: no such image")

    path = await serve(nursery, tmp_path, operation)
    seen: list[dict[str, Any]] = []

    def read() -> None:
        for line in EngineClient(path).stream("POST", "/v1/projects/demo/down", {}):
            seen.append(line)

    with pytest.raises(EngineError, match="^service web: no such image$"):
        await trio.to_thread.run_sync(read)
    assert seen == [{"resource": "", "action": "warn", "status": "warning",
                     "message": "working"}]


async def test_an_unexpected_failure_is_an_internal_error_line_and_the_server_goes_on(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def operation(emit: Emit) -> None:
        raise OSError("disk gone")

    path = await serve(nursery, tmp_path, operation)
    with pytest.raises(EngineError, match="internal error in the engine: OSError: disk gone"):
        await trio.to_thread.run_sync(read_all, path)
    with pytest.raises(EngineError):  # and again: the server still answers
        await trio.to_thread.run_sync(read_all, path)


async def test_operations_that_finish_at_once_end_their_streams_every_time(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def nothing_to_do(emit: Emit) -> None:
        return None

    path = await serve(nursery, tmp_path, nothing_to_do)
    with trio.fail_after(20):
        for _ in range(300):
            assert await trio.to_thread.run_sync(read_all, path) == []
