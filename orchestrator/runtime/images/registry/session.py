"""Talking to one registry host: scheme, authentication, retries and error lines.

Everything a distribution API call needs before and after its own logic:
find out once whether the registry speaks HTTPS (or, where allowed, plain
HTTP) and which authentication it wants (`GET /v2/`, as Docker does), answer
a 401 with the challenge it carries, retry what is safe to retry, and turn a
registry's JSON error document into the end of one readable line.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urljoin

import trio

from orchestrator.runtime.images.reference import (
    is_insecure_allowed,
    parse_insecure_registries,
    registry_host,
)
from orchestrator.runtime.images.registry.auth import (
    Authenticator,
    TokenCache,
    authentication_failed,
)
from orchestrator.runtime.images.registry.credentials import Credentials
from orchestrator.runtime.images.registry.http import Body, ConnectionFailed, HttpClient, Response
from orchestrator.spec.errors import StackError

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
SMALL_BODY = 1024 * 1024
"""Limit for bodies read whole: error documents, pings, upload answers."""


def error_detail(body: bytes) -> str:
    """`CODE: message` from the registry's JSON error document, else a short excerpt."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors)
    except (ValueError, AttributeError, TypeError):
        return " ".join(body[:200].decode("utf-8", "replace").split())


def plain_http_allowed(registry: str) -> bool:
    """Loopback, or listed in `STACK_INSECURE_REGISTRIES` (Docker's insecure-registries rule)."""
    listed = parse_insecure_registries(os.environ.get("STACK_INSECURE_REGISTRIES"))
    return is_insecure_allowed(registry, listed)


class RegistrySession:
    """Authenticated, retried requests to one registry (named as in image references)."""

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool | None = None,
        credentials: Credentials | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        token_cache: TokenCache | None = None,
    ) -> None:
        self.registry = registry
        self.host = registry_host(registry)
        if insecure is None:
            insecure = plain_http_allowed(registry)
        self.schemes: tuple[str, ...] = ("https", "http") if insecure else ("https",)
        self.retries = retries
        self.backoff = backoff
        self.http = HttpClient(timeout=timeout)
        self.auth = Authenticator(registry, credentials, self.http, token_cache)
        self._base: str | None = None
        self._ping_lock = trio.Lock()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def delay(self, attempt: int, response: Response | None = None) -> None:
        """Exponential backoff, or the registry's `Retry-After` (capped) when it gave one."""
        delay = min(self.backoff * 2**attempt, 8.0)
        retry_after = response.header("retry-after") if response is not None else None
        if retry_after and retry_after.strip().isdigit():
            delay = min(float(retry_after), 30.0)
        await trio.sleep(delay)

    async def base_url(self) -> str:
        """Find the scheme that works (HTTPS first) with `GET /v2/`, learning any auth challenge."""
        if self._base is not None:
            return self._base
        async with self._ping_lock:  # concurrent first requests ping once
            if self._base is not None:
                return self._base
            failure: ConnectionFailed | None = None
            for scheme in self.schemes:
                base = f"{scheme}://{self.host}"
                try:
                    response = await self.send("GET", f"{base}/v2/", {}, None, idempotent=True)
                except ConnectionFailed as error:
                    failure = failure or error
                    continue
                await response.read(limit=SMALL_BODY)
                if response.status == 401:
                    self.auth.learn(response.header_all("www-authenticate"))
                elif response.status == 404:
                    raise StackError(
                        f"{self.registry} does not speak the registry API v2 (GET /v2/ gave 404)"
                    )
                self._base = base
                return base
            assert failure is not None
            if failure.tls and "http" not in self.schemes:
                raise ConnectionFailed(
                    f"{failure.message} (for a plain-HTTP registry, "
                    "add it to STACK_INSECURE_REGISTRIES)"
                ) from failure
            raise failure

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: Body, *, idempotent: bool
    ) -> Response:
        """One request, retried on transient failures when it is safe to send it again."""
        attempt = 0
        while True:
            try:
                response = await self.http.request(method, url, headers=headers, body=body)
            except ConnectionFailed as error:
                # A TLS failure is the same on every try: fail (or fall back) at once.
                if error.tls or not idempotent or attempt >= self.retries:
                    raise
                await self.delay(attempt)
            else:
                if not idempotent or response.status not in TRANSIENT_STATUS:
                    return response
                if attempt >= self.retries:
                    return response
                await response.aclose()
                await self.delay(attempt, response)
            attempt += 1

    async def request(
        self,
        method: str,
        path: str,
        scopes: list[str],
        *,
        headers: dict[str, str] | None = None,
        body: Body = None,
        idempotent: bool | None = None,
    ) -> Response:
        """An authenticated request; a 401 is answered once with the challenge it carries."""
        url = urljoin(await self.base_url(), path)
        replayable = body is None or isinstance(body, bytes)
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT") and replayable
        for answered_challenge in (False, True):
            sent = dict(headers or {})
            authorization = await self.auth.authorization(scopes)
            if authorization is not None:
                sent["Authorization"] = authorization
            response = await self.send(method, url, sent, body, idempotent=idempotent)
            if response.status != 401:
                return response
            detail = error_detail(await response.read(limit=SMALL_BODY))
            learned = self.auth.learn(response.header_all("www-authenticate"))
            if answered_challenge or not learned or not replayable:
                break
            if authorization is not None and self.auth.challenge is not None:
                if self.auth.challenge.scheme == "basic":
                    break  # the same password again would fail the same way
                self.auth.cache.forget(self.registry, scopes)  # fetch a fresh token
        who = (
            f"user {self.auth.credentials.username!r} was refused"
            if self.auth.credentials
            else f"anonymous access refused; run `stack login {self.registry}`"
        )
        raise authentication_failed(self.registry, f"{who} ({detail or 'HTTP 401'})")

    async def unexpected(self, response: Response, action: str) -> StackError:
        """The error line for a status the caller did not expect; reads the error document."""
        detail = error_detail(await response.read(limit=SMALL_BODY))
        if response.status == 403:
            return StackError(f"{action}: access denied by {self.registry} ({detail})")
        return StackError(
            f"{action}: {self.registry} answered HTTP {response.status}"
            + (f" ({detail})" if detail else "")
        )
