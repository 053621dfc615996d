"""Variable substitution in stack files, checked against Docker Compose v2.

Every expected value below is what `docker compose config` produced for the
same input (with the `$$` it prints turned back into the `$` the container
sees), with A=a, E="" (set but empty) and U, V, W unset.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.spec.errors import SourceMap, StackError, Warnings
from orchestrator.spec.interpolate import interpolate, substitute
from orchestrator.spec.yamlfile import parse_yaml

ENV = {"A": "a", "E": ""}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("no dollar at all", "no dollar at all"),
        ("$A", "a"),
        ("${A}", "a"),
        ("$A$A", "aa"),
        ("${A}B", "aB"),
        ("$A-B", "a-B"),
        ("$A}", "a}"),
        # defaults: `:-` when unset or empty, `-` only when unset
        ("${E:-d}", "d"),
        ("${E-d}", ""),
        ("${U-}", ""),
        ("${U:-}", ""),
        ("${A:-a b}", "a"),
        ("${U:-${A}}", "a"),
        ("${U:-${V:-${W:-deep}}}", "deep"),
        ("${U:-a}${V:-b}", "ab"),
        ("${U:-x}text${A}", "xtexta"),
        ("${U:-x:?y}", "x:?y"),
        # alternatives: `:+` when set and not empty, `+` when set
        ("${A:+alt}", "alt"),
        ("${E:+alt}", ""),
        ("${U:+alt}", ""),
        ("${A+alt}", "alt"),
        ("${E+alt}", "alt"),
        ("${U+alt}", ""),
        # `?` only fails when unset
        ("${E?}", ""),
        # escapes and dollars that start nothing
        ("$$", "$"),
        ("$$A", "$A"),
        ("$${A}", "${A}"),
        ("$$$A", "$a"),
        ("a$$b", "a$b"),
        ("$", "$"),
        ("$1", "$1"),
        ("x$-y", "x$-y"),
        # a braced form runs to its closing brace; what follows is kept
        ("${A}}", "a}"),
        ("${A:-x}}", "a}"),
        ("${U:-}}}", "}}"),
        ("${U:-x}}${A}", "x}a"),
        # compose's brace counting skips the character after each `{`
        ("${A:-{}", "a"),
        ("${A:-{}}", "a"),
        ("${U:-{a}b}c}", "{a}bc}"),
        ("${U:-{{}}x}", "{{}x}"),
    ],
)
def test_substitutes_like_compose(template: str, expected: str) -> None:
    assert substitute(template, ENV) == expected


def test_variable_names_are_case_sensitive() -> None:
    assert substitute("$a${a}", ENV) == ""


def test_go_case_folding_admits_long_s_and_kelvin_sign_in_names() -> None:
    # Compose reads `$ſ` as a variable named ſ (unset), not as a literal.
    assert substitute("$\u017f|$\u212a", {"\u212a": "k"}) == "|k"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${U?}", "required variable U is missing a value"),
        ("${E:?}", "required variable E is missing a value"),
        ("pre ${U:?m} post", "required variable U is missing a value: m"),
        ("${U?msg ${A}}", "required variable U is missing a value: msg a"),
        ("${U:?m:-x}", "required variable U is missing a value: m:-x"),
        ("${U?a?b}", "required variable U is missing a value: a?b"),
        # the default is worked out even when the variable is set
        ("${A:-${U:?inner}}", "required variable U is missing a value: inner"),
        ("${U:-${E:?empty}}", "required variable E is missing a value: empty"),
    ],
)
def test_missing_required_variable_is_an_error(template: str, message: str) -> None:
    with pytest.raises(StackError) as caught:
        substitute(template, ENV)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("template", "shown"),
    [
        ("${", '"${"'),
        ("${A", '"${A"'),
        ("${A B}", '"${A B}"'),
        ("${A }", '"${A }"'),
        ("${ A}", '"${ A}"'),
        ("${}", '"${}"'),
        ("${1A}", '"${1A}"'),
        ("${A:x}", '"${A:x}"'),
        ("${A::-x}", '"${A::-x}"'),
        ("${A}${U", '"${A}${U"'),
        ("${U-x}${", '"${U-x}${"'),
        ("${A:-x\ny}", '"${A:-x\\ny}"'),
        # a bad template nested in a default is shown on its own, as compose does
        ("${U-${}", '"${"'),
        ("${A:?${}}", '"${}"'),
    ],
)
def test_invalid_syntax_is_an_error_showing_the_template(template: str, shown: str) -> None:
    with pytest.raises(StackError) as caught:
        substitute(template, ENV)
    assert caught.value.message == f"invalid interpolation format: {shown}"
    assert "$$" in str(caught.value)


def test_unset_variable_warns_once_per_name() -> None:
    warnings = Warnings()
    assert substitute("${U} $U ${V}", ENV, warnings) == "  "
    assert substitute("$U", ENV, warnings) == ""
    assert warnings.messages == [
        'The "U" variable is not set. Defaulting to a blank string.',
        'The "V" variable is not set. Defaulting to a blank string.',
    ]


def test_no_warning_when_a_default_or_alternative_applies() -> None:
    warnings = Warnings()
    substitute("${U:-x} ${U-x} ${U:+x} ${U+x} ${E}", ENV, warnings)
    assert warnings.messages == []


def test_unset_variable_inside_a_default_warns() -> None:
    warnings = Warnings()
    assert substitute("${U:-${V}}", ENV, warnings) == ""
    assert warnings.messages == ['The "V" variable is not set. Defaulting to a blank string.']


def test_absurdly_nested_document_ends_in_a_stack_error() -> None:
    data: dict = {"x-deep": []}
    innermost = data["x-deep"]
    for _ in range(5000):
        innermost.append([])
        innermost = innermost[0]
    with pytest.raises(StackError):
        interpolate(data, ENV, SourceMap("compose.yaml"), Warnings())


def test_deeply_nested_defaults_end_in_a_stack_error() -> None:
    template = "${U:-" * 5000 + "x" + "}" * 5000
    with pytest.raises(StackError):
        substitute(template, ENV)


# --- whole documents ---------------------------------------------------------

STACK = """\
services:
  web:
    image: "busybox:${TAG:-latest}"
    command: echo $$HOME ${A}
    environment:
      A: $$HOME
      B: "${MISSING_B:-def}"
    labels:
      "${KEYVAR:-k}": v
