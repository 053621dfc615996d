"""The CLI's client for the engine's API: blocking HTTP/1.1 over the engine's unix socket.

The CLI must start fast, so this speaks just the HTTP the engine answers with
(Content-Length or chunked bodies, JSON, newline-delimited JSON streams, an
Upgrade to a raw stream) on a plain `socket`: no trio, no h11, no http.client.
One connection is kept open and reused while the engine allows it.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from orchestrator.spec.errors import StackError

DEFAULT_SOCKET = "/run/stack/stack.sock"
UPGRADE_PROTOCOL = "tcp"
MAX_HEAD = 64 * 1024


def default_socket_path() -> str:
    return os.environ.get("STACK_SOCKET") or DEFAULT_SOCKET


class EngineError(StackError):
    """The engine refused a request: its message, and the HTTP status for callers that care."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class EngineUnavailable(StackError):
    """Nothing answers on the engine's socket (the CLI then starts stackd)."""


class _Closed(StackError):
    """The engine closed the connection before its answer was complete."""


class _Stale(Exception):
    """A reused connection the engine had already closed: nothing was answered on it."""


class _Reader:
    """Buffered reads of one HTTP response from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.received_any = False

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise StackError("the stack engine did not answer in time") from None
        except OSError as error:
            raise _Closed(f"the stack engine closed the connection ({error.strerror})") from None
        if data:
            self.received_any = True
        self.buffer += data
        return bool(data)

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise StackError("the engine sent a malformed response (line too long)")
            if not self._fill():
                raise _Closed("the stack engine closed the connection")
        data = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return data

    def exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise _Closed("the stack engine closed the connection")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def rest(self) -> bytes:
        while self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class _Response:
    def __init__(self, reader: _Reader, method: str) -> None:
        self.reader = reader
        status_line = reader.line().decode("latin-1")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise StackError(f"the engine sent a malformed response: {status_line[:80]!r}")
        self.status = int(rest[:3])
        self.headers: dict[str, str] = {}
        while line := reader.line():
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.no_body = method == "HEAD" or self.status in (204, 304) or self.status < 200
        self.keep_alive = (
            version == "HTTP/1.1" and self.headers.get("connection", "").lower() != "close"
        )

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives."""
        if self.no_body:
            return
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.reader.line().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.reader.line():  # trailers, then the blank line
                        pass
                    return
                yield self.reader.exact(size)
                self.reader.exact(2)
        elif "content-length" in self.headers:
            yield self.reader.exact(int(self.headers["content-length"]))
        else:
            self.keep_alive = False
            yield self.reader.rest()

    def body(self) -> bytes:
        return b"".join(self.chunks())


def _decode(data: bytes) -> Any:
    if not data.strip():
        return None
    try:
        return jsonlib.loads(data)
    except ValueError:
        raise StackError(f"the engine sent a response that is not JSON: {data[:80]!r}") from None


def _refusal(status: int, data: bytes) -> EngineError:
    try:
        message = jsonlib.loads(data)["message"]
    except (ValueError, KeyError, TypeError):
        message = data.decode("utf-8", "replace").strip() or f"the engine answered {status}"
    return EngineError(str(message), status)


