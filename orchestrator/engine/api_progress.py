"""What the /v1 handlers share: checking a model, and streaming an operation's progress."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator.engine.http_routing import HttpError, Send, Stream
from orchestrator.spec.errors import StackError

Emit = Callable[[dict[str, Any]], Awaitable[None]]


def check_model(model: dict[str, Any]) -> None:
    """A model from the API is checked against the stack schema like a file is: a
    client other than our CLI may send anything."""
    from orchestrator.spec.errors import SourceMap
    from orchestrator.spec.schema import validate_schema

    try:
        validate_schema(copy.deepcopy(model), SourceMap("model"))
    except StackError as error:
        raise HttpError(400, f"invalid model: {error}") from None
    if not isinstance(model.get("services"), dict) or not model["services"]:
        raise HttpError(400, "invalid model: no services")


def progress_line(event: dict[str, Any]) -> dict[str, Any]:
    """An engine event as the API's ProgressEvent."""
    kind = event.get("kind")
    if kind == "warning":
        return {"resource": "", "action": "warn", "status": "warning",
                "message": event["message"]}
    if kind == "plan":
        return {"resource": "", "action": "plan", "status": "planned",
                "message": event["message"]}
    if "resource" not in event:  # already in the API's shape
        return event
    status = event.get("status", "done")
    line = {"resource": event["resource"], "action": event.get("change") or event["action"],
            "status": "error" if status == "skipped" else status}
    if event.get("message"):
        line["message"] = event["message"]
    return line


def progress_stream(operation: Callable[[Emit], Awaitable[Any]]) -> Stream:
    """A response streaming `operation`'s events as ProgressEvents as they come; a user's
    mistake ends it with an error line. The operation runs as the stream's producer (see
    `Stream`), so the client leaving cancels it."""

    async def produce(send: Send) -> None:
        async def emit(event: dict[str, Any]) -> None:
            await send(progress_line(event))

        try:
            await operation(emit)
        except StackError as error:
            await send({"error": str(error)})

    return Stream(producer=produce)
