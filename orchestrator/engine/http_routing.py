"""What the engine's HTTP handlers get and return, and how requests find them.

No sockets here: a `Request` is parsed data, a handler's result is a value
(`Response`, `Stream`, `Upgrade`), and the `Router` maps a method and a path
to a handler. `http.py` is the server that moves them over a unix socket.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import trio

from orchestrator.spec.errors import StackError

DEFAULT_MAX_BODY = 1 << 20


class HttpError(StackError):
    """A request the engine refuses, with the status to answer it with."""

    def __init__(
        self, status: int, message: str, *, hint: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.headers = list(headers)


_UNPARSED = object()


# --- what handlers get and return -------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    _parsed: Any = field(default=_UNPARSED, init=False, repr=False, compare=False)

    def json(self) -> Any:
        """The body parsed as JSON (None when empty); a 400 when it is not JSON."""
        if self._parsed is _UNPARSED:
            if not self.body.strip():
                self._parsed = None
            else:
                try:
                    self._parsed = json.loads(self.body)
                except (ValueError, RecursionError) as error:
                    raise HttpError(400, f"request body is not valid JSON: {error}") from None
        return self._parsed

    def json_object(
        self, fields: Mapping[str, type | tuple[type, ...]], required: Iterable[str] = ()
    ) -> dict[str, Any]:
        """The body as an object with only the given fields, each of its type."""
        body = self.json()
        return check_object({} if body is None else body, fields, required, where="request body")

    def query_str(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def query_bool(self, name: str, default: bool = False) -> bool:
        value = self.query_str(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", ""):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise HttpError(400, f"query parameter {name}: expected true or false, got {value!r}")

    def query_int(self, name: str, default: int | None = None) -> int | None:
        value = self.query_str(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise HttpError(
                400, f"query parameter {name}: expected an integer, got {value!r}"
            ) from None


_TYPE_NAMES = {
    str: "a string", bool: "true or false", int: "an integer", float: "a number",
    dict: "an object", list: "a list", type(None): "null",
}


def _json_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _has_type(value: Any, expected: type) -> bool:
    # JSON has no separate boolean-is-an-integer: true is not a count of anything.
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


def check_object(
    value: Any,
    fields: Mapping[str, type | tuple[type, ...]],
    required: Iterable[str] = (),
    *,
    where: str = "request body",
) -> dict[str, Any]:
    """`value` itself, once it is an object with known fields of the right types (else a 400).

    Unknown fields are refused rather than ignored: a misspelt option silently
    doing nothing is worse than an error that names it.
    """
    if not isinstance(value, dict):
        raise HttpError(400, f"{where}: expected an object, got {_json_type_name(value)}")
    for name in value:
        if name not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise HttpError(400, f"{where}: unknown field {name!r} (known fields: {known})")
    for name in required:
        if name not in value:
            raise HttpError(400, f"{where}: missing field {name!r}")
    for name, item in value.items():
        expected = fields[name] if isinstance(fields[name], tuple) else (fields[name],)
        if not any(_has_type(item, kind) for kind in expected):  # type: ignore[arg-type]
            wanted = " or ".join(_TYPE_NAMES.get(kind, kind.__name__) for kind in expected)
            raise HttpError(
                400, f"{where}: field {name!r} must be {wanted}, not {_json_type_name(item)}"
            )
    return value


@dataclass
class Response:
    body: Any = None  # JSON-able; None sends no body (use with 204)
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    # The body as sent, once encoded: the server encodes it before sending, to answer
    # a body that cannot be encoded with a 500, and then sends those same bytes.
    encoded: bytes | None = field(default=None, repr=False, compare=False)


Send = Callable[[Any], Awaitable[None]]


@dataclass
class Stream:
    """Newline-delimited JSON, sent as it comes: each object the iterator yields, or each
    object the producer sends. A producer runs in a task of the request beside the loop
    that sends; prefer it to an async generator that needs a nursery of its own (trio
    cannot keep a nursery's cancel scope straight across a generator's `yield`)."""

    items: AsyncIterable[Any] | None = None
    status: int = 200
    producer: Callable[[Send], Awaitable[None]] | None = None


class UpgradedStream(trio.abc.HalfCloseableStream):
    """The connection after `101 Switching Protocols`, bytes the client sent early first."""

    def __init__(self, transport: trio.SocketStream, early: bytes) -> None:
        self.transport = transport
        self._early = early

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._early:
            size = len(self._early) if max_bytes is None else max_bytes
            data, self._early = self._early[:size], self._early[size:]
            await trio.lowlevel.checkpoint()
            return data
        return await self.transport.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.transport.send_eof()

    async def aclose(self) -> None:
        await self.transport.aclose()


@dataclass
class Upgrade:
    """Switch the connection to a raw stream and run `run` on it; the connection ends with it."""

    run: Callable[[UpgradedStream], Awaitable[None]]


Result = Response | Stream | Upgrade
Handler = Callable[[Request], Awaitable[Result]]


# --- routing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    max_body: int
    segments: tuple[str, ...]

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params = {}
        for segment, part in zip(self.segments, parts, strict=True):
            if segment.startswith("{"):
                if not part:
                    return None
                params[segment[1:-1]] = part
            elif segment != part:
                return None
        return params

    @property
    def literal_count(self) -> int:
        return sum(not s.startswith("{") for s in self.segments)


class Router:
    """Method + path pattern (`/v1/containers/{id}/logs`) -> handler."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(
        self, method: str, pattern: str, handler: Handler, *, max_body: int = DEFAULT_MAX_BODY
    ) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern}")
        method = method.upper()
        if (method, pattern) in self.routes():
            raise ValueError(f"route defined twice: {method} {pattern}")
        segments = tuple(pattern.split("/")[1:])
        names = [s[1:-1] for s in segments if s.startswith("{")]
        if len(names) != len(set(names)) or any(not n or "}" in n for n in names):
            raise ValueError(f"bad parameters in route pattern: {pattern}")
        self._routes.append(Route(method, pattern, handler, max_body, segments))

    def routes(self) -> set[tuple[str, str]]:
        return {(route.method, route.pattern) for route in self._routes}

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for a request and its path parameters; 404 or 405 when there is none."""
        # Split before decoding, so that an escaped '/' stays inside one parameter.
        try:
            parts = [unquote(p, errors="strict") for p in path.split("/")[1:]]
        except UnicodeDecodeError:
            raise HttpError(400, "request path is not UTF-8") from None
        matches = [(r, p) for r in self._routes if (p := r.match(parts)) is not None]
        if not matches:
            raise HttpError(404, f"no such endpoint: {path}")
        allowed = [(r, p) for r, p in matches if r.method == method]
        if not allowed:
            methods = ", ".join(sorted({r.method for r, _ in matches}))
            raise HttpError(
                405, f"method {method} not allowed on {path} (allowed: {methods})",
                headers=[("Allow", methods)],
            )
        # A literal segment beats a parameter: /v1/engine/stop before /v1/{kind}/stop.
        return max(allowed, key=lambda match: match[0].literal_count)
