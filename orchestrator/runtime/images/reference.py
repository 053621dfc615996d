"""Image references, read and normalized exactly as Docker does.

A user writes `redis`, `ghcr.io/a/b:1.2` or `localhost:5000/x@sha256:…`; the
store, the registry client and `stack images` all need the one canonical form
Docker uses (`docker.io/library/redis:latest`), or the same image would be
stored twice under two names. The grammar is distribution/reference's:

    reference := name [":" tag] ["@" digest]
    name      := [domain "/"] path
    domain    := host [":" port]        host: DNS name, IPv4, or [IPv6]
    path      := component ("/" component)*
    component := [a-z0-9]+ (([._] | "__" | "-"+) [a-z0-9]+)*
    tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest    := "sha256:" 64 lowercase hex   (the only algorithm the store uses)

and the first path element is a domain only when it contains "." or ":", is
`localhost`, or has an uppercase letter (Docker's rule); otherwise the image is
on Docker Hub, and a one-element Hub path gets `library/` in front.

Nothing here does I/O: hosts are compared as written, never resolved.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple

from orchestrator.runtime.images.digests import is_digest
from orchestrator.spec.errors import StackError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255
SHORT_ID_LENGTH = 12

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_ID_PREFIX_RE = re.compile(r"(?:sha256:)?[a-f0-9]{1,64}")


class Reference(NamedTuple):
    """One parsed reference; `tag` and `digest` are None when not written."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """`docker.io/library/redis`: the name without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def registry_host(self) -> str:
        """The host to talk to: Docker Hub's API lives on another name than its images."""
        return registry_host(self.domain)

    @property
    def familiar_repository(self) -> str:
        """`redis` for `docker.io/library/redis`: the REPOSITORY column of `docker images`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        rest = self.path.removeprefix(OFFICIAL_REPO_PREFIX)
        # `library/a/b` keeps its prefix: shortening it would name another image.
        return rest if "/" not in rest else self.path

    def with_default_tag(self) -> Reference:
        """`latest` added when neither a tag nor a digest was written, as `docker pull` does."""
        if self.tag is None and self.digest is None:
            return self._replace(tag=DEFAULT_TAG)
        return self

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _invalid(text: str, why: str) -> StackError:
    return StackError(f"invalid image reference {text!r}: {why}")


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule for where the domain ends; the path is checked later."""
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def parse_reference(text: str) -> Reference:
    """Read `text` as Docker's `ParseNormalizedNamed` does; StackError when it is not valid.

    The result has the domain and path filled in (`docker.io`, `library/redis`)
    but no tag added: use `with_default_tag()` or `normalize_reference` for that.
    """
    if not isinstance(text, str) or not text:
        raise StackError("empty image reference (give a name such as redis or ghcr.io/org/app:1.0)")
    if _IDENTIFIER_RE.fullmatch(text):
        raise _invalid(text, "a 64-character hex string is an image id, not a repository name")
    name, at, digest = text.partition("@")
    if at:
        if "@" in digest:
            raise _invalid(text, "more than one '@'")
        if not is_digest(digest):
            algorithm, colon, _ = digest.partition(":")
            if colon and algorithm != "sha256":
                why = f"digest algorithm {algorithm!r} is not supported (use sha256)"
            else:
                why = f"digest {digest!r} is not valid (expected sha256:<64 lowercase hex>)"
            raise _invalid(text, why)
    last_slash = name.rfind("/")
    colon = name.find(":", last_slash + 1)
    tag: str | None = None
    if colon >= 0:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise _invalid(
                text,
                f"tag {tag!r} is not valid (up to 128 letters, digits, '_', '.' or '-', "
                "not starting with '.' or '-')",
            )
    if not name:
        raise _invalid(text, "the repository name is empty")
    domain, path = _split_domain(name)
    if not _DOMAIN_RE.fullmatch(domain):
        raise _invalid(text, f"registry {domain!r} is not a valid host[:port]")
    if path.lower() != path:
        raise _invalid(text, f"repository name {path!r} must be lowercase")
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise _invalid(
                text,
                f"repository name component {component!r} is not valid (lowercase letters and "
                "digits, separated by '.', '_', '__' or '-')",
            )
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(text, f"repository name is longer than {NAME_TOTAL_LENGTH_MAX} characters")
    return Reference(domain, path, tag, digest or None)


