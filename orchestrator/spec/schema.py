"""Check a stack file against schemas/stack.schema.json, fast.

The `jsonschema` package is the reference (the tests compare against it), but
importing it alone costs more than our whole `stack config` budget, so this
module interprets the small part of JSON Schema our schema uses. The schema is
compiled once per process into a tree of closures: validating a 50-service
file then costs a couple of milliseconds, with no dict lookups of keywords.

Compose casts a string to a boolean or a number where its model wants one (an
interpolated `${REPLICAS}` is always a string). We do the same while checking:
where the schema wants a boolean, integer or number, does not allow a string,
and the string parses as the wanted type, the cast value replaces the string
in the data. `"x-coerce": false` in the schema marks the few keys where
compose refuses strings.

Errors carry the key path (`services.web.ports[0]`) and a plain-words reason;
for an unknown key, the closest known key as a hint.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from typing import Any

from .errors import SourceMap, StackError

SCHEMA_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas", "stack.schema.json"
)

# Go's strconv.Atoi / ParseFloat syntax (what compose uses to cast), decimal only.
_INT_TEXT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_TEXT = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
# The spellings compose accepts when it casts a string to a boolean (any case).
_BOOLEANS = {
    "true": True, "y": True, "yes": True, "on": True,
    "false": False, "n": False, "no": False, "off": False,
}
_NAME_PATTERN = "^[a-zA-Z0-9._-]+$"

_ANNOTATIONS = {
    "$schema", "$id", "$comment", "$defs", "title", "description", "default",
    "deprecated", "examples", "x-coerce",
}
_SUPPORTED = _ANNOTATIONS | {
    "$ref", "type", "enum", "const", "oneOf", "anyOf", "allOf", "properties",
    "patternProperties", "additionalProperties", "required", "items", "minItems",
    "maxItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "pattern", "minProperties",
}

_TYPE_PHRASES = {
    "object": "a mapping", "array": "a list", "string": "a string", "null": "null",
    "boolean": "a boolean", "integer": "an integer", "number": "a number",
}
_PHRASE_ORDER = ["null", "boolean", "integer", "number", "string", "array", "object"]


class _Invalid(Exception):
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


Check = Callable[[Any], Any]


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
def _python_types(types: frozenset[str]) -> frozenset[type]:
    """The Python types whose values have one of `types` (a float may still be an integer)."""
    return frozenset(t for name in types for t in _PY_TYPES[name])


def _has_type(value: Any, types: frozenset[str]) -> bool:
    kind = json_type(value)
    return kind in types or (kind == "integer" and "number" in types)


def _cast(text: str, types: frozenset[str]) -> Any:
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


def _join_phrases(phrases: list[str]) -> str:
    unique = list(dict.fromkeys(phrases))
    if len(unique) == 1:
        return unique[0]
    return ", ".join(unique[:-1]) + " or " + unique[-1]


def _quote(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, default=str)


def _unique_key(value: Any) -> Any:
    """A hashable stand-in equal for JSON-equal values (1 == 1.0, but true != 1)."""
    if value is True or value is False:
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, list):
        return ("list", tuple(_unique_key(v) for v in value))
    if isinstance(value, dict):
        return ("map", frozenset((k, _unique_key(v)) for k, v in value.items()))
    return value


class _Node:
    """One compiled schema: `check(value)` returns the value (cast if needed) or raises."""

    __slots__ = ("check", "types", "coerce", "_phrase", "_describe")

    def __init__(self) -> None:
        self.check: Check = _accept
        self.types: frozenset[str] | None = None  # None: any type may be valid
        self.coerce = False
        self._phrase: str | None = None
        self._describe: Callable[[], str] = lambda: "valid"

    @property
    def phrase(self) -> str:
        """What a valid value is, in words: `a string or a list of strings`."""
        if self._phrase is None:
            self._phrase = self._describe()
        return self._phrase

    def admits(self, value: Any) -> bool:
        """Whether `value` has a type this schema could accept, without casting."""
        return self.types is None or _has_type(value, self.types)

    def admits_cast(self, value: Any) -> bool:
        return (self.coerce and isinstance(value, str) and self.types is not None
                and _cast(value, self.types) is not None)


def _accept(value: Any) -> Any:
    return value


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, _Node] = {}

    def ref(self, pointer: str) -> _Node:
        node = self.refs.get(pointer)
        if node is None:
            node = self.refs[pointer] = _Node()  # placeholder first: refs may recurse
            target: Any = self.root
            for part in pointer.lstrip("#/").split("/") if pointer != "#" else []:
                target = target[part.replace("~1", "/").replace("~0", "~")]
            compiled = self.compile(target)
            node.check, node.types, node.coerce = compiled.check, compiled.types, compiled.coerce
            node._describe = lambda: compiled.phrase
        return node

    def compile(self, schema: Any) -> _Node:
        if schema is True or schema == {}:
            return _Node()
        if not isinstance(schema, dict):
            raise ValueError(f"unsupported schema: {schema!r}")
        unknown = set(schema) - _SUPPORTED
        if unknown:
            raise ValueError(f"schema keywords not supported by this validator: {sorted(unknown)}")
        keywords = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
        if "$ref" in keywords:
            if len(keywords) > 1:
                raise ValueError("$ref next to other keywords is not supported")
            return self.ref(keywords["$ref"])
        for combinator in ("oneOf", "anyOf"):
            if combinator in keywords:
                if len(keywords) > 1:
                    raise ValueError(f"{combinator} next to other keywords is not supported")
                branches = [self.compile(branch) for branch in keywords[combinator]]
                return _alternatives(branches, exactly_one=combinator == "oneOf")
        if "allOf" in keywords:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return _all_of([self.compile(rest)] + [self.compile(s) for s in keywords["allOf"]])
        return self.simple(schema)

    def simple(self, schema: dict[str, Any]) -> _Node:
        node = _Node()
        types = schema.get("type")
        if isinstance(types, str):
            types = [types]
        enum = schema.get("enum")
        if "const" in schema:
            enum = [schema["const"]]
        if types is None and enum is not None:
            types = sorted({json_type(v) for v in enum})
        node.types = frozenset(types) if types is not None else None
        node.coerce = (
            schema.get("x-coerce", True)
            and node.types is not None
            and "string" not in node.types
            and bool(node.types & {"boolean", "integer", "number"})
        )
        any_type: list[Check] = []  # checks that apply whatever the type
        by_type: dict[type, Check] = {}
        if enum is not None:
            any_type.append(_enum_check(enum))
        if node.types is not None and node.types & {"integer", "number"}:
            for number_check in _number_checks(schema):
                any_type.append(number_check)
        string_check = _string_check(schema)
        if string_check is not None and (node.types is None or "string" in node.types):
            by_type[str] = string_check
        items = None
        if node.types is None or "array" in node.types:
            items = self.compile(schema["items"]) if "items" in schema else None
            array_check = _array_check(schema, items)
            if array_check is not None:
                by_type[list] = array_check
        if node.types is None or "object" in node.types:
            object_check = self.object_check(schema)
            if object_check is not None:
                by_type[dict] = object_check
        node.check = _typed_check(node, any_type, by_type)
        node._describe = lambda: _describe_types(node.types, enum, items)
        return node

    def lazy(self, schema: Any, table: dict[str, Check] | None = None, key: str = "") -> Check:
        """A check that compiles `schema` on its first use (then takes its place in `table`)."""
        compiled: list[Check] = []

        def check(value: Any) -> Any:
            if not compiled:
                compiled.append(self.compile(schema).check)
                if table is not None:
                    table[key] = compiled[0]
            return compiled[0](value)

        return check

    def object_check(self, schema: dict[str, Any]) -> Check | None:
        if not {"properties", "patternProperties", "additionalProperties", "required",
                "minProperties"} & set(schema):
            return None
        # A service has some eighty keys and a file uses a few: each key's
        # schema is compiled the first time a document uses it.
        properties: dict[str, Check] = {}
        for key, sub in schema.get("properties", {}).items():
            properties[key] = self.lazy(sub, properties, key)
        patterns: list[tuple[Callable[[str], Any], Check | None]] = []
        pattern_texts = list(schema.get("patternProperties", {}))
        for text, sub in schema.get("patternProperties", {}).items():
            matcher = _pattern_matcher(text)
            patterns.append((matcher, None if sub in (True, {}) else self.lazy(sub)))
        additional = schema.get("additionalProperties", True)
        extra: Check | None = None
        if additional is not True and additional is not False:
            extra = self.lazy(additional)
        # Which patterns also apply to each named property, worked out on first use.
        property_patterns: dict[str, list[Check]] = {}
        required = list(schema.get("required", ()))
        min_properties = schema.get("minProperties", 0)
        known = sorted(properties)

        def reject(key: str) -> _Invalid:
            if properties or not pattern_texts:
                return _Invalid(f'unknown key "{key}"', unknown_key_of=known)
            if pattern_texts == [_NAME_PATTERN]:
                return _Invalid(f'invalid name "{key}"',
                                hint="use only letters, digits, '.', '_' and '-'")
            return _Invalid(f'invalid key "{key}"',
                            hint="keys must match " + " or ".join(pattern_texts))

        def check_object(value: dict[str, Any]) -> None:
            for key, item in value.items():
                try:
                    sub = properties.get(key)
                    if sub is not None:
                        new = sub(item)
                        if new is not item:
                            value[key] = item = new
                        also = property_patterns.get(key)
                        if also is None:
                            also = property_patterns[key] = [
                                check for matches, check in patterns
                                if check is not None and matches(key)
                            ]
                        for pattern_check in also:
                            new = pattern_check(item)
                            if new is not item:
                                value[key] = item = new
                        continue
                    matched = False
                    for matches, pattern_check in patterns:
                        if matches(key):
                            matched = True
                            if pattern_check is not None:
                                new = pattern_check(item)
                                if new is not item:
                                    value[key] = item = new
                    if not matched:
                        if additional is False:
                            raise reject(key)
                        if extra is not None:
                            new = extra(item)
                            if new is not item:
                                value[key] = new
                except _Invalid as error:
                    error.parts.append(key)
                    raise
            for key in required:
                if key not in value:
                    raise _Invalid(f'missing required key "{key}"')
            if len(value) < min_properties:
                raise _Invalid(f"must have at least {min_properties} keys")

        return check_object


def _pattern_matcher(text: str) -> Callable[[str], Any]:
    # `^x-` is on nearly every mapping: a plain prefix test is much cheaper than a regex.
    if text.startswith("^") and re.escape(text[1:]) == text[1:]:
        return lambda key, prefix=text[1:]: key.startswith(prefix)
    return re.compile(text).search


def _typed_check(node: _Node, any_type: list[Check], by_type: dict[type, Check]) -> Check:
    """The check for one plain schema, specialised for speed on the common shapes."""
    types = node.types
    if types is None and not any_type and not by_type:
        return _accept
    allowed = _python_types(types) if types is not None else None
    integral_floats = types is not None and "integer" in types and "number" not in types

    def fits(value: Any) -> bool:
        kind = type(value)
        if allowed is None or kind in allowed:
            return True
        return integral_floats and kind is float and value.is_integer()

    if not any_type and len(by_type) <= 1:
        only_kind, only_check = next(iter(by_type.items()), (None, None))

        def check_one(value: Any) -> Any:
            kind = type(value)
            if allowed is not None and kind not in allowed and not fits(value):
                value = _cast_or_fail(node, value)
            elif kind is only_kind:
                only_check(value)  # type: ignore[misc]
            return value

        return check_one

    def check(value: Any) -> Any:
        if not fits(value):
            value = _cast_or_fail(node, value)
        for keyword_check in any_type:
            keyword_check(value)
        kind_check = by_type.get(type(value))
        if kind_check is not None:
            kind_check(value)
        return value

    return check


def _cast_or_fail(node: _Node, value: Any) -> Any:
    if node.admits_cast(value):
        return _cast(value, node.types)  # type: ignore[arg-type]
    raise _type_error(node.phrase, value, node.types)


def _type_error(expected: str, value: Any, types: frozenset[str] | None) -> _Invalid:
    if isinstance(value, str) and types and types & {"boolean", "integer", "number"}:
        shown = f'"{value}"' if len(value) <= 40 else f'"{value[:37]}..."'
    else:
        shown = _TYPE_PHRASES.get(json_type(value), json_type(value))
    hint = None
    if types and "boolean" in types and isinstance(value, str):
        hint = "use true or false"
    return _Invalid(f"must be {expected}, not {shown}", hint=hint)


def _describe_types(types: frozenset[str] | None, enum: list[Any] | None,
                    items: _Node | None) -> str:
    if enum is not None:
        shown = [_quote(v) for v in enum]
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
    return _join_phrases(phrases)


def _enum_check(enum: list[Any]) -> Check:
    allowed = {_unique_key(v) for v in enum}
    expected = _describe_types(None, enum, None)

    def check(value: Any) -> None:
        try:
            ok = _unique_key(value) in allowed
        except TypeError:
            ok = False
        if not ok:
            raise _Invalid(f"must be {expected}, not {_quote(value)}")

    return check


def _number_checks(schema: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    bounds = [
        ("minimum", lambda v, b: v >= b, "at least"),
        ("maximum", lambda v, b: v <= b, "at most"),
        ("exclusiveMinimum", lambda v, b: v > b, "greater than"),
        ("exclusiveMaximum", lambda v, b: v < b, "less than"),
    ]
    for keyword, holds, words in bounds:
        if keyword in schema:
            bound = schema[keyword]

            def check(value: Any, bound: Any = bound, holds: Any = holds,
                      words: str = words) -> None:
                if type(value) in (int, float) and not holds(value, bound):
                    raise _Invalid(f"must be {words} {bound}, not {value}")

            checks.append(check)
    return checks


def _string_check(schema: dict[str, Any]) -> Check | None:
    text = schema.get("pattern")
    search = re.compile(text).search if text is not None else None
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if search is None and not low and high is None:
        return None

    def check(value: str) -> None:
        if search is not None and not search(value):
            raise _Invalid(f'"{value}" is not in the expected format (pattern {text})')
        if len(value) < low:
            raise _Invalid(f"must be at least {low} characters long")
        if high is not None and len(value) > high:
            raise _Invalid(f"must be at most {high} characters long")

    return check


def _array_check(schema: dict[str, Any], items: _Node | None) -> Check | None:
    item_check = items.check if items is not None and items.check is not _accept else None
    unique = schema.get("uniqueItems", False)
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    if item_check is None and not unique and not low and high is None:
        return None

    def check_array(value: list[Any]) -> None:
        if item_check is not None:
            for index, item in enumerate(value):
                try:
                    new = item_check(item)
                except _Invalid as error:
                    error.parts.append(index)
                    raise
                if new is not item:
                    value[index] = new
        # Distinct strings, the common case, is decided without building keys.
        if unique and len(value) > 1 and not (
            all(type(item) is str for item in value) and len(set(value)) == len(value)
        ):
            _check_unique(value)
        if len(value) < low:
            raise _Invalid(f"must have at least {low} items")
        if high is not None and len(value) > high:
            raise _Invalid(f"must have at most {high} items")

    return check_array


def _check_unique(value: list[Any]) -> None:
    seen: set[Any] = set()
    for index, item in enumerate(value):
        key = _unique_key(item)
        if key in seen:
            error = _Invalid(
                f"duplicate item {_quote(item)}", hint="each item may appear only once"
            )
            error.parts.append(index)
            raise error
        seen.add(key)


def _alternatives(branches: list[_Node], *, exactly_one: bool) -> _Node:
    """oneOf / anyOf. Only branches whose type fits are tried, so that the error
    reported is the one from the branch the user evidently meant."""
    node = _Node()
    all_types: set[str] = set()
    for branch in branches:
        if branch.types is None:
            break
        all_types |= branch.types
    else:
        node.types = frozenset(all_types)
    node.coerce = any(branch.coerce for branch in branches)
    node._describe = lambda: _join_phrases([b.phrase for b in branches])

    # The branches that admit each Python type, worked out once (floats vary: 1.0 is an integer).
    by_kind: dict[type, list[_Node]] = {}
    for kind in (dict, list, str, type(None), bool, int):
        by_kind[kind] = [b for b in branches if b.types is None or kind in _python_types(b.types)]

    def check(value: Any) -> Any:
        candidates = by_kind.get(type(value))
        if candidates is None:
            candidates = [b for b in branches if b.admits(value)]
        elif len(candidates) == 1:
            return candidates[0].check(value)
        if not candidates:
            candidates = [b for b in branches if b.admits_cast(value)]
        if not candidates:
            raise _type_error(node.phrase, value, node.types)
        if len(candidates) == 1:
            return candidates[0].check(value)
        results, errors = [], []
        for branch in candidates:
            try:
                results.append(branch.check(value))
            except _Invalid as error:
                errors.append(error)
                continue
            if not exactly_one:
                return results[0]
        if len(results) == 1:
            return results[0]
        if results:
            raise _Invalid(f"is ambiguous: it matches more than one of {node.phrase}")
        raise max(errors, key=_Invalid.specificity)

    node.check = check
    return node


def _all_of(parts: list[_Node]) -> _Node:
    node = _Node()
    node.types = parts[0].types
    node.coerce = parts[0].coerce
    node._describe = lambda: parts[0].phrase

    def check(value: Any) -> Any:
        for part in parts:
            value = part.check(value)
        return value

    node.check = check
    return node


_root: _Node | None = None


def compile_schema(schema: dict[str, Any]) -> Check:
    """A check function for `schema` (the subset of JSON Schema described above).

    The function returns the value with strings cast where the schema wants a
    boolean or a number, and raises `_Invalid` otherwise; `validate_schema`
    turns that into a StackError.
    """
    return _Compiler(schema).compile(schema).check


def _stack_check() -> Check:
    global _root
    if _root is None:
        with open(SCHEMA_PATH, encoding="utf-8") as schema_file:
            schema = json.load(schema_file)
        compiler = _Compiler(schema)
        _root = compiler.compile(schema)
    return _root.check


def validate_schema(data: dict[str, Any], source: SourceMap) -> dict[str, Any]:
    """Check one stack file's data; return it with interpolated strings cast.

    The data is changed in place where a string is cast. Raises StackError,
    located through `source`, for the first problem found.
    """
    return run_check(_stack_check(), data, source)


def run_check(check: Check, data: Any, source: SourceMap) -> Any:
    """Apply a compiled check, turning a failure into a located StackError."""
    try:
        return check(data)
    except _Invalid as error:
        path = tuple(reversed(error.parts))
        hint = error.hint
        if error.unknown_key_of is not None and path:
            hint = _suggest(str(path[-1]), error.unknown_key_of) or hint
        raise source.error(path, error.message, hint) from None


def _suggest(key: str, known: list[str]) -> str | None:
    import difflib  # only when reporting: it is slow to import

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else None


__all__ = ["SCHEMA_PATH", "StackError", "compile_schema", "json_type", "run_check",
           "validate_schema"]
