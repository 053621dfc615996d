"""Host ports two containers would both publish, refused before `stack up` starts any.

compose accepts two services publishing one host port (the engine refuses
the second container later), so `stack config` must accept it too and
`validate.validate_model` leaves it alone; but `stack up` should refuse it
before it creates anything, with the file, line and key of both claims.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import Path, SourceMap, format_path
from .validate import replica_count

_WILDCARD_IPS = ("", "0.0.0.0", "::")
_PORT_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def validate_host_ports(model: dict[str, Any], source: SourceMap) -> None:
    """Raise a `StackError` if two containers would publish the same host port.

    A host port is (host ip, port, protocol); a wildcard ip (empty, 0.0.0.0,
    ::) collides with every ip. Fixed ports are claimed first, in service
    order; a host range for a single container port ("8000-8009:80") is a
    pool from which each replica takes the lowest free port, as the engine
    would. Every replica of a scaled service publishes its ports again, so a
    fixed port and `scale: 2` collide with themselves.
    """
    services: dict[str, Any] = model.get("services") or {}
    claimed: dict[tuple[str, int], list[tuple[str, Path]]] = {}
    pools: list[tuple[str, str, range, int, Path]] = []
    for name in sorted(services):
        replicas = replica_count(services[name])
        for i, port in enumerate(services[name].get("ports") or []):
            path: Path = ("services", name, "ports", i)
            ports = _published_range(port, path, source)
            if ports is None or replicas == 0:
                continue
            ip, proto = port.get("host_ip") or "", port.get("protocol") or "tcp"
            if len(ports) > 1:
                pools.append((ip, proto, ports, replicas, path))
                continue
            for _ in range(replicas):
                _claim(claimed, ip, proto, ports[0], path, source)
    for ip, proto, ports, replicas, path in pools:
        for _ in range(replicas):
            free = next((p for p in ports if _holder(claimed, ip, proto, p) is None), None)
            if free is None:
                raise source.error(
                    path,
                    f"no free host port left in {ports[0]}-{ports[-1]}/{proto} "
                    f"for {replicas} container(s)",
                    "widen the range or publish fewer ports",
                )
            _claim(claimed, ip, proto, free, path, source)


def _published_range(port: dict[str, Any], path: Path, source: SourceMap) -> range | None:
    published = port.get("published")
    if published in (None, ""):
        return None  # the engine picks a free ephemeral port
    match = _PORT_RANGE.match(str(published))
    if match is None:
        raise source.error(path, f'published port "{published}" is not a port or range')
    low = int(match[1])
    high = int(match[2] or low)
    return range(low, high + 1)


def _claim(
    claimed: dict[tuple[str, int], list[tuple[str, Path]]],
    ip: str,
    proto: str,
    port: int,
    path: Path,
    source: SourceMap,
) -> None:
    holder = _holder(claimed, ip, proto, port)
    if holder is not None:
        where = f"by {format_path(holder)}"
        if holder == path:
            where = "by another replica of this service"
        raise source.error(
            path,
            f"host port {_format_ip(ip)}{port}/{proto} is already published {where}",
            "publish another host port, or leave the host port out to get a free one",
        )
    claimed.setdefault((proto, port), []).append((ip, path))


def _holder(
    claimed: dict[tuple[str, int], list[tuple[str, Path]]], ip: str, proto: str, port: int
) -> Path | None:
    for other_ip, path in claimed.get((proto, port), ()):
        if ip == other_ip or ip in _WILDCARD_IPS or other_ip in _WILDCARD_IPS:
            return path
    return None


def _format_ip(ip: str) -> str:
    if not ip:
        return ""
    return f"[{ip}]:" if ":" in ip else f"{ip}:"
