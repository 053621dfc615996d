"""Top-level `include`: other stack files loaded as sub-projects and added in.

Expected values are what `docker compose config --format json` prints for the
files in fixtures/include (only the keys include decides are compared).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.spec.errors import Location, SourceMap, StackError
from orchestrator.spec.extends import apply_extends
from orchestrator.spec.include import apply_include
from orchestrator.spec.merge import copy_data, merge_documents
from orchestrator.spec.paths import resolve_paths
from orchestrator.spec.transform import canonical
from orchestrator.spec.yamlfile import Document, parse_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "include"


class ProjectLoader:
    """A minimal loader: each file through the per-file stages, then merged in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str, list[str]]] = []

    def file(self, path: str, directory: str) -> Document:
        document = parse_yaml(Path(path).read_text(), path)
        data = resolve_paths(canonical(document.data, document.source), directory)
        document = document._replace(data=data)
        document = apply_extends(document, lambda other: self.file(other, str(Path(other).parent)))
        return apply_include(document, self, directory)

    def __call__(self, paths: list[str], directory: str, env_files: list[str]) -> Document:
        self.calls.append((paths, directory, env_files))
        data: dict[str, Any] = {}
        source = SourceMap(paths[0])
        for path in paths:
            document = self.file(path, directory)
            data = merge_documents(data, document.data, document.tags, source, document.source)
        return Document(paths[0], data, source, {})


def load(name: str, loader: ProjectLoader | None = None) -> Document:
    loader = loader or ProjectLoader()
    return loader.file(str(FIXTURES / name), str(FIXTURES))


def mounts(service: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(v["type"], v.get("source"), v["target"]) for v in service["volumes"]]


def test_included_services_and_resources_are_added():
    data = load("compose.yaml").data
    assert sorted(data["services"]) == ["api", "deep", "e", "web"]
    assert data["volumes"] == {"shared": {}}
    assert data["networks"] == {"net1": {"driver": "bridge"}}


def test_include_key_name_and_extensions_of_included_files_are_not_kept():
    data = load("compose.yaml").data
    assert "include" not in data
    assert "x-inc" not in data
    assert data["x-top"] == 1
    assert "name" not in data


def test_path_list_is_merged_like_override_files():
    api = load("compose.yaml").data["services"]["api"]
    assert api["environment"] == {"O": "1"}
    assert api["image"] == "api"


def test_project_directory_is_the_base_of_relative_paths():
    api = load("compose.yaml").data["services"]["api"]
    pd = FIXTURES / "pd"
    assert api["build"]["context"] == str(pd / "ctx")
    assert mounts(api) == [
        ("bind", str(pd / "data"), "/data"),
        ("bind", str(pd / "odata"), "/odata"),
    ]


def test_without_project_directory_paths_are_relative_to_the_included_file():
    services = load("compose.yaml").data["services"]
    assert mounts(services["deep"]) == [("bind", str(FIXTURES / "sub/deep"), "/here")]
    # included by sub/deep/d.yaml as ../e.yaml
    assert mounts(services["e"]) == [("bind", str(FIXTURES / "sub/x"), "/x")]


def test_loader_gets_files_directory_and_env_files():
    loader = ProjectLoader()
    load("compose.yaml", loader)
    sub = FIXTURES / "sub"
    assert loader.calls == [
        ([str(sub / "a.yaml"), str(sub / "a-override.yaml")], str(FIXTURES / "pd"),
         [str(sub / "inc.env")]),
        ([str(sub / "deep/d.yaml")], str(sub / "deep"), [str(sub / "deep/.env")]),
        ([str(sub / "e.yaml")], str(sub), []),
    ]


def test_identical_definition_in_both_files_is_accepted():
    # net1 is defined the same way in compose.yaml and sub/a.yaml
    assert load("compose.yaml").data["networks"]["net1"] == {"driver": "bridge"}


def test_locations_of_imported_services_point_at_the_included_file():
    source = load("compose.yaml").source
    assert source.locate(("services", "e", "image")) == Location(str(FIXTURES / "sub/e.yaml"), 3, 5)
    assert source.locate(("services", "web", "image")) == Location(
        str(FIXTURES / "compose.yaml"), 8, 5
    )


def test_input_document_is_not_changed():
    loader = ProjectLoader()
    path = str(FIXTURES / "compose.yaml")
    document = parse_yaml(Path(path).read_text(), path)
    before = copy_data(document.data)
    apply_include(document, loader, str(FIXTURES))
    assert document.data == before


# --- errors -------------------------------------------------------------------------------


def error_of(name: str) -> str:
    with pytest.raises(StackError) as caught:
        load(name)
    return str(caught.value)


def test_resource_defined_differently_in_both_files_is_an_error():
    assert error_of("conflict.yaml") == (
        f"{FIXTURES / 'conflict.yaml'}:3:3: services.e: services.e conflicts with the definition"
        " imported from e.yaml (rename one of them, or define it in one file only)"
    )


def test_include_loop_is_an_error_naming_the_files():
    message = error_of("loop_a.yaml")
    assert message.startswith(f"{FIXTURES / 'loop_b.yaml'}:1:11: include[0]: ")
    loop = "loop_a.yaml -> loop_b.yaml -> loop_a.yaml"
    assert f"files include each other in a loop: {loop}" in message


def test_missing_included_file_is_an_error_at_the_entry():
    assert error_of("missing.yaml") == (
        f"{FIXTURES / 'missing.yaml'}:2:5: include[0]: "
        "the included file does not exist: nothing.yaml"
    )


def test_missing_env_file_is_an_error():
    assert error_of("no_env.yaml") == (
        f"{FIXTURES / 'no_env.yaml'}:3:16: include[0].env_file[0]: "
        "the env file does not exist: nope.env"
    )
