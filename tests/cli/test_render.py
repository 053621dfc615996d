"""`stack config` prints JSON and YAML the way Docker Compose does (outputs taken from it)."""

from __future__ import annotations

from orchestrator.cli.render import to_json, to_yaml, yaml_shape

LABELS = {
    "at": "@x", "back": "a\\b", "bang": "!x", "brace": "{a}", "colon": "a: b",
    "ctrl": "a\x01b", "dash": "- x", "date": "2001-01-01", "dq": 'say "hi"', "empty": "",
    "f": "1.5", "hash": "a #b", "lead": " lead", "multi": "line1\nline2\n", "multi2": "l1\nl2",
    "n": "123", "nul": "null", "pct": "%x", "q": "it's", "star": "*x", "tab": "a\tb",
    "tilde": "~", "u": "héllo ☃", "y": "y",
}

EXPECTED_YAML = """\
labels:
  at: '@x'
  back: a\\b
  bang: '!x'
  brace: '{a}'
  colon: 'a: b'
  ctrl: "a\\x01b"
  dash: '- x'
  date: "2001-01-01"
  dq: say "hi"
  empty: ""
  f: "1.5"
  hash: 'a #b'
  lead: ' lead'
  multi: |
    line1
    line2
  multi2: |-
    l1
    l2
  "n": "123"
  nul: "null"
  pct: '%x'
  q: it's
  star: '*x'
  tab: "a\\tb"
  tilde: "~"
  u: héllo ☃
  "y": "y"
"""


def test_yaml_quotes_strings_exactly_where_compose_does() -> None:
    assert to_yaml({"labels": LABELS}) == EXPECTED_YAML


def test_yaml_indents_lists_of_mappings_under_their_key() -> None:
    model = {
        "ports": [{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}],
        "command": ["sh", "-c", "echo $$HOME"],
        "networks": {"default": None},
        "volume": {},
    }
    assert to_yaml(model) == (
        "ports:\n"
        "  - mode: ingress\n"
        "    target: 80\n"
        '    published: "8080"\n'
        "    protocol: tcp\n"
        "command:\n"
        "  - sh\n"
        "  - -c\n"
        "  - echo $$HOME\n"
        "networks:\n"
        "  default: null\n"
        "volume: {}\n"
    )


def test_json_escapes_html_characters_and_keeps_unicode_like_go() -> None:
    assert to_json({"image": "x<y>&z", "u": "héllo", "c": "a\x01b"}) == (
        '{\n  "image": "x\\u003cy\\u003e\\u0026z",\n  "u": "héllo",\n  "c": "a\\u0001b"\n}'
    )


def test_json_prints_whole_floats_without_a_fraction() -> None:
    assert to_json({"a": 1000.0, "b": 1.5, "c": 1e21}) == (
        '{\n  "a": 1000,\n  "b": 1.5,\n  "c": 1e+21\n}'
    )


def test_yaml_sorts_map_keys_in_yaml_v3_natural_order() -> None:
    environment = dict.fromkeys(
        sorted(["CS2_SERVERNAME", "CS2_SERVER_HIBERNATE", "A10", "A9", "GIT_X", "GITEA"]), "x"
    )
    shaped = yaml_shape({"services": {"s": {"environment": environment}}})
    assert list(shaped["services"]["s"]["environment"]) == [
        "A9", "A10", "CS2_SERVER_HIBERNATE", "CS2_SERVERNAME", "GIT_X", "GITEA",
    ]


def test_yaml_quotes_clock_times_and_marks_leading_blank_lines() -> None:
    assert to_yaml({"t": "12:00", "p": "\nline\n"}) == 't: "12:00"\np: |2\n\n  line\n'


def test_yaml_shape_orders_the_top_level_and_drops_what_compose_yaml_omits() -> None:
    model = {
        "name": "p",
        "networks": {"default": {"name": "p_default", "ipam": {}}},
        "services": {"s": {"command": None, "deploy": {"resources": {}, "placement": {}},
                           "entrypoint": None, "image": "x"}},
    }
    assert to_yaml(yaml_shape(model)) == (
        "name: p\n"
        "services:\n"
        "  s:\n"
        "    deploy: {}\n"
        "    image: x\n"
        "networks:\n"
        "  default:\n"
        "    name: p_default\n"
    )


def test_json_shows_extensions_only_at_the_top_level_and_no_models() -> None:
    from orchestrator.cli.render import json_shape

    model = {
        "models": {"m": {"model": "ai/x"}},
        "services": {"s": {"x-stack": {"rootfs": "/"}, "image": "x",
                           "develop": {"watch": [{"path": "/p", "x-initialSync": True}]}}},
        "x-top": {"x-inner": 1},
    }
    assert json_shape(model) == {
        "services": {"s": {"image": "x", "develop": {"watch": [{"path": "/p"}]}}},
        "x-top": {"x-inner": 1},
    }
