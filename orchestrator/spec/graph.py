"""The service dependency graph: who waits for whom, in which order things start.

A service depends on another when it names it in depends_on, links,
volumes_from, or shares one of its namespaces (`network_mode`, `ipc`, `pid`,
`uts` set to `service:x`). Edges point from the dependent service to the one
it needs (`web -> db`), as a user reads "web depends on db".

Plain Python on purpose: the graphs are a few dozen nodes, and importing a
graph library would cost more than every stack command spends here. All
output is deterministic (names sorted), so plans, errors and renderings are
stable from run to run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from .errors import Path, StackError

_SERVICE_PREFIX = "service:"
_CONTAINER_PREFIX = "container:"
NAMESPACE_KEYS = ("network_mode", "ipc", "pid", "uts")


class ServiceRef(NamedTuple):
    """One place where a service names another service it needs."""

    target: str
    kind: str  # "depends_on", "links", "volumes_from", or a NAMESPACE_KEYS entry
    path: Path  # key path inside the service, e.g. ("links", 0)
    condition: str | None = None  # depends_on only: service_started, service_healthy, ...
    required: bool = True


class Edge(NamedTuple):
    """`source` needs `target` because of `ref`."""

    source: str
    target: str
    kind: str
    path: Path
    condition: str | None
    required: bool


def service_refs(service: dict[str, Any]) -> Iterator[ServiceRef]:
    """Every reference from `service` to another service, in the order they are written."""
    for target, spec in (service.get("depends_on") or {}).items():
        spec = spec or {}
        yield ServiceRef(
            target, "depends_on", ("depends_on", target),
            spec.get("condition", "service_started"), spec.get("required", True) is not False,
        )
    for i, link in enumerate(service.get("links") or []):
        yield ServiceRef(str(link).split(":", 1)[0], "links", ("links", i))
    for i, entry in enumerate(service.get("volumes_from") or []):
        entry = str(entry)
        if not entry.startswith(_CONTAINER_PREFIX):
            yield ServiceRef(entry.split(":", 1)[0], "volumes_from", ("volumes_from", i))
    for key in NAMESPACE_KEYS:
        value = service.get(key)
        if isinstance(value, str) and value.startswith(_SERVICE_PREFIX):
            yield ServiceRef(value[len(_SERVICE_PREFIX):], key, (key,))


def build_graph(model: dict[str, Any]) -> DependencyGraph:
    """The dependency graph of the services in `model`.

    A reference to a service that is not in the model (an optional
    dependency on a service a profile disabled) makes no edge; validation
    has already rejected every other dangling reference.
    """
    services: dict[str, Any] = model.get("services") or {}
    edges: list[Edge] = []
    for name in sorted(services):
        for ref in service_refs(services[name] or {}):
            if ref.target in services:
                edges.append(Edge(name, ref.target, ref.kind, ref.path, ref.condition,
                                  ref.required))
    return DependencyGraph(services, edges)


class DependencyGraph:
    """Services and the edges between them; read-only once built."""

    __slots__ = ("nodes", "edges", "_needs", "_needed_by", "_by_pair")

    def __init__(self, nodes: Any, edges: list[Edge]) -> None:
        self.nodes: list[str] = sorted(nodes)
        self.edges = edges
        self._needs: dict[str, set[str]] = {n: set() for n in self.nodes}
        self._needed_by: dict[str, set[str]] = {n: set() for n in self.nodes}
        self._by_pair: dict[tuple[str, str], list[Edge]] = {}
        for edge in edges:
            self._needs[edge.source].add(edge.target)
            self._needed_by[edge.target].add(edge.source)
            self._by_pair.setdefault((edge.source, edge.target), []).append(edge)

    def edges_between(self, source: str, target: str) -> list[Edge]:
        """The edges that make `source` need `target`, in the order they were written."""
        return self._by_pair.get((source, target), [])

    # --- queries ---------------------------------------------------------------------------

    def find_cycle(self) -> list[str] | None:
        """A dependency cycle as `[a, b, c, a]`, or None when there is none.

        Depth-first from each service in name order, neighbours in name
        order: the same walk compose makes, so both report the same cycle.
        """
        done: set[str] = set()
        for root in self.nodes:
            if root in done:
                continue
            path = [root]
            on_path = {root}
            stack = [iter(sorted(self._needs[root]))]
            while stack:
                child = next(stack[-1], None)
                if child is None:
                    stack.pop()
                    done.add(path[-1])
                    on_path.discard(path.pop())
                    continue
                if child in on_path:
                    return path[path.index(child):] + [child]
                if child not in done:
                    path.append(child)
                    on_path.add(child)
                    stack.append(iter(sorted(self._needs[child])))
        return None

    def start_order(self) -> list[list[str]]:
        """Services in generations: each needs only services of earlier generations."""
        waiting = {name: len(needs) for name, needs in self._needs.items()}
        ready = sorted(name for name, count in waiting.items() if count == 0)
        generations: list[list[str]] = []
        while ready:
            generations.append(ready)
            unlocked: list[str] = []
            for name in ready:
                for dependent in self._needed_by[name]:
                    waiting[dependent] -= 1
                    if waiting[dependent] == 0:
                        unlocked.append(dependent)
            ready = sorted(unlocked)
        if sum(map(len, generations)) != len(self.nodes):
            cycle = self.find_cycle() or []
            raise StackError("dependency cycle detected: " + " -> ".join(cycle))
        return generations

    def stop_order(self) -> list[list[str]]:
        """Generations to stop in: dependents before what they depend on."""
        return self.start_order()[::-1]

    def dependencies(self, name: str, *, recursive: bool = False) -> list[str]:
        """What `name` needs; with `recursive`, everything it needs transitively."""
        return self._walk(name, self._needs, recursive)

    def dependents(self, name: str, *, recursive: bool = False) -> list[str]:
        """What needs `name`; with `recursive`, everything that needs it transitively."""
        return self._walk(name, self._needed_by, recursive)

    def _walk(self, name: str, adjacency: dict[str, set[str]], recursive: bool) -> list[str]:
        if name not in adjacency:
            import difflib  # only when there is an error to explain

            close = difflib.get_close_matches(name, self.nodes, n=1)
            raise StackError(f'no such service: "{name}"',
                             hint=f'did you mean "{close[0]}"?' if close else None)
        if not recursive:
            return sorted(adjacency[name])
        seen: set[str] = set()
        todo = list(adjacency[name])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(adjacency[current])
        seen.discard(name)
        return sorted(seen)

    # --- renderers -------------------------------------------------------------------------

    def edge_label(self, source: str, target: str) -> str:
        """What an arrow says: the depends_on condition and any other kinds of reference.

        Plain `service_started` says nothing an arrow does not, so it is left
        out; an optional dependency says so.
        """
        parts: list[str] = []
        for edge in self.edges_between(source, target):
            if edge.kind != "depends_on":
                part = edge.kind
            elif edge.condition and edge.condition != "service_started":
                part = edge.condition
            else:
                part = ""
            if not edge.required:
                part = f"{part} (optional)" if part else "optional"
            if part and part not in parts:
                parts.append(part)
        return ", ".join(parts)

    def _pairs(self) -> list[tuple[str, str]]:
        return sorted(self._by_pair)

    def _optional(self, source: str, target: str) -> bool:
        return all(not edge.required for edge in self.edges_between(source, target))

    def render_text(self) -> str:
        """The start order, then one line per dependency."""
        lines = ["start order:"]
        for i, generation in enumerate(self.start_order(), 1):
            lines.append(f"  {i}. {', '.join(generation)}")
        if self._by_pair:
            lines.append("dependencies:")
        for source, target in self._pairs():
            label = self.edge_label(source, target)
            lines.append(f"  {source} -> {target}" + (f" ({label})" if label else ""))
        return "\n".join(lines) + "\n"

    def render_dot(self) -> str:
        """Graphviz: `dot -Tsvg` draws it; optional dependencies are dashed."""
        lines = ["digraph stack {", "  rankdir=LR;", "  node [shape=box];"]
        lines += [f"  {_dot_id(name)};" for name in self.nodes]
        for source, target in self._pairs():
            attrs = []
            label = self.edge_label(source, target)
            if label:
                attrs.append(f"label={_dot_id(label)}")
            if self._optional(source, target):
                attrs.append("style=dashed")
            suffix = f" [{', '.join(attrs)}]" if attrs else ""
            lines.append(f"  {_dot_id(source)} -> {_dot_id(target)}{suffix};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def render_mermaid(self) -> str:
        """A Mermaid flowchart; node ids are indices, since names may hold `-` or `.`."""
        ids = {name: f"s{i}" for i, name in enumerate(self.nodes)}
        lines = ["flowchart LR"]
        lines += [f'  {ids[name]}["{name}"]' for name in self.nodes]
        for source, target in self._pairs():
            arrow = "-.->" if self._optional(source, target) else "-->"
            label = self.edge_label(source, target)
            label = f'|"{label}"|' if label else ""
            lines.append(f"  {ids[source]} {arrow}{label} {ids[target]}")
        return "\n".join(lines) + "\n"


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
