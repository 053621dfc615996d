"""An operation's progress stream ends the way the HTTP server expects, on any trio version."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from orchestrator.engine.api_progress import Emit, progress_stream
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.trio


async def test_a_reader_that_leaves_early_closes_the_stream_and_cancels_the_operation() -> None:
    cancelled = trio.Event()

    async def operation(emit: Emit) -> None:
        await emit({"kind": "warning", "message": "first"})
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    stream = progress_stream(operation)
    assert (await stream.__anext__())["message"] == "first"
    await stream.aclose()  # what the server does when the client has gone
    assert cancelled.is_set()


async def test_a_users_mistake_ends_the_stream_with_one_error_line() -> None:
    async def operation(emit: Emit) -> None:
        await emit({"kind": "warning", "message": "working"})
        raise StackError("service web: no such image")

    lines: list[dict[str, Any]] = [line async for line in progress_stream(operation)]
    assert lines[-1] == {"error": "service web: no such image"}


async def test_an_unexpected_failure_comes_out_as_itself() -> None:
    """The server logs it and tells the client `internal error: OSError: ...`."""

    async def operation(emit: Emit) -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        async for _ in progress_stream(operation):
            pass