def normalize_reference(text: str) -> str:
    """The canonical form Docker stores: `redis` -> `docker.io/library/redis:latest`."""
    return str(parse_reference(text).with_default_tag())


def familiar_name(ref: str | Reference) -> str:
    """The short form `docker images` shows: `docker.io/library/redis:latest` -> `redis:latest`."""
    parsed = parse_reference(ref) if isinstance(ref, str) else ref
    text = parsed.familiar_repository
    if parsed.tag is not None:
        text += f":{parsed.tag}"
    if parsed.digest is not None:
        text += f"@{parsed.digest}"
    return text


def registry_host(domain: str) -> str:
    """The host serving the registry API for images named under `domain`."""
    if domain in (DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN):
        return DOCKER_HUB_REGISTRY
    return domain


# --- plain-HTTP registries ------------------------------------------------------


def _split_host_port(host: str) -> tuple[str, str | None]:
    """`[::1]:5000` -> (`::1`, `5000`); a bare IPv6 address has no port."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        rest = host[end + 1 :]
        return host[1:end], rest[1:] if rest.startswith(":") else None
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, port
    return host, None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_insecure_registries(value: str | None) -> tuple[str, ...]:
    """The comma list of `STACK_INSECURE_REGISTRIES`: hosts, host:port or CIDRs.

    A scheme or trailing slash is dropped, since people paste URLs there.
    """
    entries: list[str] = []
    for raw in (value or "").split(","):
        entry = raw.strip().lower()
        for scheme in ("http://", "https://"):
            entry = entry.removeprefix(scheme)
        entry = entry.rstrip("/")
        if not entry:
            continue
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise StackError(
                    f"STACK_INSECURE_REGISTRIES: {raw.strip()!r} is not a host, host:port or CIDR"
                ) from None
        entries.append(entry)
    return tuple(entries)


def is_insecure_allowed(host: str, insecure_list: Iterable[str] = ()) -> bool:
    """May `host` (a reference's domain, with its port) be spoken to over plain HTTP?

    Loopback always may, as Docker's default `127.0.0.0/8` insecure range and
    `localhost` allow; anything else only when listed. A listed `host` allows
    every port of it, `host:port` just that port, a CIDR every IP address in it.
    """
    name, port = _split_host_port(host.lower())
    address = _ip(name)
    if name == "localhost" or (address is not None and address.is_loopback):
        return True
    for entry in insecure_list:
        entry = entry.strip().lower()
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if address is not None and address in network:
                return True
            continue
        entry_name, entry_port = _split_host_port(entry)
        if entry_name == name and entry_port in (None, port):
            return True
    return False


# --- image ids ----------------------------------------------------------------


def short_id(digest: str) -> str:
    """The 12 hex characters `docker images` shows for an image id."""
    return digest.split(":", 1)[-1][:SHORT_ID_LENGTH]


def is_id_prefix(text: str) -> bool:
    """Could `text` be (a prefix of) an image id, `sha256:` optional?"""
    return _ID_PREFIX_RE.fullmatch(text) is not None


def is_full_id(text: str) -> bool:
    """A whole id: 64 hex characters, with or without `sha256:`."""
    return is_digest(text) or _IDENTIFIER_RE.fullmatch(text) is not None


def match_id_prefix(prefix: str, digests: Iterable[str]) -> str | None:
    """The one digest that `prefix` starts, None if none does; StackError if several do.

    `docker image rm 3f5` works when one image id starts with `3f5`; when two
    do, guessing could delete the wrong image, so we refuse and say which.
    """
    if not is_id_prefix(prefix):
        return None
    hex_prefix = prefix.removeprefix("sha256:")
    found = sorted(
        {d for d in digests if is_digest(d) and d[len("sha256:") :].startswith(hex_prefix)}
    )
    if len(found) > 1:
        shown = ", ".join(short_id(d) for d in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        raise StackError(
            f"image id prefix {prefix!r} is ambiguous: it matches {shown}{more} "
            "(give more characters of the id)"
        )
    return found[0] if found else None
