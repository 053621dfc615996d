"""Stack file values as the schema validator sees them, and a failed check.

What JSON Schema type a Python value has, how compose casts a string to the
boolean or number its model wants, when two values are equal for `enum` and
`uniqueItems`, and how a value and an expected type are put in words. The
checks in `schema_checks` and the compiler in `schema_compiler` both use this
vocabulary, so it sits below them and imports neither when run.
`SchemaViolation` is what every check raises: it collects the key path as it
unwinds, and `schema.run_check` turns it into one StackError line.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schema_checks import CompiledSchema

# Go's strconv.Atoi / ParseFloat syntax (what compose uses to cast), decimal only.
_INT_TEXT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_TEXT = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
# The spellings compose accepts when it casts a string to a boolean (any case).
_BOOLEANS = {
    "true": True, "y": True, "yes": True, "on": True,
    "false": False, "n": False, "no": False, "off": False,
}

_TYPE_PHRASES = {
    "object": "a mapping", "array": "a list", "string": "a string", "null": "null",
    "boolean": "a boolean", "integer": "an integer", "number": "a number",
}
_PHRASE_ORDER = ["null", "boolean", "integer", "number", "string", "array", "object"]


class SchemaViolation(Exception):
    """A failed check, unwinding: each enclosing object or list adds its key to `parts`."""

    def __init__(self, message: str, *, hint: str | None = None,
                 unknown_key_of: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.parts: list[str | int] = []  # the key path, innermost first
        self.unknown_key_of = unknown_key_of  # known keys, to suggest one for a typo

    def specificity(self) -> int:
        # Like compose: the deepest error is the most telling; an unknown key
        # counts one deeper than a wrong value at the same place.
        return len(self.parts) + (1 if self.unknown_key_of is not None else 0)


def json_type(value: Any) -> str:
    """The JSON Schema type name of a plain Python value (integers before numbers)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "null": (type(None),),
    "boolean": (bool,), "integer": (int,), "number": (int, float),
}


@functools.cache
def python_types(types: frozenset[str]) -> frozenset[type]:
    """The Python types whose values have one of `types` (a float may still be an integer)."""
    return frozenset(t for name in types for t in _PY_TYPES[name])


def has_type(value: Any, types: frozenset[str]) -> bool:
    kind = json_type(value)
    return kind in types or (kind == "integer" and "number" in types)


def cast_text(text: str, types: frozenset[str]) -> Any:
    """`text` as the boolean/integer/number the schema wants, or None when it does not parse."""
    if "boolean" in types:
        flag = _BOOLEANS.get(text.lower())
        if flag is not None:
            return flag
    if ("integer" in types or "number" in types) and _INT_TEXT.match(text):
        return int(text)
    if "number" in types and _FLOAT_TEXT.match(text):
        return float(text)
    return None


def unique_key(value: Any) -> Any:
    """A hashable stand-in equal for JSON-equal values (1 == 1.0, but true != 1)."""
    if value is True or value is False:
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, list):
        return ("list", tuple(unique_key(v) for v in value))
    if isinstance(value, dict):
        return ("map", frozenset((k, unique_key(v)) for k, v in value.items()))
    return value


def join_phrases(phrases: list[str]) -> str:
    unique = list(dict.fromkeys(phrases))
    if len(unique) == 1:
        return unique[0]
    return ", ".join(unique[:-1]) + " or " + unique[-1]


def quote(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, default=str)


def type_error(expected: str, value: Any, types: frozenset[str] | None) -> SchemaViolation:
    if isinstance(value, str) and types and types & {"boolean", "integer", "number"}:
        shown = f'"{value}"' if len(value) <= 40 else f'"{value[:37]}..."'
    else:
        shown = _TYPE_PHRASES.get(json_type(value), json_type(value))
    hint = None
    if types and "boolean" in types and isinstance(value, str):
        hint = "use true or false"
    return SchemaViolation(f"must be {expected}, not {shown}", hint=hint)


def describe_types(types: frozenset[str] | None, enum: list[Any] | None,
                   items: CompiledSchema | None) -> str:
    if enum is not None:
        shown = [quote(v) for v in enum]
        return shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)
    if types is None:
        return "valid"
    phrases = []
    for kind in _PHRASE_ORDER:
        if kind in types:
            if kind == "array" and items is not None and items.types == frozenset({"string"}):
                phrases.append("a list of strings")
            else:
                phrases.append(_TYPE_PHRASES[kind])
    return join_phrases(phrases)
