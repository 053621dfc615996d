"""How a handler's result goes out on the wire: JSON, newline-delimited JSON, or a switch.

The other half of an exchange from `http_requests.py`, kept apart because
sending has rules of its own that reading does not share:

- a `Response` is one JSON body with its length;
- a `Stream` answers with newline-delimited JSON, one object a line, in chunks
  as the handler produces them; a failure after the head is a last line
  `{"error": ...}`, since the status has already gone out;
- an `Upgrade` answers `101 Switching Protocols` and hands the handler the raw
  byte stream (exec, attach).

Everything here writes h11 events to the transport it is given; nothing reads
a request.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import h11
import trio

from orchestrator.engine.http_routing import (
    Request,
    Response,
    Send,
    Stream,
    Upgrade,
    UpgradedStream,
)
from orchestrator.runtime.nurseries import open_nursery
from orchestrator.spec.errors import StackError

logger = logging.getLogger(__name__)

UPGRADE_PROTOCOL = "tcp"
CLIENT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)  # the client went away


def reason(status: int) -> bytes:
    """The status line's phrase (`Not Found`), empty for a status HTTP does not name."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def internal_message(error: Exception) -> str:
    return f"internal error in the engine: {type(error).__name__}: {error} (see the engine log)"


async def send_response(
    conn: h11.Connection, transport: trio.SocketStream, response: Response
) -> None:
    headers = list(response.headers)
    if response.body is None:
        data = b""
    else:
        data = response.encoded if response.encoded is not None else json_bytes(response.body)
        headers.append(("Content-Type", "application/json"))
    if response.status not in (204, 304):
        headers.append(("Content-Length", str(len(data))))
    out = conn.send(h11.Response(
        status_code=response.status, headers=headers, reason=reason(response.status)))
    if data:
        out += conn.send(h11.Data(data=data))
    out += conn.send(h11.EndOfMessage())
    await transport.send_all(out)


async def send_malformed_request(
    conn: h11.Connection, transport: trio.SocketStream, status: int, message: str
) -> None:
    """A last answer to a request h11 could not parse, if the state still allows one."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    with contextlib.suppress(h11.LocalProtocolError, *CLIENT_GONE):
        await send_response(conn, transport, Response(
            {"message": f"malformed request: {message}"}, status, [("Connection", "close")]))


async def send_stream(
    conn: h11.Connection, transport: trio.SocketStream, stream: Stream, request: Request
) -> None:
    headers = [("Content-Type", "application/x-ndjson"), ("Cache-Control", "no-cache")]
    head = h11.Response(status_code=stream.status, headers=headers, reason=reason(stream.status))
    await transport.send_all(conn.send(head))

    async def send_each(items: AsyncIterable[Any]) -> None:
        async for item in items:
            await transport.send_all(conn.send(h11.Data(data=json_bytes(item) + b"\n")))

    if stream.producer is not None:
        await _lines_then_end(conn, transport, request, _produced(stream.producer, send_each))
        return
    assert stream.items is not None
    items = aiter(stream.items)
    try:
        await _lines_then_end(conn, transport, request, send_each(items))
    finally:
        # A generator suspended in the middle (the client left) runs its cleanup now,
        # bounded, and even when we are being cancelled ourselves.
        close = getattr(items, "aclose", None)
        if close is not None:
            with trio.CancelScope(shield=True) as cleanup:
                cleanup.deadline = trio.current_time() + 5
                try:
                    await close()
                except Exception:
                    logger.exception("%s %s: closing the stream failed", request.method,
                                     request.path)


async def _produced(
    producer: Callable[[Send], Awaitable[None]],
    send_each: Callable[[AsyncIterable[Any]], Awaitable[None]],
) -> None:
    """`producer` in a task beside the loop that sends what it produces, a line each; the
    client leaving cancels it."""
    send, receive = trio.open_memory_channel[Any](256)

    async def produce() -> None:
        async with send:
            await producer(send.send)

    async with open_nursery() as nursery:
        nursery.start_soon(produce)
        async with receive:
            await send_each(receive)


async def _lines_then_end(
    conn: h11.Connection, transport: trio.SocketStream, request: Request,
    sending: Awaitable[None],
) -> None:
    """Await the lines being sent, then end the stream: after an error line when they
    stopped on a user's mistake or on our fault (a client gone ends nothing)."""
    try:
        await sending
    except StackError as error:
        line = {"error": str(error)}
    except CLIENT_GONE:
        raise
    except Exception as error:
        logger.exception("%s %s failed while streaming", request.method, request.path)
        line = {"error": internal_message(error)}
    else:
        line = None
    if line is not None:
        await transport.send_all(conn.send(h11.Data(data=json_bytes(line) + b"\n")))
    await transport.send_all(conn.send(h11.EndOfMessage()))


async def switch_protocols(
    conn: h11.Connection, transport: trio.SocketStream, upgrade: Upgrade, request: Request
) -> None:
    protocol = request.headers.get("upgrade")
    if conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL or not protocol:
        await send_response(conn, transport, Response(
            {"message": f"{request.path} needs 'Connection: Upgrade' and "
                        f"'Upgrade: {UPGRADE_PROTOCOL}' headers"}, 400))
        return
    await transport.send_all(conn.send(h11.InformationalResponse(
        status_code=101, headers=[("Connection", "Upgrade"), ("Upgrade", protocol)],
        reason=reason(101))))
    early, _closed = conn.trailing_data
    upgraded = UpgradedStream(transport, bytes(early))
    try:
        await upgrade.run(upgraded)
    except CLIENT_GONE:
        pass
    except Exception:
        logger.exception("%s %s failed after the upgrade", request.method, request.path)
