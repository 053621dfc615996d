"""The dependency graph: edges, cycles, start/stop order and renderings.

Random graphs are cross-checked against networkx, which the project does not
import at run time but trusts as a reference here.
"""

from __future__ import annotations

import subprocess
import sys

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.spec.errors import StackError
from orchestrator.spec.graph import build_graph


def _started(**extra):
    return {"condition": "service_started", "required": True, **extra}


def model(**services):
    """A model with `services`, each given as its service mapping (image filled in)."""
    return {"services": {name: {"image": "x", **spec} for name, spec in services.items()}}


WEB_STACK = model(
    proxy={"depends_on": {"web": _started()}, "links": ["web:app"]},
    web={
        "depends_on": {
            "db": {"condition": "service_healthy", "required": True},
            "migrate": {"condition": "service_completed_successfully", "required": True},
            "metrics": {"condition": "service_started", "required": False},
        },
        "volumes_from": ["files:ro", "container:legacy"],
        "ipc": "service:files",
    },
    migrate={"depends_on": {"db": {"condition": "service_healthy", "required": True}}},
    db={"network_mode": "service:vpn"},
    files={},
    vpn={},
)


# --- edges ----------------------------------------------------------------------------------


def test_edges_come_from_every_kind_of_reference():
    graph = build_graph(WEB_STACK)
    assert graph.dependencies("web") == ["db", "files", "migrate"]
    assert graph.dependencies("db") == ["vpn"]
    assert [edge.kind for edge in graph.edges_between("web", "files")] == ["volumes_from", "ipc"]
    assert [edge.kind for edge in graph.edges_between("proxy", "web")] == ["depends_on", "links"]


def test_reference_to_a_container_or_a_disabled_service_makes_no_edge():
    # "metrics" was removed by the profile filter; "container:legacy" is not a service.
    graph = build_graph(WEB_STACK)
    assert "metrics" not in graph.nodes
    assert "legacy" not in graph.nodes
    assert graph.edges_between("web", "metrics") == []


def test_dependents_are_the_reverse_of_dependencies():
    graph = build_graph(WEB_STACK)
    assert graph.dependents("db") == ["migrate", "web"]
    assert graph.dependents("db", recursive=True) == ["migrate", "proxy", "web"]
    assert graph.dependencies("proxy", recursive=True) == ["db", "files", "migrate", "vpn", "web"]
    assert graph.dependents("proxy") == []


def test_unknown_service_name_is_a_user_error_with_a_suggestion():
    with pytest.raises(StackError) as raised:
        build_graph(WEB_STACK).dependencies("wbe")
    assert str(raised.value) == 'no such service: "wbe" (did you mean "web"?)'


# --- order ----------------------------------------------------------------------------------


def test_start_order_is_generations_sorted_by_name():
    assert build_graph(WEB_STACK).start_order() == [
        ["files", "vpn"],
        ["db"],
        ["migrate"],
        ["web"],
        ["proxy"],
    ]


def test_stop_order_is_start_order_reversed():
    graph = build_graph(WEB_STACK)
    assert graph.stop_order() == graph.start_order()[::-1]


def test_services_without_dependencies_all_start_first():
    assert build_graph(model(c={}, a={}, b={})).start_order() == [["a", "b", "c"]]


def test_empty_model_has_no_order_and_no_cycle():
    graph = build_graph({"services": {}})
    assert graph.start_order() == []
    assert graph.find_cycle() is None


def test_start_order_of_a_cyclic_graph_is_a_user_error():
    cyclic = model(a={"links": ["b"]}, b={"links": ["a"]})
    with pytest.raises(StackError) as raised:
        build_graph(cyclic).start_order()
    assert str(raised.value) == "dependency cycle detected: a -> b -> a"


# --- cycles ---------------------------------------------------------------------------------


def test_acyclic_graph_has_no_cycle():
    assert build_graph(WEB_STACK).find_cycle() is None


def test_cycle_is_found_from_the_first_name_as_compose_does():
    # compose: "dependency cycle detected: a -> b -> c -> a"
    cyclic = model(
        c={"depends_on": {"a": _started()}},
        b={"depends_on": {"c": _started()}},
        a={"depends_on": {"b": _started()}},
    )
    assert build_graph(cyclic).find_cycle() == ["a", "b", "c", "a"]


def test_cycle_below_an_acyclic_start_is_reported_from_where_it_closes():
    # compose: "dependency cycle detected: y -> x -> y"
    cyclic = model(
        z={"depends_on": {"y": _started()}},
        y={"links": ["x"]},
        x={"volumes_from": ["y"]},
        a={"depends_on": {"z": _started()}},
    )
    assert build_graph(cyclic).find_cycle() == ["y", "x", "y"]


def test_service_depending_on_itself_is_a_cycle():
    assert build_graph(model(a={"network_mode": "service:a"})).find_cycle() == ["a", "a"]


# --- rendering ------------------------------------------------------------------------------


def test_text_rendering_lists_order_and_labelled_dependencies():
    assert build_graph(WEB_STACK).render_text() == (
        "start order:\n"
        "  1. files, vpn\n"
        "  2. db\n"
        "  3. migrate\n"
        "  4. web\n"
        "  5. proxy\n"
        "dependencies:\n"
        "  db -> vpn (network_mode)\n"
        "  migrate -> db (service_healthy)\n"
        "  proxy -> web (links)\n"
        "  web -> db (service_healthy)\n"
        "  web -> files (volumes_from, ipc)\n"
        "  web -> migrate (service_completed_successfully)\n"
    )