x-foo:
  bar: ${XBAR:-xb}
  "${KEYX}": 1
  list: [$A, 1, true, null]
"""


def test_values_are_substituted_and_keys_are_not() -> None:
    doc = parse_yaml(STACK, "compose.yaml")
    out = interpolate(doc.data, {"A": "a"}, doc.source, Warnings())
    assert out == {
        "services": {
            "web": {
                "image": "busybox:latest",
                "command": "echo $HOME a",
                "environment": {"A": "$HOME", "B": "def"},
                "labels": {"${KEYVAR:-k}": "v"},
            }
        },
        "x-foo": {"bar": "xb", "${KEYX}": 1, "list": ["a", 1, True, None]},
    }


def test_interpolation_leaves_the_input_unchanged() -> None:
    doc = parse_yaml(STACK, "compose.yaml")
    before = copy.deepcopy(doc.data)
    interpolate(doc.data, {"A": "a"}, doc.source, Warnings())
    assert doc.data == before


def test_missing_required_variable_points_at_the_value() -> None:
    doc = parse_yaml(
        "services:\n  web:\n    image: busybox\n    command: [echo, '${TOKEN:?set TOKEN}']\n",
        "compose.yaml",
    )
    with pytest.raises(StackError) as caught:
        interpolate(doc.data, {}, doc.source, Warnings())
    text = str(caught.value)
    assert text.startswith("compose.yaml:4:")
    assert "services.web.command[1]" in text
    assert "required variable TOKEN is missing a value: set TOKEN" in text


def test_invalid_syntax_points_at_the_value() -> None:
    doc = parse_yaml("services:\n  web:\n    image: ${IMAGE\n", "compose.yaml")
    with pytest.raises(StackError) as caught:
        interpolate(doc.data, {}, doc.source, Warnings())
    assert str(caught.value).startswith("compose.yaml:3:")
    assert caught.value.path == ("services", "web", "image")


def test_unset_variables_warn_once_across_the_file() -> None:
    doc = parse_yaml(
        "services:\n  a: {image: '$U'}\n  b: {image: '${U}', command: '$V'}\n", "compose.yaml"
    )
    warnings = Warnings()
    interpolate(doc.data, {}, doc.source, warnings)
    assert warnings.messages == [
        'The "U" variable is not set. Defaulting to a blank string.',
        'The "V" variable is not set. Defaulting to a blank string.',
    ]


CAST_STACK = """\
services:
  web:
    image: busybox
    privileged: "yes"
    read_only: "${RO:-false}"
    cpus: "0.1"
    cpu_count: "${CC:-2}"
    scale: "1"
    init: "On"
    ulimits:
      nproc: "65535"
      nofile: {soft: "20000", hard: "${H:-40000}"}
    ports:
      - target: "80"
        published: "8080"
    healthcheck:
      retries: "3"
      disable: "false"
    environment:
      privileged: "yes"
