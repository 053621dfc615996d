"""The engine's HTTP/1.1 server: h11 on trio, on a unix socket.

h11 does the protocol and never touches the socket; the server does the I/O,
and it is split by what each part is responsible for (the conventions every
/v1 endpoint shares are described for clients in `schemas/engine-api.yaml`):

- this module owns the socket and the connections: it listens, accepts, keeps
  each connection serving requests one after another, and stops;
- `http_requests.py` answers one request: reading, limits, routing, errors;
- `http_responses.py` sends what a handler returned: JSON, newline-delimited
  JSON streams, protocol switches;
- `http_routing.py` is the handlers' vocabulary and the router (no I/O).

Every connection is a task in a nursery the server owns; `HttpServer.stop()`
stops accepting, closes idle connections and gives running requests a grace
period before cancelling them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import h11
import trio

from orchestrator.engine.http_requests import MAX_HEAD, ClientGone, answer_request, next_event
from orchestrator.engine.http_responses import CLIENT_GONE, send_malformed_request
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
from orchestrator.spec.errors import StackError

__all__ = [
    "DEFAULT_MAX_BODY", "Handler", "HttpError", "HttpServer", "Request", "Response", "Result",
    "Route", "Router", "Send", "Stream", "Upgrade", "UpgradedStream", "check_object", "serve",
]

logger = logging.getLogger(__name__)

SOCKET_MODE = 0o660


# --- the server -------------------------------------------------------------------------------


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
                await send_malformed_request(
                    conn, transport, error.error_status_hint, str(error)
                )
            except (*CLIENT_GONE, ClientGone):
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
                event = await next_event(conn, transport)
            if not isinstance(event, h11.Request):
                return  # idle for too long, or the client closed the connection
            entry.busy = True
            if not await answer_request(self.router, conn, transport, event):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()


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

