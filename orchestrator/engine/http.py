"""The engine's HTTP/1.1 server: h11 on trio, on a unix socket.

h11 does the protocol and never touches the socket; this module does the I/O,
the routing and the conventions every /v1 endpoint shares (described for
clients in `schemas/engine-api.yaml`):

- request and response bodies are JSON; an error is `{"message": ...}` with a 4xx
  status for a bad request (a `StackError` from a handler) and 500 for our fault;
- a `Stream` answers with newline-delimited JSON, one object a line, in chunks
  as the handler produces them; a failure after the head is a last line
  `{"error": ...}`, since the status has already gone out;
- an `Upgrade` answers `101 Switching Protocols` and hands the handler the raw
  byte stream (exec, attach);
- a request whose client goes away is cancelled, as a request context is in
  Go's net/http: nobody is left to read its answer. A handler that must finish
  its work anyway shields it.

Every connection is a task in a nursery the server owns; `HttpServer.stop()`
stops accepting, closes idle connections and gives running requests a grace
period before cancelling them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import h11
import trio

from orchestrator.engine.http_routing import (  # the handlers' vocabulary, used from here
    DEFAULT_MAX_BODY,
    Handler,
    HttpError,
    Request,
    Response,
    Result,
    Route,
    Router,
    Send,
    Stream,
    Upgrade,
    UpgradedStream,
    check_object,
)
from orchestrator.runtime.nurseries import open_nursery
from orchestrator.spec.errors import StackError

__all__ = [
    "DEFAULT_MAX_BODY", "Handler", "HttpError", "HttpServer", "Request", "Response", "Result",
    "Route", "Router", "Send", "Stream", "Upgrade", "UpgradedStream", "check_object", "serve",
]

logger = logging.getLogger(__name__)

"""Bytes a request body may have unless its route allows more (a project model: 16 MiB)."""
MAX_HEAD = 64 * 1024
RECEIVE_SIZE = 64 * 1024
SOCKET_MODE = 0o660
UPGRADE_PROTOCOL = "tcp"
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)  # the client went away


# --- the server -------------------------------------------------------------------------------


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class _ClientGone(Exception):
    pass


@dataclass(eq=False)
class _Connection:
    scope: trio.CancelScope
    busy: bool = False


class HttpServer:
    def __init__(
        self, router: Router, *, grace: float = 10.0, idle_timeout: float = 300.0
    ) -> None:
        self.router = router
        self.grace = grace
        self.idle_timeout = idle_timeout
        self._stopping = False
        self._accepting: trio.CancelScope | None = None
        self._connection_scope: trio.CancelScope | None = None
        self._connections: set[_Connection] = set()

    def stop(self) -> None:
        """Stop accepting; idle connections close now, running requests get `grace` seconds."""
        if self._stopping:
            return
        self._stopping = True
        if self._accepting is not None:
            self._accepting.cancel()
        for connection in list(self._connections):
            if not connection.busy:
                connection.scope.cancel()
        if self._connection_scope is not None:
            self._connection_scope.deadline = trio.current_time() + self.grace

    async def serve(
        self, socket_path: str | os.PathLike[str],
        *, task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until `stop()` has run its course (or until cancelled)."""
        path = Path(socket_path)
        listener, inode = await _listen(path)
        try:
            with trio.CancelScope() as self._connection_scope:
                async with trio.open_nursery() as nursery:
                    task_status.started(self)
                    with trio.CancelScope() as self._accepting:
                        if self._stopping:
                            self._accepting.cancel()
                        await self._accept(listener, nursery)
        finally:
            await trio.aclose_forcefully(listener)
            with contextlib.suppress(OSError):
                if path.stat().st_ino == inode:
                    path.unlink()

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                transport = await listener.accept()
            except OSError as error:
                if error.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    raise
                # Out of descriptors: wait for some connections to end rather than spin.
                logger.error("cannot accept a connection: %s", error)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(self._connection, transport)

    async def _connection(self, transport: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        with trio.CancelScope() as scope:
            entry = _Connection(scope)
            self._connections.add(entry)
            try:
                await self._serve_requests(conn, transport, entry)
            except h11.RemoteProtocolError as error:
                await _send_error(conn, transport, error.error_status_hint, str(error))
            except (*_GONE, _ClientGone):
                pass
            except Exception:
                # A bug in one exchange (say, a body on a 204) must not end the server.
                logger.exception("connection failed")
            finally:
                self._connections.discard(entry)
                await trio.aclose_forcefully(transport)

    async def _serve_requests(
        self, conn: h11.Connection, transport: trio.SocketStream, entry: _Connection
    ) -> None:
        while not self._stopping:
            entry.busy = False
            event = None
            with trio.move_on_after(self.idle_timeout):
                event = await _next_event(conn, transport)
            if not isinstance(event, h11.Request):
                return  # idle for too long, or the client closed the connection
            entry.busy = True
            if not await self._handle(conn, transport, event):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _handle(
        self, conn: h11.Connection, transport: trio.SocketStream, event: h11.Request
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
            route, params = self.router.resolve(method, path)
        except HttpError as error:
            route, params, refusal = None, {}, error
        limit = route.max_body if route else DEFAULT_MAX_BODY
        body = await _read_body(conn, transport, limit, headers)
        if body is None:
            size = f"{limit / (1 << 20):g} MiB" if limit >= 1 << 20 else f"{limit} bytes"
            await _send_response(conn, transport, Response(
                {"message": f"request body too large (the limit is {size})"}, 413,
                [("Connection", "close")],
            ))
            return False
        if route is None:
            await _send_response(conn, transport, _error_response(refusal))
            return True
        query_params = parse_qs(query, keep_blank_values=True)
        request = Request(method, path, params, query_params, headers, body)
        return await self._dispatch(conn, transport, route, request)

    async def _dispatch(
        self, conn: h11.Connection, transport: trio.SocketStream, route: Route, request: Request
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
                    result = await self._call(route, request)
                    if isinstance(result, Stream):
                        await _send_stream(conn, transport, result, request)
                except _GONE:
                    gone = True
                finally:
                    watch_scope.cancel()
        if gone or result is None:
            return False
        if isinstance(result, Response):
            await _send_response(conn, transport, result)
            return True
        if isinstance(result, Upgrade):
            await _switch_protocols(conn, transport, result, request)
            return False
        return True  # a stream, already sent

    async def _call(self, route: Route, request: Request) -> Result:
        try:
            result = await route.handler(request)
            if isinstance(result, Response) and result.body is not None:
                if result.status in (204, 304) or result.status < 200:
                    raise TypeError(f"a {result.status} answer cannot have a body")
                _json_bytes(result.body)  # a body that cannot be sent is our fault: a 500
            if not isinstance(result, Response | Stream | Upgrade):
                raise TypeError(f"handler returned {type(result).__name__}, not a Response")
            return result
        except StackError as error:
            return _error_response(error)
        except Exception as error:
            logger.exception("%s %s failed", request.method, request.path)
            return Response({"message": _internal_message(error)}, 500)


def _error_response(error: StackError) -> Response:
    """A user's mistake: 400 unless the error carries another 4xx/5xx status."""
    status = getattr(error, "status", 400)
    if not isinstance(status, int) or not 400 <= status <= 599:
        status = 400
    return Response({"message": str(error)}, status, list(getattr(error, "headers", [])))


def _internal_message(error: Exception) -> str:
    return f"internal error in the engine: {type(error).__name__}: {error} (see the engine log)"


async def serve(
    socket_path: str | os.PathLike[str], router: Router,
    *, task_status: trio.TaskStatus[HttpServer] = trio.TASK_STATUS_IGNORED, grace: float = 10.0,
) -> None:
    """Serve `router` on a unix socket; `nursery.start(serve, ...)` returns the `HttpServer`."""
    await HttpServer(router, grace=grace).serve(socket_path, task_status=task_status)


# --- the socket -------------------------------------------------------------------------------


async def _listen(path: Path) -> tuple[trio.SocketListener, int]:
    """A listener on `path` (mode 0660); a socket nobody answers on is replaced, a live one not."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise StackError(f"{path} exists and is not a socket", hint="move it away")
        try:
            with trio.fail_after(2):
                probe = await trio.open_unix_socket(str(path))
        except (OSError, trio.TooSlowError):
            path.unlink()  # stale: left by an engine that died
        else:
            await probe.aclose()
            raise StackError(f"another engine is already serving on {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Bind under a temporary name and rename into place, so that the socket is
    # never reachable with the umask's mode, not even for an instant.
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        temporary.unlink()
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(str(temporary))
        os.chmod(temporary, SOCKET_MODE)
        sock.listen(128)
        os.rename(temporary, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return trio.SocketListener(sock), path.stat().st_ino


# --- the protocol -----------------------------------------------------------------------------


async def _next_event(conn: h11.Connection, transport: trio.SocketStream) -> Any:
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
        go_on = h11.InformationalResponse(status_code=100, headers=[], reason=_reason(100))
        await transport.send_all(conn.send(go_on))
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, transport)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                return None
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise _ClientGone()


async def _wait_client_gone(conn: h11.Connection, transport: trio.SocketStream) -> None:
    """Return when the client closes its end; bytes it sends meanwhile wait in h11's buffer."""
    buffered = 0
    while True:
        try:
            data = await transport.receive_some(RECEIVE_SIZE)
        except _GONE:
            return
        if not data:
            return
        conn.receive_data(data)
        buffered += len(data)
        if buffered > MAX_HEAD + DEFAULT_MAX_BODY:
            # Pipelining this much is no client of ours: stop reading, so TCP-style
            # backpressure (a full socket buffer) holds it back.
            await trio.sleep_forever()


async def _send_response(
    conn: h11.Connection, transport: trio.SocketStream, response: Response
) -> None:
    headers = list(response.headers)
    if response.body is None:
        data = b""
    else:
        data = _json_bytes(response.body)
        headers.append(("Content-Type", "application/json"))
    if response.status not in (204, 304):
        headers.append(("Content-Length", str(len(data))))
    out = conn.send(h11.Response(
        status_code=response.status, headers=headers, reason=_reason(response.status)))
    if data:
        out += conn.send(h11.Data(data=data))
    out += conn.send(h11.EndOfMessage())
    await transport.send_all(out)


async def _send_error(
    conn: h11.Connection, transport: trio.SocketStream, status: int, message: str
) -> None:
    """A last answer to a request h11 could not parse, if the state still allows one."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    with contextlib.suppress(h11.LocalProtocolError, *_GONE):
        await _send_response(conn, transport, Response(
            {"message": f"malformed request: {message}"}, status, [("Connection", "close")]))


async def _send_stream(
    conn: h11.Connection, transport: trio.SocketStream, stream: Stream, request: Request
) -> None:
    headers = [("Content-Type", "application/x-ndjson"), ("Cache-Control", "no-cache")]
    head = h11.Response(status_code=stream.status, headers=headers, reason=_reason(stream.status))
    await transport.send_all(conn.send(head))

    async def send_each(items: AsyncIterable[Any]) -> None:
        async for item in items:
            await transport.send_all(conn.send(h11.Data(data=_json_bytes(item) + b"\n")))

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
    except _GONE:
        raise
    except Exception as error:
        logger.exception("%s %s failed while streaming", request.method, request.path)
        line = {"error": _internal_message(error)}
    else:
        line = None
    if line is not None:
        await transport.send_all(conn.send(h11.Data(data=_json_bytes(line) + b"\n")))
    await transport.send_all(conn.send(h11.EndOfMessage()))


async def _switch_protocols(
    conn: h11.Connection, transport: trio.SocketStream, upgrade: Upgrade, request: Request
) -> None:
    protocol = request.headers.get("upgrade")
    if conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL or not protocol:
        await _send_response(conn, transport, Response(
            {"message": f"{request.path} needs 'Connection: Upgrade' and "
                        f"'Upgrade: {UPGRADE_PROTOCOL}' headers"}, 400))
        return
    await transport.send_all(conn.send(h11.InformationalResponse(
        status_code=101, headers=[("Connection", "Upgrade"), ("Upgrade", protocol)],
        reason=_reason(101))))
    early, _closed = conn.trailing_data
    upgraded = UpgradedStream(transport, bytes(early))
    try:
        await upgrade.run(upgraded)
    except _GONE:
        pass
    except Exception:
        logger.exception("%s %s failed after the upgrade", request.method, request.path)
