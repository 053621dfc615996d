"""`extends`: a service built on another one, in the same file or another one.

Expected values are what `docker compose config --format json` prints for the
files in fixtures/extends (only the keys extends decides are compared).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.spec.errors import Location, StackError
from orchestrator.spec.extends import apply_extends
from orchestrator.spec.merge import copy_data
from orchestrator.spec.paths import resolve_paths
from orchestrator.spec.transform import canonical
from orchestrator.spec.yamlfile import Document, parse_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "extends"


class FileLoader:
    """The per-file stages before extends, relative paths against the file's directory."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def __call__(self, path: str) -> Document:
        self.loaded.append(path)
        document = parse_yaml(Path(path).read_text(), path)
        data = canonical(document.data, document.source)
        return document._replace(data=resolve_paths(data, os.path.dirname(path)))


def extended(name: str, loader: FileLoader | None = None) -> Document:
    loader = loader or FileLoader()
    return apply_extends(loader(str(FIXTURES / name)), loader)


def services(name: str) -> dict[str, Any]:
    return extended(name).data["services"]


def mounts(service: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(v["type"], v.get("source"), v["target"]) for v in service["volumes"]]


def test_service_inherits_everything_including_dependencies():
    web = services("compose.yaml")["web"]
    assert web["image"] == "nginx"
    assert web["depends_on"] == {"db": {"condition": "service_started", "required": True}}
    assert web["volumes_from"] == ["db"]
    assert web["links"] == ["db"]
    assert web["labels"] == {"l": "1"}
    assert "extends" not in web


def test_local_definition_merges_over_the_base_like_a_later_file():
    web = services("compose.yaml")["web"]
    assert web["command"] == ["local"]
    assert web["environment"] == {"A": "1", "B": "3"}
    assert web["ports"] == [
        {"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"},
        {"mode": "ingress", "target": 90, "published": "9000", "protocol": "tcp"},
    ]


def test_base_service_itself_is_unchanged():
    base = services("compose.yaml")["base"]
    assert base["command"] == ["x", "y"]
    assert base["environment"] == {"A": "1", "B": "2"}


def test_reset_and_override_apply_to_the_extended_service():
    reset = services("compose.yaml")["reset"]
    assert "ports" not in reset
    assert reset["environment"] == {"Z": "1"}
    assert reset["command"] == ["x", "y"]


def test_paths_from_another_directory_stay_relative_to_that_file():
    remote = services("compose.yaml")["remote"]
    other = FIXTURES / "other"
    assert remote["build"]["context"] == str(other / "ctx")
    assert remote["env_file"][0]["path"] == str(other / "my.env")
    assert mounts(remote) == [
        ("bind", str(other / "data"), "/data"),
        ("volume", "rel", "/named"),
        ("bind", str(FIXTURES / "mine"), "/mine"),
    ]


def test_chain_continues_inside_the_other_file():
    remote = services("compose.yaml")["remote"]
    assert remote["image"] == "busy"
    assert remote["working_dir"] == "/w"
    assert remote["secrets"] == [{"source": "s", "target": "/run/secrets/s"}]


def test_unrelated_broken_extends_in_the_other_file_is_ignored():
    # other/base.yaml has `broken: {extends: nowhere}`; compose only follows the chain used
    assert "remote" in services("compose.yaml")


def test_each_other_file_is_loaded_once():
    loader = FileLoader()
    extended("compose.yaml", loader)
    assert loader.loaded == [str(FIXTURES / "compose.yaml"), str(FIXTURES / "other/base.yaml")]


def test_input_document_is_not_changed():
    loader = FileLoader()
    document = loader(str(FIXTURES / "compose.yaml"))
    before = copy_data(document.data)
    apply_extends(document, loader)
    assert document.data == before


def test_two_services_extending_one_base_do_not_share_values():
    result = services("compose.yaml")
    result["web"]["labels"]["changed"] = "yes"
    assert result["reset"]["labels"] == {"l": "1"}
    assert result["base"]["labels"] == {"l": "1"}


def test_locations_point_at_the_file_that_wrote_each_key():
    source = extended("compose.yaml").source
    assert source.locate(("services", "remote", "image")) == Location(
        str(FIXTURES / "other/base.yaml"), 8, 5
    )
    assert source.locate(("services", "remote", "volumes", 2)) == Location(
        str(FIXTURES / "compose.yaml"), 20, 15
    )


def test_document_without_extends_is_returned_as_is():
    loader = FileLoader()
    document = loader(str(FIXTURES / "other/back.yaml"))
    no_extends = document._replace(data={"services": {"a": {"image": "x"}}})
    assert apply_extends(no_extends, loader) is no_extends


# --- errors -------------------------------------------------------------------------------


def error_of(name: str) -> str:
    with pytest.raises(StackError) as caught:
        extended(name)
    return str(caught.value)


def test_loop_is_an_error_naming_the_chain():
    message = error_of("loop.yaml")
    assert message.startswith(f"{FIXTURES / 'loop.yaml'}:")
    assert "services extend each other in a loop: a -> b -> c -> a" in message


def test_service_extending_itself_is_a_loop():
    message = error_of("self.yaml")
    assert message == (
        f"{FIXTURES / 'self.yaml'}:4:5: services.a.extends: services extend each other "
        "in a loop: a -> a (one service of the loop must define its own settings instead)"
    )


def test_loop_across_files_names_each_file():
    message = error_of("across.yaml")
    assert "services extend each other in a loop: a -> b (back.yaml) -> a (across.yaml)" in message


def only(name: str, service: str) -> str:
    loader = FileLoader()
    document = loader(str(FIXTURES / name))
    kept = {"web", service}
    data = {"services": {k: v for k, v in document.data["services"].items() if k in kept}}
    with pytest.raises(StackError) as caught:
        apply_extends(document._replace(data=data), loader)
    return str(caught.value)


def test_missing_service_in_same_file_is_an_error_with_suggestion():
    assert only("missing.yaml", "api") == (
        f"{FIXTURES / 'missing.yaml'}:5:5: services.api.extends: "
        "service \"api\" extends \"webb\", which is not defined (did you mean 'web'?)"
    )


def test_missing_service_in_other_file_is_an_error_at_the_extends():
    assert only("missing.yaml", "far") == (
        f"{FIXTURES / 'missing.yaml'}:7:38: services.far.extends.service: "
        "service \"far\" extends \"nope\", which other/base.yaml does not define "
        "(defined services: broken, deeper, svc)"
    )


def test_missing_file_is_an_error_at_the_extends():
    assert only("missing.yaml", "gone") == (
        f"{FIXTURES / 'missing.yaml'}:9:15: services.gone.extends.file: "
        "the file to extend from does not exist: nothing.yaml"
    )


def test_reset_list_item_in_extending_service_is_dropped_once():
    loader = FileLoader()
    path = str(FIXTURES / "compose.yaml")
    text = (
        "services:\n  base: {image: a, dns: [a]}\n"
        "  web: {extends: base, dns: [b, !reset c, d]}\n"
    )
    document = parse_yaml(text, path)
    result = apply_extends(document, loader)
    assert result.data["services"]["web"]["dns"] == ["a", "b", "d"]
    assert result.tags == {}
