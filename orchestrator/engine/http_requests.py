"""One request on a connection: read it within its limits, route it, run its handler.

The server (`http.py`) owns connections and their lifetimes; this is what
happens between one request's head arriving and its answer being handed to
`http_responses.py`. Kept apart because it carries the per-request rules:

- a body is read whole before the handler runs, up to the route's limit
  (a 413 and a closed connection beyond it);
- an error is `{"message": ...}` with a 4xx status for a bad request (a
  `StackError` from a handler) and 500 for our fault;
- a request whose client goes away is cancelled, as a request context is in
  Go's net/http: nobody is left to read its answer. A handler that must finish
  its work anyway shields it.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

import h11
import trio

from orchestrator.engine.http_responses import (
    CLIENT_GONE,
    internal_message,
    json_bytes,
    reason,
    send_response,
    send_stream,
    switch_protocols,
)
from orchestrator.engine.http_routing import (
    DEFAULT_MAX_BODY,
    HttpError,
    Request,
    Response,
    Result,
    Route,
    Router,
    Stream,
    Upgrade,
)
from orchestrator.spec.errors import StackError

logger = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
RECEIVE_SIZE = 64 * 1024


class ClientGone(Exception):
    """The client ended its side in the middle of a request."""


async def answer_request(
    router: Router, conn: h11.Connection, transport: trio.SocketStream, event: h11.Request
) -> bool:
    """Answer one request; whether the connection may serve another."""
    method = event.method.decode("ascii", "replace").upper()
    target = event.target.decode("ascii", "replace")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    try:
        route, params = router.resolve(method, path)
    except HttpError as error:
        route, params, refusal = None, {}, error
    limit = route.max_body if route else DEFAULT_MAX_BODY
    body = await _read_body(conn, transport, limit, headers)
    if body is None:
        size = f"{limit / (1 << 20):g} MiB" if limit >= 1 << 20 else f"{limit} bytes"
        await send_response(conn, transport, Response(
            {"message": f"request body too large (the limit is {size})"}, 413,
            [("Connection", "close")],
        ))
        return False
    if route is None:
        await send_response(conn, transport, _error_response(refusal))
        return True
    query_params = parse_qs(query, keep_blank_values=True)
    request = Request(method, path, params, query_params, headers, body)
    return await _dispatch(conn, transport, route, request)


async def _dispatch(
    conn: h11.Connection, transport: trio.SocketStream, route: Route, request: Request
) -> bool:
    gone = False
    result: Result | None = None
    with trio.CancelScope() as request_scope:
        async with trio.open_nursery() as nursery:
            watch_scope = trio.CancelScope()

            async def watch() -> None:
                nonlocal gone
                with watch_scope:
                    await _wait_client_gone(conn, transport)
                    gone = True
                    request_scope.cancel()

            # A client that will switch protocols may send its first bytes and even
            # half-close before the switch: those belong to the upgraded stream.
            if "upgrade" not in request.headers:
                nursery.start_soon(watch)
            # Nothing but cancellation may leave this nursery: the connection's
            # handling must not depend on how exceptions get grouped.
            try:
                result = await _call(route, request)
                if isinstance(result, Stream):
                    await send_stream(conn, transport, result, request)
            except CLIENT_GONE:
                gone = True
            finally:
                watch_scope.cancel()
    if gone or result is None:
        return False
    if isinstance(result, Response):
        await send_response(conn, transport, result)
        return True
    if isinstance(result, Upgrade):
        await switch_protocols(conn, transport, result, request)
        return False
    return True  # a stream, already sent


async def _call(route: Route, request: Request) -> Result:
    try:
        result = await route.handler(request)
        if isinstance(result, Response) and result.body is not None:
            if result.status in (204, 304) or result.status < 200:
                raise TypeError(f"a {result.status} answer cannot have a body")
            result.encoded = json_bytes(result.body)  # if it cannot be, our fault: a 500
        if not isinstance(result, Response | Stream | Upgrade):
            raise TypeError(f"handler returned {type(result).__name__}, not a Response")
        return result
    except StackError as error:
        return _error_response(error)
    except Exception as error:
        logger.exception("%s %s failed", request.method, request.path)
        return Response({"message": internal_message(error)}, 500)


def _error_response(error: StackError) -> Response:
    """A user's mistake: 400 unless the error carries another 4xx/5xx status."""
    status = getattr(error, "status", 400)
    if not isinstance(status, int) or not 400 <= status <= 599:
        status = 400
    return Response({"message": str(error)}, status, list(getattr(error, "headers", [])))


async def next_event(conn: h11.Connection, transport: trio.SocketStream) -> Any:
    """h11's next event, reading from the client as long as h11 needs more bytes."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await transport.receive_some(RECEIVE_SIZE))


async def _read_body(
    conn: h11.Connection, transport: trio.SocketStream, limit: int, headers: dict[str, str]
) -> bytes | None:
    """The whole request body, or None when it is over `limit` (not read any further)."""
    declared = headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > limit:
        return None
    if conn.they_are_waiting_for_100_continue:
        go_on = h11.InformationalResponse(status_code=100, headers=[], reason=reason(100))
        await transport.send_all(conn.send(go_on))
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await next_event(conn, transport)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                return None
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise ClientGone()


async def _wait_client_gone(conn: h11.Connection, transport: trio.SocketStream) -> None:
    """Return when the client closes its end; bytes it sends meanwhile wait in h11's buffer."""
    buffered = 0
    while True:
        try:
            data = await transport.receive_some(RECEIVE_SIZE)
        except CLIENT_GONE:
            return
        if not data:
            return
        conn.receive_data(data)
        buffered += len(data)
        if buffered > MAX_HEAD + DEFAULT_MAX_BODY:
            # Pipelining this much is no client of ours: stop reading, so TCP-style
            # backpressure (a full socket buffer) holds it back.
            await trio.sleep_forever()