networks:
  n:
    external: "false"
    internal: "true"
    driver_opts: {external: "yes"}
"""


def test_typed_keys_are_converted_like_compose() -> None:
    doc = parse_yaml(CAST_STACK, "compose.yaml")
    warnings = Warnings()
    out = interpolate(doc.data, {}, doc.source, warnings)
    web = out["services"]["web"]
    assert web["privileged"] is True
    assert web["read_only"] is False
    assert web["cpus"] == 0.1
    assert web["cpu_count"] == 2
    assert web["scale"] == 1
    assert web["init"] is True
    assert web["ulimits"] == {"nproc": 65535, "nofile": {"soft": 20000, "hard": 40000}}
    assert web["ports"] == [{"target": 80, "published": "8080"}]
    assert web["healthcheck"] == {"retries": 3, "disable": False}
    assert web["environment"] == {"privileged": "yes"}
    assert out["networks"]["n"] == {
        "external": False,
        "internal": True,
        "driver_opts": {"external": "yes"},
    }
    assert warnings.messages == [
        '"yes" for boolean is not supported by YAML 1.2, please use `true`',
        '"On" for boolean is not supported by YAML 1.2, please use `true`',
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [("privileged", "maybe"), ("scale", "1.5"), ("cpus", "half"), ("scale", " 1")],
)
def test_unconvertible_typed_value_is_an_error(key: str, value: str) -> None:
    doc = parse_yaml(f"services:\n  web:\n    {key}: '{value}'\n", "compose.yaml")
    with pytest.raises(StackError) as caught:
        interpolate(doc.data, {}, doc.source, Warnings())
    assert caught.value.path == ("services", "web", key)
    assert str(caught.value).startswith("compose.yaml:3:")


def test_typed_keys_under_a_service_named_like_a_key_path() -> None:
    doc = parse_yaml("services:\n  a.b:\n    tty: 'true'\n", "compose.yaml")
    assert interpolate(doc.data, {}, doc.source, Warnings()) == {"services": {"a.b": {"tty": True}}}


# --- no input escapes as anything but a StackError ----------------------------

_TEMPLATE_TEXT = st.lists(
    st.sampled_from(list("${}:-+?AEU_x1 \n") + ["${", "$$", ":-", ":?"]), max_size=20
).map("".join) | st.text(max_size=30)


@settings(max_examples=400, deadline=None)
@given(_TEMPLATE_TEXT)
def test_any_text_substitutes_or_raises_stack_error(text: str) -> None:
    try:
        result = substitute(text, ENV, Warnings())
    except StackError:
        return
    assert isinstance(result, str)


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | _TEMPLATE_TEXT
_KEYS = st.sampled_from(
    ["services", "web", "privileged", "cpus", "ports", "target", "ulimits", "x-a", "networks"]
) | st.text(max_size=8)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_KEYS, _DOCUMENTS, max_size=4))
def test_any_document_interpolates_or_raises_stack_error(data: dict) -> None:
    try:
        interpolate(data, ENV, SourceMap("compose.yaml"), Warnings())
    except StackError as error:
        assert str(error).startswith("compose.yaml")