def test_dot_rendering_is_graphviz_with_dashed_optional_edges():
    stack = model(web={"depends_on": {"db": _started(), "cache": _started(required=False)}},
                  db={}, cache={})
    assert build_graph(stack).render_dot() == (
        "digraph stack {\n"
        "  rankdir=LR;\n"
        "  node [shape=box];\n"
        '  "cache";\n'
        '  "db";\n'
        '  "web";\n'
        '  "web" -> "cache" [label="optional", style=dashed];\n'
        '  "web" -> "db";\n'
        "}\n"
    )


def test_mermaid_rendering_uses_safe_ids_and_labels():
    stack = model(**{
        "web-1": {"depends_on": {"db.main": {"condition": "service_healthy", "required": True}}},
        "db.main": {},
    })
    assert build_graph(stack).render_mermaid() == (
        "flowchart LR\n"
        '  s0["db.main"]\n'
        '  s1["web-1"]\n'
        '  s1 -->|"service_healthy"| s0\n'
    )


def test_renderings_do_not_depend_on_key_order():
    reordered = {"services": dict(reversed(list(WEB_STACK["services"].items())))}
    for render in ("render_text", "render_dot", "render_mermaid"):
        assert getattr(build_graph(reordered), render)() == getattr(build_graph(WEB_STACK),
                                                                    render)()


# --- cross-check against networkx -----------------------------------------------------------

NAMES = [f"s{i}" for i in range(12)]
KINDS = ("depends_on", "links", "volumes_from", "network_mode")


@st.composite
def random_stacks(draw, acyclic: bool):
    """A model over up to 12 services and random edges; acyclic ones follow a random order."""
    count = draw(st.integers(min_value=0, max_value=len(NAMES)))
    names = draw(st.permutations(NAMES))[:count]
    pairs = st.tuples(st.integers(0, max(count - 1, 0)), st.integers(0, max(count - 1, 0)))
    raw_edges = draw(st.lists(pairs, max_size=30)) if count else []
    services = {name: {"image": "x"} for name in names}
    for src, dst in raw_edges:
        if acyclic and src <= dst:
            continue  # only later -> earlier in `names`, so no cycle can form
        service = services[names[src]]
        kind = draw(st.sampled_from(KINDS))
        target = names[dst]
        if kind == "depends_on":
            service.setdefault("depends_on", {})[target] = _started()
        elif kind == "links":
            service.setdefault("links", []).append(f"{target}:alias")
        elif kind == "volumes_from":
            service.setdefault("volumes_from", []).append(target)
        elif "network_mode" not in service:
            service["network_mode"] = f"service:{target}"
    return {"services": services}


def _networkx(stack) -> nx.DiGraph:
    """The same graph, edges drawn dependency -> dependent as networkx orders them."""
    graph = nx.DiGraph()
    graph.add_nodes_from(stack["services"])
    for edge in build_graph(stack).edges:
        graph.add_edge(edge.target, edge.source)
    return graph


@settings(max_examples=300, deadline=None)
@given(random_stacks(acyclic=True))
def test_start_order_matches_networkx_topological_generations(stack):
    expected = [sorted(generation) for generation in nx.topological_generations(_networkx(stack))]
    assert build_graph(stack).start_order() == expected


@settings(max_examples=300, deadline=None)
@given(random_stacks(acyclic=False))
def test_cycle_detection_agrees_with_networkx(stack):
    cycle = build_graph(stack).find_cycle()
    reference = _networkx(stack)
    assert (cycle is None) == nx.is_directed_acyclic_graph(reference)
    if cycle is not None:
        assert cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1  # a simple cycle
        for dependent, dependency in zip(cycle, cycle[1:], strict=False):
            assert reference.has_edge(dependency, dependent)


@settings(max_examples=200, deadline=None)
@given(random_stacks(acyclic=True))
def test_every_dependency_starts_in_an_earlier_generation(stack):
    graph = build_graph(stack)
    generation_of = {
        name: i for i, generation in enumerate(graph.start_order()) for name in generation
    }
    assert sorted(generation_of) == sorted(stack["services"])
    for edge in graph.edges:
        assert generation_of[edge.target] < generation_of[edge.source]


@settings(max_examples=200, deadline=None)
@given(random_stacks(acyclic=False))
def test_recursive_dependencies_match_networkx_ancestors(stack):
    graph = build_graph(stack)
    reference = _networkx(stack)
    for name in stack["services"]:
        assert graph.dependencies(name, recursive=True) == sorted(
            nx.ancestors(reference, name) - {name}
        )
        assert graph.dependents(name, recursive=True) == sorted(
            nx.descendants(reference, name) - {name}
        )


def _compose_walk(stack) -> list[str] | None:
    """Compose's cycle search, spelled out: from each name in order, a depth-first walk
    with no memory of finished nodes, neighbours in name order; the first repeat wins."""
    needs = {name: sorted({e.target for e in build_graph(stack).edges if e.source == name})
             for name in stack["services"]}

    def search(path: list[str]) -> list[str] | None:
        for child in needs[path[-1]]:
            if child in path:
                return path[path.index(child):] + [child]
            found = search(path + [child])
            if found:
                return found
        return None

    for name in sorted(needs):
        found = search([name])
        if found:
            return found
    return None


@settings(max_examples=300, deadline=None)
@given(random_stacks(acyclic=False))
def test_reported_cycle_is_the_one_compose_reports(stack):
    assert build_graph(stack).find_cycle() == _compose_walk(stack)


def test_loading_the_graph_imports_no_heavy_module():
    code = (
        "import sys; import orchestrator.spec.validate, orchestrator.spec.graph; "
        "print(sorted({'networkx', 'difflib', 'dataclasses', 'inspect'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
