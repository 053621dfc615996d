"""Registry authentication: the `WWW-Authenticate` challenge and Docker's token flow.

A registry says how it wants to be authenticated only when it refuses a
request: a 401 with `WWW-Authenticate: Basic realm=...` (send the password on
every request) or `Bearer realm=...,service=...,scope=...` (ask the token
service at `realm` for a short-lived token for exactly the repositories and
actions needed, with the password if we have one, anonymously otherwise).
The parsing and the decisions here are pure; `Authenticator` does the one
request the flow needs, through the same HTTP client as the registry calls.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from orchestrator.runtime.images.registry.credentials import Credentials
from orchestrator.runtime.images.registry.http import HttpClient
from orchestrator.spec.errors import StackError

DEFAULT_TOKEN_LIFETIME = 60.0
"""Seconds a token lives when the service does not say (the token spec's default and minimum)."""
EXPIRY_MARGIN = 10.0
"""Renew this many seconds early, so a token does not expire in the middle of a request."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SKIP = " \t,"


@dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge: scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def _quoted(header: str, i: int) -> tuple[str, int]:
    """The quoted-string starting at header[i] == '"', and the index after it."""
    out: list[str] = []
    i += 1
    while i < len(header):
        char = header[i]
        if char == "\\" and i + 1 < len(header):
            out.append(header[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    return "".join(out), i


def parse_www_authenticate(header: str) -> list[Challenge]:
    """All challenges in a header value (RFC 7235), tolerant of what registries send.

    A token followed by `=` is a parameter of the current challenge; any other
    token starts a new challenge. Quoted values may contain commas and escapes.
    """
    challenges: list[Challenge] = []
    i, n = 0, len(header)
    while i < n:
        if header[i] in _SKIP:
            i += 1
            continue
        match = _TOKEN.match(header, i)
        if not match:
            i += 1  # a stray character: skip it rather than give up on the header
            continue
        name, i = match.group(), match.end()
        j = i
        while j < n and header[j] in " \t":
            j += 1
        if j < n and header[j] == "=" and challenges:
            j += 1
            while j < n and header[j] in " \t":
                j += 1
            if j < n and header[j] == '"':
                value, i = _quoted(header, j)
            else:
                end = j
                while end < n and header[end] not in _SKIP:
                    end += 1
                value, i = header[j:end], end
            challenges[-1].params[name.lower()] = value
        else:
            challenges.append(Challenge(name.lower(), {}))
    return challenges


def repository_scope(repository: str, actions: Iterable[str]) -> str:
    """`repository:library/busybox:pull,push`, the scope syntax of the token spec."""
    return f"repository:{repository}:{','.join(actions)}"


def token_request_url(challenge: Challenge, scopes: Iterable[str]) -> str:
    """The token service URL with `service` and one `scope` parameter per scope."""
    realm = challenge.realm
    if not realm:
        raise StackError("registry sent a Bearer challenge without a realm")
    query: list[tuple[str, str]] = []
    if challenge.params.get("service"):
        query.append(("service", challenge.params["service"]))
    query.extend(("scope", scope) for scope in scopes)
    if not query:
        return realm
    return realm + ("&" if "?" in realm else "?") + urlencode(query)


@dataclass(frozen=True)
class BearerToken:
    value: str = field(repr=False)
    expires_at: float

    def valid_at(self, now: float) -> bool:
        return now < self.expires_at - EXPIRY_MARGIN


def parse_token_response(body: bytes, now: float, source: str) -> BearerToken:
    """A token service answer: `token` or `access_token`, with `expires_in` seconds."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise StackError(f"token service {source} answered something that is not JSON") from error
    if not isinstance(document, dict):
        raise StackError(f"token service {source} answered JSON that is not an object")
    value = document.get("token") or document.get("access_token")
    if not isinstance(value, str) or not value:
        raise StackError(f"token service {source} answered without a token")
    lifetime = document.get("expires_in")
    if not isinstance(lifetime, int | float) or lifetime < DEFAULT_TOKEN_LIFETIME:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return BearerToken(value, now + float(lifetime))


class TokenCache:
    """Tokens per (registry, scopes) until they expire."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tokens: dict[tuple[str, tuple[str, ...]], BearerToken] = {}

    def get(self, registry: str, scopes: Iterable[str]) -> BearerToken | None:
        key = (registry, tuple(sorted(scopes)))
        token = self._tokens.get(key)
        if token is not None and not token.valid_at(self.clock()):
            del self._tokens[key]
            return None
        return token

    def put(self, registry: str, scopes: Iterable[str], token: BearerToken) -> None:
        self._tokens[(registry, tuple(sorted(scopes)))] = token

    def forget(self, registry: str, scopes: Iterable[str]) -> None:
        """Drop a token the registry refused, so the next request fetches a new one."""
        self._tokens.pop((registry, tuple(sorted(scopes))), None)


def authentication_failed(registry: str, detail: str) -> StackError:
    """The one error line for refused credentials, whatever the scheme."""
    return StackError(f"authentication failed for {registry}: {detail}")


class Authenticator:
    """Knows the challenge a registry sent and turns it into `Authorization` headers."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        http: HttpClient,
        cache: TokenCache | None = None,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.http = http
        self.cache = cache or TokenCache()
        self.challenge: Challenge | None = None

    def learn(self, header_values: Iterable[str]) -> bool:
        """Remember the challenge of a 401; False if it is no scheme we speak."""
        for value in header_values:
            for challenge in parse_www_authenticate(value):
                if challenge.scheme == "bearer" and challenge.realm:
                    self.challenge = challenge
                    return True
                if challenge.scheme == "basic":
                    self.challenge = challenge
                    return True
        return False

    async def authorization(self, scopes: list[str]) -> str | None:
        """The header value for a request needing `scopes`, or None before any challenge."""
        challenge = self.challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise authentication_failed(
                    self.registry, f"credentials required; run `stack login {self.registry}`"
                )
            return self.credentials.basic_authorization()
        token = self.cache.get(self.registry, scopes)
        if token is None:
            token = await self._fetch_token(challenge, scopes)
            self.cache.put(self.registry, scopes, token)
        return f"Bearer {token.value}"

    async def _fetch_token(self, challenge: Challenge, scopes: list[str]) -> BearerToken:
        url = token_request_url(challenge, scopes)
        realm = challenge.realm or url
        headers = {"Accept": "application/json"}
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.basic_authorization()
        response = await self.http.request("GET", url, headers=headers)
        body = await response.read(limit=1024 * 1024)
        if response.status in (401, 403):
            if self.credentials is None:
                detail = f"anonymous access denied; run `stack login {self.registry}`"
            else:
                detail = (
                    f"token service {realm} rejected user {self.credentials.username!r}; "
                    f"run `stack login {self.registry}` again"
                )
            raise authentication_failed(self.registry, detail)
        if response.status != 200:
            raise StackError(
                f"token service {realm} for {self.registry} answered HTTP {response.status}"
            )
        return parse_token_response(body, self.cache.clock(), realm)