class EngineClient:
    def __init__(
        self, socket_path: str | os.PathLike[str] | None = None, *, timeout: float | None = None
    ) -> None:
        self.socket_path = os.fspath(socket_path) if socket_path else default_socket_path()
        self.timeout = timeout
        self._sock: socket.socket | None = None

    # --- connections --------------------------------------------------------------------------

    def _connect(self, timeout: float | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise EngineUnavailable(f"the stack engine is not running (no answer on "
                                    f"{self.socket_path})") from None
        except PermissionError:
            sock.close()
            raise EngineUnavailable(
                f"permission denied on the engine's socket {self.socket_path}",
                hint="run as root or as a member of the socket's group",
            ) from None
        except OSError as error:
            sock.close()
            raise EngineUnavailable(
                f"cannot reach the stack engine on {self.socket_path}: {error.strerror}"
            ) from None
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __del__(self) -> None:
        # The kept-alive connection belongs to this client and ends with it.
        self.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def is_running(self) -> bool:
        """Whether an engine answers on the socket (a short wait, never an exception)."""
        probe = EngineClient(self.socket_path, timeout=2.0)
        try:
            status, _ = probe.request("GET", "/v1/version")
        except (StackError, OSError):
            return False
        finally:
            probe.close()
        return status == 200

    # --- requests -----------------------------------------------------------------------------

    @staticmethod
    def _encode(
        method: str, path: str, json: Any, query: Mapping[str, Any] | None, extra: str = ""
    ) -> bytes:
        if query:
            from urllib.parse import urlencode

            pairs = [
                (k, ("true" if v else "false") if isinstance(v, bool) else v)
                for k, v in query.items() if v is not None
            ]
            path += ("&" if "?" in path else "?") + urlencode(pairs, doseq=True)
        body = b"" if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: stackd\r\n{extra}"
        if json is not None:
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    def _exchange(self, data: bytes, method: str) -> tuple[socket.socket, _Response]:
        """Send a request; the socket and the response head. A stale pooled socket is retried."""
        if self._sock is not None:
            sock, self._sock = self._sock, None
            try:
                return sock, self._send(sock, data, method, reused=True)
            except _Stale:
                sock.close()
            except BaseException:
                sock.close()
                raise
        sock = self._connect()
        try:
            return sock, self._send(sock, data, method, reused=False)
        except BaseException:
            sock.close()
            raise

    def _send(self, sock: socket.socket, data: bytes, method: str, reused: bool) -> _Response:
        reader = _Reader(sock)
        try:
            # The engine may answer before reading all of a body it refuses (413):
            # its answer is then still waiting to be read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
            return _Response(reader, method)
        except _Closed as error:
            if reused and not reader.received_any:
                raise _Stale() from error
            raise

    def request(
        self, method: str, path: str, json: Any = None, *, query: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        """One request; the status and the decoded JSON body. A refusal raises EngineError."""
        sock, response = self._exchange(self._encode(method, path, json, query), method)
        try:
            data = response.body()
        except BaseException:
            sock.close()
            raise
        if response.keep_alive:
            self._sock = sock
        else:
            sock.close()
        if response.status >= 400:
            raise _refusal(response.status, data)
        return response.status, _decode(data)

    def stream(
        self, method: str, path: str, json: Any = None, *, query: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The objects of a newline-delimited JSON response, each as soon as it arrives.

        Nothing is sent before the first object is asked for. Closing the iterator
        early closes the connection, which tells the engine to stop producing. An
        `{"error": ...}` line raises EngineError.
        """
        sock, response = self._exchange(self._encode(method, path, json, query), method)
        try:
            if response.status >= 400:
                raise _refusal(response.status, response.body())
            pending = b""
            for chunk in response.chunks():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _stream_item(line, response.status)
            if pending.strip():
                yield _stream_item(pending, response.status)
        finally:
            sock.close()

    def upgrade(
        self, method: str, path: str, json: Any = None, *, query: Mapping[str, Any] | None = None
    ) -> socket.socket:
        """Switch a request's connection to a raw byte stream (exec, attach); the socket."""
        extra = f"Connection: Upgrade\r\nUpgrade: {UPGRADE_PROTOCOL}\r\n"
        sock = self._connect()
        try:
            sock.sendall(self._encode(method, path, json, query, extra))
            head = _upgrade_head(sock)
            if head.startswith((b"HTTP/1.1 101 ", b"HTTP/1.0 101 ")):
                return sock
            reader = _Reader(sock)
            reader.buffer += head
            response = _Response(reader, method)
            data = response.body()
            if response.status >= 400:
                raise _refusal(response.status, data)
            raise StackError(f"the engine did not switch {path} to a stream "
                             f"(it answered {response.status})")
        except OSError as error:
            sock.close()
            raise StackError(f"the stack engine closed the connection ({error.strerror})") from None
        except BaseException:
            sock.close()
            raise


def _upgrade_head(sock: socket.socket) -> bytes:
    """The response head, and not a byte more: what follows already belongs to the raw
    stream, and a socket cannot be handed over with bytes read ahead. So the bytes are
    looked at first (MSG_PEEK) and only the head's are taken."""
    head = bytearray()
    while True:
        peeked = sock.recv(4096, socket.MSG_PEEK)
        if not peeked or len(head) > MAX_HEAD:
            raise StackError("the stack engine closed the connection")
        tail = bytes(head[-3:])  # the blank line may have begun in what was taken before
        end = (tail + peeked).find(b"\r\n\r\n")
        wanted = len(peeked) if end < 0 else end + 4 - len(tail)
        while wanted:
            taken = sock.recv(wanted)
            if not taken:
                raise StackError("the stack engine closed the connection")
            head += taken
            wanted -= len(taken)
        if end >= 0:
            return bytes(head)


def _stream_item(line: bytes, status: int) -> dict[str, Any]:
    item = _decode(line)
    if isinstance(item, dict) and set(item) == {"error"}:
        raise EngineError(str(item["error"]), status)
    if not isinstance(item, dict):
        raise StackError(f"the engine sent a stream line that is not an object: {line[:80]!r}")
    return item
