"""Print a model the way `docker compose config` does, so outputs can be diffed.

JSON follows Go's encoding/json (two-space indent, `<>&` escaped, floats
without a trailing `.0`); YAML follows Go's yaml.v3 encoder (block style,
sequences indented under their key, strings quoted only when they would
otherwise read back as something else).
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from orchestrator.spec.yamlfile import go_float, resolve_plain


def escape_dollars(value: Any) -> Any:
    """Every `$` in keys and strings doubled, as compose writes an interpolated model."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {escape_dollars(k): escape_dollars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape_dollars(v) for v in value]
    return value


def to_json(data: Any) -> str:
    text = json.dumps(_go_numbers(data), indent=2, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _go_numbers(value: Any) -> Any:
    """Whole floats as ints: Go prints 1000.0 as 1000 (below 1e21, where it turns to 1e+21)."""
    if isinstance(value, dict):
        return {k: _go_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def json_shape(model: dict[str, Any]) -> dict[str, Any]:
    """The model as compose's JSON shows it: no `models`, and extension
    fields (`x-*`) only at the top level."""
    return {
        key: value if key.startswith("x-") else _without_extensions(value)
        for key, value in model.items()
        if key != "models"
    }


def _without_extensions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_extensions(v) for k, v in value.items()
                if not (isinstance(k, str) and k.startswith("x-"))}
    if isinstance(value, list):
        return [_without_extensions(item) for item in value]
    return value


_YAML_TOP_LEVEL = ("name", "services", "networks", "volumes", "secrets", "configs", "models")


def yaml_shape(model: dict[str, Any]) -> dict[str, Any]:
    """The model as compose's YAML shows it, which differs from its JSON.

    Top-level keys come in the specification's order rather than sorted, and
    the YAML leaves out what its JSON spells as null or empty: `command`,
    `entrypoint`, a network's `ipam`.
    """
    shaped = {key: model[key] for key in _YAML_TOP_LEVEL if key in model}
    shaped.update((key, value) for key, value in model.items() if key not in shaped)
    services = shaped.get("services")
    if isinstance(services, dict):
        shaped["services"] = {
            name: {
                key: value
                for key, value in service.items()
                if not (key in ("command", "entrypoint") and value is None)
            }
            if isinstance(service, dict) else service
            for name, service in services.items()
        }
    services = shaped.get("services")
    for service in services.values() if isinstance(services, dict) else ():
        deploy = service.get("deploy") if isinstance(service, dict) else None
        if isinstance(deploy, dict):
            service["deploy"] = {key: value for key, value in deploy.items()
                                 if not (key in ("resources", "placement") and value == {})}
        develop = service.get("develop") if isinstance(service, dict) else None
        if isinstance(develop, dict) and isinstance(develop.get("watch"), list):
            service["develop"] = {**develop, "watch": [
                {key: value for key, value in rule.items()
                 if not (key == "exec" and value == {"command": None})}
                if isinstance(rule, dict) else rule
                for rule in develop["watch"]
            ]}
    networks = shaped.get("networks")
    if isinstance(networks, dict):
        shaped["networks"] = {
            name: {key: value for key, value in network.items()
                   if not (key == "ipam" and value == {})}
            if isinstance(network, dict) else network
            for name, network in networks.items()
        }
    return _natural_maps(shaped)


def _natural_maps(value: Any) -> Any:
    """Maps (the dicts whose keys are sorted) re-sorted in yaml.v3's natural order."""
    if isinstance(value, list):
        return [_natural_maps(item) for item in value]
    if not isinstance(value, dict):
        return value
    keys = list(value)
    if len(keys) > 1 and all(isinstance(k, str) for k in keys) and keys == sorted(keys):
        keys.sort(key=functools.cmp_to_key(_natural_compare))
    return {key: _natural_maps(value[key]) for key in keys}


def _natural_compare(a: str, b: str) -> int:
    """yaml.v3's key order: letters by code point, other characters before letters,
    and runs of digits by their numeric value."""
    digits = False
    for i in range(min(len(a), len(b))):
        x, y = a[i], b[i]
        if x == y:
            digits = x.isdigit()
            continue
        x_letter, y_letter = x.isalpha(), y.isalpha()
        if x_letter and y_letter:
            return -1 if x < y else 1
        if x_letter or y_letter:
            if digits:
                return -1 if x_letter else 1
            return -1 if y_letter else 1
        x_end, y_end = i, i
        while x_end < len(a) and a[x_end].isdigit():
            x_end += 1
        while y_end < len(b) and b[y_end].isdigit():
            y_end += 1
        x_number = int(a[i:x_end]) if x_end > i else 0
        y_number = int(b[i:y_end]) if y_end > i else 0
        if x_number != y_number:
            return -1 if x_number < y_number else 1
        if x_end != y_end:
            return -1 if x_end < y_end else 1
        return -1 if x < y else 1
    return (len(a) > len(b)) - (len(a) < len(b))


def to_yaml(data: Any) -> str:
    lines: list[str] = []
    _emit(data, 0, lines)
    return "\n".join(lines) + "\n"


def _emit(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{yaml_scalar(str(key))}:"
            _emit_child(head, item, indent, lines)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                first = True
                for key, sub in item.items():
                    prefix = f"{pad}- " if first else f"{pad}  "
                    first = False
                    _emit_child(f"{prefix}{yaml_scalar(str(key))}:", sub, indent + 2, lines)
            else:
                _emit_child(f"{pad}-", item, indent, lines, in_list=True)
    else:
        lines.append(pad + yaml_scalar(value))


def _emit_child(head: str, item: Any, indent: int, lines: list[str], in_list: bool = False) -> None:
    if isinstance(item, dict) and item:
        lines.append(head)
        _emit(item, indent + 2 if not in_list else indent + 2, lines)
    elif isinstance(item, list) and item:
        lines.append(head)
        _emit(item, indent + 2, lines)
    elif isinstance(item, str) and "\n" in item and _literal_ok(item):
        chomp = "-" if not item.endswith("\n") else ("+" if item.endswith("\n\n") else "")
        # Leading blanks would be read as indentation: say the indentation then.
        indent_hint = "2" if item[0] in " \n" else ""
        lines.append(f"{head} |{indent_hint}{chomp}")
        body = item[:-1] if item.endswith("\n") and chomp == "" else item
        if chomp == "+":
            body = item[:-1]
        for line in body.split("\n"):
            lines.append(" " * (indent + 2) + line if line else "")
    else:
        lines.append(f"{head} {yaml_scalar(item)}")


_OLD_BOOLS = {
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
    "on", "On", "ON", "off", "Off", "OFF",
}
_TIMESTAMP = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([Tt ].*)?$")
# YAML 1.1 read `12:00` as a base-60 number; yaml.v3 quotes such strings.
_BASE60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`")
_FLOW = set(",?[]{}")


def yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _yaml_string(str(value))


def _yaml_string(text: str) -> str:
    if (
        text == ""
        or text in _OLD_BOOLS
        or not isinstance(resolve_plain(text), str)
        or _TIMESTAMP.match(text)
        or _BASE60.match(text)
    ):
        return _double_quoted(text)
    if _NOT_PRINTABLE.search(text):
        return _double_quoted(text)
    if _plain_ok(text):
        return text
    if "\n" not in text:
        return "'" + text.replace("'", "''") + "'"
    return _double_quoted(text)


# Characters YAML allows unescaped: line feed, printable ASCII, NEL, and the
# printable Unicode ranges (the byte-order mark excluded).
_NOT_PRINTABLE = re.compile(
    "[^\n\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)


def _printable(char: str) -> bool:
    return _NOT_PRINTABLE.match(char) is None


def _plain_ok(text: str) -> bool:
    if text[0] in " \t" or text[-1] in " \t" or "\n" in text:
        return False
    if text.startswith(("---", "...")):
        return False
    first = text[0]
    if first in _INDICATORS and not (
        first in "-?:" and len(text) > 1 and text[1] not in " \t"
    ):
        return False
    return not (": " in text or " #" in text or text.endswith(":"))


def _literal_ok(text: str) -> bool:
    if _NOT_PRINTABLE.search(text):
        return False
    return not any(line != line.rstrip(" \t") and line.strip() for line in text.split("\n"))


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"}


def _double_quoted(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif not _printable(char):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
