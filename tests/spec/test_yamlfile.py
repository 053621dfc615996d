"""Reading one YAML file the way compose (Go's yaml.v3) reads it, with locations."""

from __future__ import annotations

import pytest

from orchestrator.spec.errors import Location, StackError
from orchestrator.spec.yamlfile import go_float, go_string, parse_yaml, resolve_plain


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yes", "yes"), ("on", "on"), ("No", "No"), ("y", "y"),  # YAML 1.1 booleans stay text
        ("true", True), ("False", False), ("~", None), ("null", None), ("", None),
        ("0755", 493), ("0o17", 15), ("0x1F", 31), ("1_000", 1000), ("-12", -12),
        ("1e3", 1000.0), ("1.50", 1.5), (".5", 0.5), (".inf", float("inf")),
        ("2001-12-14", "2001-12-14"), ("08", 8.0), ("1.2.3", "1.2.3"), ("-", "-"),
    ],
)
def test_plain_scalars_resolve_like_yaml_v3(text: str, value: object) -> None:
    assert resolve_plain(text) == value
    assert type(resolve_plain(text)) is type(value)


def test_quoted_scalars_are_always_text() -> None:
    document = parse_yaml("a: '12'\nb: \"true\"\nc: !!str 12\nd: !!int '7'\n", "f.yaml")
    assert document.data == {"a": "12", "b": "true", "c": "12", "d": 7}


def test_every_key_and_item_has_its_line_and_column() -> None:
    document = parse_yaml("services:\n  web:\n    ports:\n      - 80\n      - 443\n", "c.yaml")
    assert document.source.locate(("services", "web", "ports")) == Location("c.yaml", 3, 5)
    assert document.source.locate(("services", "web", "ports", 1)) == Location("c.yaml", 5, 9)
    assert document.source.locate(("services", "web", "nope")) == Location("c.yaml", 2, 3)


def test_anchors_aliases_and_merge_keys() -> None:
    document = parse_yaml(
        "x-base: &base {image: busybox, restart: always}\n"
        "x-more: &more {restart: never, init: true}\n"
        "services:\n"
        "  web:\n"
        "    <<: [*base, *more]\n"
        "    image: nginx\n",
        "c.yaml",
    )
    assert document.data["services"]["web"] == {
        "image": "nginx", "restart": "always", "init": True,
    }
    # A merged key points back at where the anchor defined it.
    assert document.source.locate(("services", "web", "restart")) == Location("c.yaml", 1, 32)


def test_reset_and_override_tags_are_kept_aside_for_the_merge() -> None:
    document = parse_yaml("a: !reset []\nb: !override {x: 1}\nc: !reset\n", "f.yaml")
    assert document.data == {"a": [], "b": {"x": 1}, "c": None}
    assert document.tags == {("a",): "reset", ("b",): "override", ("c",): "reset"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "f.yaml:2:1: key 'a' is already defined at line 1"),
        ("a: [\n", "f.yaml:2:1: invalid YAML: did not find expected node content"),
        ("- 1\n", "f.yaml:1:1: the top level of a stack file must be a mapping"),
        ("&a [*a]\n", "f.yaml:1:1: an alias refers to a value that contains it"),
        ("a: *b\n", "f.yaml:1:4: invalid YAML: found undefined alias"),
        ("a: 1\n\x1f: 2\n", "f.yaml:2:1: invalid YAML: character '\\x1f' is not allowed"),
        ("a: {<<: 1}\n", "f.yaml:1:9: a: a merge key (<<) takes a mapping"),
    ],
)
def test_malformed_yaml_is_one_located_error(text: str, message: str) -> None:
    with pytest.raises(StackError) as caught:
        parse_yaml(text, "f.yaml")
    assert str(caught.value).startswith(message)
    assert len(str(caught.value).splitlines()) == 1


def test_an_alias_bomb_is_refused_not_expanded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    with pytest.raises(StackError, match="more than .* values through aliases"):
        parse_yaml("\n".join(lines) + "\n", "bomb.yaml")


def test_empty_file_is_an_empty_stack() -> None:
    assert parse_yaml("", "f.yaml").data == {}
    assert parse_yaml("# only a comment\n", "f.yaml").data == {}


@pytest.mark.parametrize(
    ("value", "text"),
    [(1000.0, "1000"), (1.5, "1.5"), (1e21, "1e+21"), (1e-7, "1e-07"), (True, "true"),
     (None, ""), (12, "12")],
)
def test_values_are_stringified_as_go_prints_them(value: object, text: str) -> None:
    assert go_string(value) == text
    if isinstance(value, float):
        assert go_float(value) == text


@pytest.mark.parametrize("depth", [150, 3000])
def test_absurdly_deep_nesting_is_refused(depth: int) -> None:
    with pytest.raises(StackError, match="nest"):
        parse_yaml("a: " + "[" * depth + "]" * depth + "\n", "deep.yaml")
