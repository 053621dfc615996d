"""A small HTTP/1.1 client on trio + h11, just enough for a registry.

Why not a general-purpose library: the registry protocol needs only a few
things — keep-alive (a pull makes dozens of requests to one host), streamed
bodies both ways (layers are hundreds of megabytes), redirects to another host
(blob downloads land on object storage) and precise errors. h11 does the
protocol as a pure state machine; this module does the sockets, TLS and pooling.

Every network wait runs under `trio.fail_after(timeout)`: a registry that stops
sending for `timeout` seconds is dead to us, however large the blob. Network
failures surface as `ConnectionFailed`, one line naming the host.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import h11
import trio

from orchestrator.spec.errors import StackError

RECEIVE_SIZE = 256 * 1024
REDIRECTS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 5
USER_AGENT = "stack/0.1"

Body = bytes | AsyncIterable[bytes] | None
"""Request body: bytes (replayable) or an async chunk source (sent once)."""


class ConnectionFailed(StackError):
    """Refused, reset, timeout, garbled: retrying may help, unless `tls` (the same every time)."""

    def __init__(self, message: str, *, tls: bool = False) -> None:
        super().__init__(message)
        self.tls = tls


@dataclass(frozen=True)
class Origin:
    """Where a connection goes; connections are pooled per origin."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StackError(f"unsupported URL {url!r}: only http:// and https:// are handled")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port)

    def __str__(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


_default_tls: ssl.SSLContext | None = None


def default_tls_context() -> ssl.SSLContext:
    """The system CA store; built once because loading it costs milliseconds."""
    global _default_tls
    if _default_tls is None:
        _default_tls = ssl.create_default_context()
    return _default_tls


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what caused it, down to trio's per-address group of connect errors."""
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        if isinstance(seen, BaseExceptionGroup):
            seen = seen.exceptions[-1]
        else:
            seen = seen.__cause__ or seen.__context__


def _is_tls_failure(error: BaseException) -> bool:
    return any(isinstance(cause, ssl.SSLError) for cause in _causes(error))


def _describe(error: BaseException) -> str:
    """A short reason for a network failure, from the innermost useful cause."""
    if isinstance(error, trio.TooSlowError):
        return "no data within the timeout"
    for seen in _causes(error):
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({seen.verify_message})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS failure ({seen.reason or seen})"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
    if any(isinstance(c, ConnectionResetError | trio.BrokenResourceError) for c in _causes(error)):
        return "connection reset"
    if isinstance(error, h11.RemoteProtocolError):
        return f"invalid HTTP ({error})"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class _Connection:
    """One socket and its h11 state machine."""

    def __init__(self, origin: Origin, stream: trio.abc.Stream, timeout: float) -> None:
        self.origin = origin
        self.stream = stream
        self.timeout = timeout
        self.protocol = h11.Connection(h11.CLIENT)

    async def send(self, event: h11.Event) -> None:
        data = self.protocol.send(event)
        if data:
            with trio.fail_after(self.timeout):
                await self.stream.send_all(data)

    async def next_event(self) -> h11.Event:
        while True:
            event = self.protocol.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.fail_after(self.timeout):
                data = await self.stream.receive_some(RECEIVE_SIZE)
            self.protocol.receive_data(data)

    def reusable(self) -> bool:
        return self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(trio.BrokenResourceError, OSError):
                await self.stream.aclose()


class Response:
    """Status and headers at once; the body is streamed on demand."""

    def __init__(
        self, client: HttpClient, conn: _Connection, url: str, event: h11.Response
    ) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self.url = url
        self.status: int = event.status_code
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    async def iter_body(self) -> AsyncGenerator[bytes, None]:
        """The body in chunks as they arrive; the connection goes back to the pool at the end."""
        conn = self._conn
        if conn is None:
            return
        while True:
            try:
                event = await conn.next_event()
            except BaseException as error:
                await self.aclose()
                if isinstance(error, Exception) and not isinstance(error, StackError):
                    raise ConnectionFailed(
                        f"connection to {conn.origin} broke mid-response: {_describe(error)}"
                    ) from error
                raise
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                await self._release()
                return

    async def read(self, limit: int = 16 * 1024 * 1024) -> bytes:
        """The whole body; for manifests, tokens and error documents, never layers."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_body():
            size += len(chunk)
            if size > limit:
                await self.aclose()
                raise StackError(f"response from {self.url} is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.reusable():
            conn.protocol.start_next_cycle()
            self._client._idle.setdefault(conn.origin, []).append(conn)
        elif conn is not None:  # the server said `Connection: close`
            await conn.aclose()

    async def aclose(self) -> None:
        """Drop the connection unless the body was read to the end."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()


class HttpClient:
    """Keep-alive connections per origin, redirects, streamed bodies."""

    def __init__(self, *, timeout: float = 60.0, tls: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self._tls = tls
        self._idle: dict[Origin, list[_Connection]] = {}

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: Body = None,
        follow_redirects: bool = True,
    ) -> Response:
        """Send one request (following redirects); the caller must read or aclose the body."""
        headers = dict(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(method, url, headers, body)
            location = response.header("location")
            if not follow_redirects or response.status not in REDIRECTS or not location:
                return response
            length = response.header("content-length") or ""
            if length.isdigit() and int(length) <= 65536:
                await response.read()  # a small redirect body: read it, keep the connection
            else:
                await response.aclose()
            target = urljoin(url, location)
            if Origin.of(target) != Origin.of(url):
                # Credentials for the registry are not for the object store behind it.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = ("GET" if method != "HEAD" else "HEAD"), None
                headers = {k: v for k, v in headers.items() if not k.lower().startswith("content-")}
            elif body is not None and not isinstance(body, bytes):
                raise StackError(
                    f"{url} redirected a streamed upload to {target}; cannot send it twice"
                )
            url = target
        raise StackError(f"too many redirects from {url}")

    async def _send(self, method: str, url: str, headers: dict[str, str], body: Body) -> Response:
        origin = Origin.of(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        wire = [("Host", str(origin)), ("User-Agent", USER_AGENT), *headers.items()]
        names = {k.lower() for k, _ in wire}
        if isinstance(body, bytes):
            wire.append(("Content-Length", str(len(body))))
        elif body is not None and "content-length" not in names:
            wire.append(("Transfer-Encoding", "chunked"))
        elif body is None and method in ("POST", "PUT", "PATCH"):
            wire.append(("Content-Length", "0"))
        request = h11.Request(method=method, target=target, headers=wire)
        # A pooled connection may have been closed by the server while idle; that
        # shows only when we use it, so a replayable request gets one fresh retry.
        while True:
            conn, reused = await self._connect(origin)
            try:
                return await self._exchange(conn, url, request, body)
            except ConnectionFailed:
                await conn.aclose()
                if not (reused and (body is None or isinstance(body, bytes))):
                    raise
            except BaseException:
                await conn.aclose()
                raise

    async def _exchange(
        self, conn: _Connection, url: str, request: h11.Request, body: Body
    ) -> Response:
        try:
            await conn.send(request)
            if isinstance(body, bytes):
                if body:
                    await conn.send(h11.Data(data=body))
            elif body is not None:
                async for chunk in body:
                    if chunk:
                        await conn.send(h11.Data(data=chunk))
            await conn.send(h11.EndOfMessage())
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.Response):
                    return Response(self, conn, url, event)
                if isinstance(event, h11.ConnectionClosed):
                    raise ConnectionFailed(f"{conn.origin} closed the connection without answering")
        except trio.TooSlowError as error:
            raise ConnectionFailed(
                f"{conn.origin} did not answer within {conn.timeout:g}s"
            ) from error
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError) as error:
            raise ConnectionFailed(
                f"request to {conn.origin} failed: {_describe(error)}"
            ) from error

    async def _connect(self, origin: Origin) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        if idle:
            return idle.pop(), True
        handshaking = False
        try:
            with trio.fail_after(self.timeout):
                stream: trio.abc.Stream = await trio.open_tcp_stream(origin.host, origin.port)
                if origin.scheme == "https":
                    handshaking = True
                    tls = trio.SSLStream(
                        stream,
                        self._tls or default_tls_context(),
                        server_hostname=origin.host,
                        https_compatible=True,
                    )
                    try:
                        await tls.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(stream)
                        raise
                    stream = tls
        except trio.TooSlowError as error:
            raise ConnectionFailed(
                f"cannot connect to {origin}: no answer within {self.timeout:g}s"
            ) from error
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as error:
            # A server that hangs up on a TLS hello speaks something else (plain HTTP).
            reason = _describe(error)
            if handshaking and not _is_tls_failure(error):
                reason = f"TLS handshake failed ({reason})"
            raise ConnectionFailed(
                f"cannot connect to {origin}: {reason}", tls=handshaking
            ) from error
        return _Connection(origin, stream, self.timeout), False
