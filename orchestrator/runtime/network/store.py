"""Networks as the runtime remembers them: `<state root>/networks/<name>.json`.

A record holds what the network is (subnet, gateway, bridge, internal,
labels) and its endpoints: the containers attached to it, each with its
address, aliases and published ports. Everything on the host — the bridge,
the veths, the nftables table — can be rebuilt from these records, which is
how a restarted engine repairs what a crash left half done.

Changes take the store's lock (fcntl), so two processes never hand out the
same address or subnet; records are replaced atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from orchestrator.runtime.images.store_files import write_atomic
from orchestrator.runtime.network import ipam
from orchestrator.runtime.network.links import bridge_name
from orchestrator.spec.errors import StackError

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"


@dataclass
class Endpoint:
    network: str
    container_id: str
    container_name: str
    address: str
    service: str = ""
    project: str = ""
    hostname: str = ""
    aliases: list[str] = field(default_factory=list)
    veth: str = ""
    mac: str = ""
    ports: list[dict[str, Any]] = field(default_factory=list)
    priority: int = 0
    dns: list[str] = field(default_factory=list)  # the service's `dns:`: upstreams for it
    links: dict[str, str] = field(default_factory=dict)  # `links:` alias -> service name

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Network:
    name: str
    id: str
    bridge: str
    subnet: str
    gateway: str
    ip_range: str = ""
    aux_addresses: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    mtu: int = 1500
    created: str = ""
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    @property
    def prefixlen(self) -> int:
        return IPv4Network(self.subnet).prefixlen

    def addressing(self) -> ipam.Addressing:
        return ipam.Addressing.from_json(self.to_json())

    def to_json(self) -> dict[str, Any]:
        document = {k: v for k, v in self.__dict__.items() if k != "endpoints"}
        document["endpoints"] = {k: e.to_json() for k, e in self.endpoints.items()}
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Network:
        fields = {k: v for k, v in document.items() if k in cls.__dataclass_fields__}
        fields["endpoints"] = {
            key: Endpoint(**value) for key, value in (document.get("endpoints") or {}).items()
        }
        return cls(**fields)


class NetworkStore:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def names(self) -> list[str]:
        """The recorded networks' names, without reading the records (each holds every
        endpoint: with 50 containers, parsing them all is milliseconds)."""
        return sorted(
            entry[: -len(".json")] for entry in os.listdir(self.root)
            if entry.endswith(".json") and not entry.startswith(".")
        )

    def list(self) -> list[Network]:
        networks = []
        for entry in sorted(os.listdir(self.root)):
            if entry.endswith(".json") and not entry.startswith("."):
                try:
                    networks.append(Network.from_json(json.loads((self.root / entry).read_text())))
                except (OSError, ValueError, TypeError):
                    continue  # a damaged record is reported by inspect, never fatal to listing
        return networks

    def find(self, name: str) -> Network | None:
        try:
            return Network.from_json(json.loads(self._path(name).read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as error:
            raise StackError(f"network {name}: its record is damaged ({error})") from None

    def get(self, name: str) -> Network:
        found = self.find(name) or self._by_id(name)
        if found is None:
            raise StackError(f"network {name} not found", hint="see `stack network ls`")
        return found

    def _by_id(self, prefix: str) -> Network | None:
        matches = [n for n in self.list() if len(prefix) >= 3 and n.id.startswith(prefix)]
        return matches[0] if len(matches) == 1 else None

    def save(self, network: Network) -> None:
        # Compact: with `indent` json falls back to its pure-Python encoder, some ten times
        # slower, and a network's record is rewritten at every container start and removal.
        data = json.dumps(network.to_json(), sort_keys=True, separators=(",", ":")).encode()
        write_atomic(self._path(network.name), data, self.root)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def plan(
        self, name: str, *, ipam_config: Sequence[Mapping[str, Any]] | None = None,
        internal: bool = False, labels: Mapping[str, str] | None = None,
        driver: str = "bridge", driver_opts: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Network:
        """Decide a new network (subnet, bridge name) without creating anything."""
        if driver not in ("bridge", ""):
            raise StackError(f"network {name}: driver {driver!r} is not supported",
                             hint="use the default bridge driver")
        options = {str(k): str(v) for k, v in (driver_opts or {}).items()}
        for key in options:
            if key not in (BRIDGE_NAME_OPTION, MTU_OPTION):
                raise StackError(f"network {name}: driver_opts {key} is not supported")
        network_id = secrets.token_hex(32)
        bridge = options.get(BRIDGE_NAME_OPTION) or bridge_name(network_id)
        if len(bridge) > 15:
            raise StackError(f"network {name}: bridge name {bridge!r} is longer than 15 characters")
        try:
            mtu = int(options.get(MTU_OPTION, "1500"))
        except ValueError:
            raise StackError(f"network {name}: {MTU_OPTION} must be a number") from None
        others = {n.name: IPv4Network(n.subnet) for n in self.list() if n.name != name}
        if any(n.bridge == bridge for n in self.list() if n.name != name):
            raise StackError(f"network {name}: bridge {bridge} is used by another network")
        if os.path.exists(f"/sys/class/net/{bridge}"):
            # Never adopt an interface we did not make: removing the network would delete it.
            raise StackError(f"network {name}: an interface named {bridge} exists already",
                             hint=f"choose another {BRIDGE_NAME_OPTION}")
        # Our own networks are in `others`; a bridge of another state root's engine is
        # a route like any other, whose subnet this root must not take.
        routes = [r for r in ipam.read_host_routes()
                  if r.device not in {n.bridge for n in self.list()}]
        addressing = ipam.choose_addressing(
            name, ipam_config, pools=ipam.configured_address_pools(environ or os.environ),
            others=others, host_routes=routes,
        )
        document = addressing.to_json()
        return Network(
            name=name, id=network_id, bridge=bridge, subnet=str(document["subnet"]),
            gateway=str(document["gateway"]), ip_range=str(document.get("ip_range") or ""),
            aux_addresses={k: str(v) for k, v in (document.get("aux_addresses") or {}).items()},
            internal=internal, labels=dict(labels or {}), options=options, mtu=mtu,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
