"""Compile a JSON schema document into a tree of `CompiledSchema` checks.

`SchemaCompiler` walks the schema once: it refuses keywords this validator
does not implement (so a schema change cannot be silently ignored), resolves
`$ref` pointers (a placeholder first, as refs may recurse), sends `oneOf`,
`anyOf` and `allOf` to the combinators, and reads a plain schema's keywords
into the checks of `schema_checks`. The checks of a mapping's properties are
compiled on first use, so a process pays only for the keys its files use.
Separate from the checks because it is the part that reads the schema
document; the checks only ever see values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .schema_checks import (
    Check,
    CompiledSchema,
    all_of,
    alternatives,
    array_check,
    enum_check,
    number_checks,
    string_check,
    typed_check,
)
from .schema_values import SchemaViolation, describe_types, json_type

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


class SchemaCompiler:
    """Compiles the schemas of one schema document; each `$ref` target is compiled once."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, CompiledSchema] = {}

    def ref(self, pointer: str) -> CompiledSchema:
        node = self.refs.get(pointer)
        if node is None:
            node = self.refs[pointer] = CompiledSchema()  # placeholder first: refs may recurse
            target: Any = self.root
            for part in pointer.lstrip("#/").split("/") if pointer != "#" else []:
                target = target[part.replace("~1", "/").replace("~0", "~")]
            compiled = self.compile(target)
            node.check, node.types, node.coerce = compiled.check, compiled.types, compiled.coerce
            node.describe = lambda: compiled.phrase
        return node

    def compile(self, schema: Any) -> CompiledSchema:
        if schema is True or schema == {}:
            return CompiledSchema()
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
                return alternatives(branches, exactly_one=combinator == "oneOf")
        if "allOf" in keywords:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return all_of([self.compile(rest)] + [self.compile(s) for s in keywords["allOf"]])
        return self.simple(schema)

    def simple(self, schema: dict[str, Any]) -> CompiledSchema:
        node = CompiledSchema()
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
            any_type.append(enum_check(enum))
        if node.types is not None and node.types & {"integer", "number"}:
            for number_check in number_checks(schema):
                any_type.append(number_check)
        text_check = string_check(schema)
        if text_check is not None and (node.types is None or "string" in node.types):
            by_type[str] = text_check
        items = None
        if node.types is None or "array" in node.types:
            items = self.compile(schema["items"]) if "items" in schema else None
            list_check = array_check(schema, items)
            if list_check is not None:
                by_type[list] = list_check
        if node.types is None or "object" in node.types:
            object_check = self.object_check(schema)
            if object_check is not None:
                by_type[dict] = object_check
        node.check = typed_check(node, any_type, by_type)
        node.describe = lambda: describe_types(node.types, enum, items)
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

        def reject(key: str) -> SchemaViolation:
            if properties or not pattern_texts:
                return SchemaViolation(f'unknown key "{key}"', unknown_key_of=known)
            if pattern_texts == [_NAME_PATTERN]:
                return SchemaViolation(f'invalid name "{key}"',
                                       hint="use only letters, digits, '.', '_' and '-'")
            return SchemaViolation(f'invalid key "{key}"',
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
                except SchemaViolation as error:
                    error.parts.append(key)
                    raise
            for key in required:
                if key not in value:
                    raise SchemaViolation(f'missing required key "{key}"')
            if len(value) < min_properties:
                raise SchemaViolation(f"must have at least {min_properties} keys")

        return check_object


def _pattern_matcher(text: str) -> Callable[[str], Any]:
    # `^x-` is on nearly every mapping: a plain prefix test is much cheaper than a regex.
    if text.startswith("^") and re.escape(text[1:]) == text[1:]:
        return lambda key, prefix=text[1:]: key.startswith(prefix)
    return re.compile(text).search
