"""The pieces a compiled schema is made of: one check per keyword, and combinators.

A `CompiledSchema` is one schema ready to run: its `check(value)` returns the
value (cast where compose casts) or raises `SchemaViolation`. The functions
here build those checks from keyword values already read out of the schema —
type with casting, `enum`/`const`, number bounds, string pattern and length,
list items and uniqueness, `oneOf`/`anyOf`, `allOf` — and never look at the
JSON schema document itself; walking that document, `$ref` and compiling
properties on first use are `schema_compiler`'s job. That split keeps the
fast paths (what runs for each value of a stack file) in one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .schema_values import (
    SchemaViolation,
    cast_text,
    describe_types,
    has_type,
    join_phrases,
    python_types,
    quote,
    type_error,
    unique_key,
)

Check = Callable[[Any], Any]


class CompiledSchema:
    """One compiled schema: `check(value)` returns the value (cast if needed) or raises."""

    __slots__ = ("check", "types", "coerce", "_phrase", "describe")

    def __init__(self) -> None:
        self.check: Check = accept
        self.types: frozenset[str] | None = None  # None: any type may be valid
        self.coerce = False
        self._phrase: str | None = None
        # Makes `phrase` on first use: a $ref's target may still be compiling when
        # this node is built, and most phrases are never needed.
        self.describe: Callable[[], str] = lambda: "valid"

    @property
    def phrase(self) -> str:
        """What a valid value is, in words: `a string or a list of strings`."""
        if self._phrase is None:
            self._phrase = self.describe()
        return self._phrase

    def admits(self, value: Any) -> bool:
        """Whether `value` has a type this schema could accept, without casting."""
        return self.types is None or has_type(value, self.types)

    def admits_cast(self, value: Any) -> bool:
        return (self.coerce and isinstance(value, str) and self.types is not None
                and cast_text(value, self.types) is not None)


def accept(value: Any) -> Any:
    return value


def typed_check(node: CompiledSchema, any_type: list[Check], by_type: dict[type, Check]) -> Check:
    """The check for one plain schema, specialised for speed on the common shapes."""
    types = node.types
    if types is None and not any_type and not by_type:
        return accept
    allowed = python_types(types) if types is not None else None
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


def _cast_or_fail(node: CompiledSchema, value: Any) -> Any:
    if node.admits_cast(value):
        return cast_text(value, node.types)  # type: ignore[arg-type]
    raise type_error(node.phrase, value, node.types)


def enum_check(enum: list[Any]) -> Check:
    allowed = {unique_key(v) for v in enum}
    expected = describe_types(None, enum, None)

    def check(value: Any) -> None:
        try:
            ok = unique_key(value) in allowed
        except TypeError:
            ok = False
        if not ok:
            raise SchemaViolation(f"must be {expected}, not {quote(value)}")

    return check


def number_checks(schema: dict[str, Any]) -> list[Check]:
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
                    raise SchemaViolation(f"must be {words} {bound}, not {value}")

            checks.append(check)
    return checks


def string_check(schema: dict[str, Any]) -> Check | None:
    text = schema.get("pattern")
    search = re.compile(text).search if text is not None else None
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if search is None and not low and high is None:
        return None

    def check(value: str) -> None:
        if search is not None and not search(value):
            raise SchemaViolation(f'"{value}" is not in the expected format (pattern {text})')
        if len(value) < low:
            raise SchemaViolation(f"must be at least {low} characters long")
        if high is not None and len(value) > high:
            raise SchemaViolation(f"must be at most {high} characters long")

    return check


def array_check(schema: dict[str, Any], items: CompiledSchema | None) -> Check | None:
    item_check = items.check if items is not None and items.check is not accept else None
    unique = schema.get("uniqueItems", False)
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    if item_check is None and not unique and not low and high is None:
        return None

    def check_array(value: list[Any]) -> None:
        if item_check is not None:
            for index, item in enumerate(value):
                try:
                    new = item_check(item)
                except SchemaViolation as error:
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
            raise SchemaViolation(f"must have at least {low} items")
        if high is not None and len(value) > high:
            raise SchemaViolation(f"must have at most {high} items")

    return check_array


def _check_unique(value: list[Any]) -> None:
    seen: set[Any] = set()
    for index, item in enumerate(value):
        key = unique_key(item)
        if key in seen:
            error = SchemaViolation(
                f"duplicate item {quote(item)}", hint="each item may appear only once"
            )
            error.parts.append(index)
            raise error
        seen.add(key)


def alternatives(branches: list[CompiledSchema], *, exactly_one: bool) -> CompiledSchema:
    """oneOf / anyOf. Only branches whose type fits are tried, so that the error
    reported is the one from the branch the user evidently meant."""
    node = CompiledSchema()
    all_types: set[str] = set()
    for branch in branches:
        if branch.types is None:
            break
        all_types |= branch.types
    else:
        node.types = frozenset(all_types)
    node.coerce = any(branch.coerce for branch in branches)
    node.describe = lambda: join_phrases([b.phrase for b in branches])

    # The branches that admit each Python type, worked out once (floats vary: 1.0 is an integer).
    by_kind: dict[type, list[CompiledSchema]] = {}
    for kind in (dict, list, str, type(None), bool, int):
        by_kind[kind] = [b for b in branches if b.types is None or kind in python_types(b.types)]

    def check(value: Any) -> Any:
        candidates = by_kind.get(type(value))
        if candidates is None:
            candidates = [b for b in branches if b.admits(value)]
        elif len(candidates) == 1:
            return candidates[0].check(value)
        if not candidates:
            candidates = [b for b in branches if b.admits_cast(value)]
        if not candidates:
            raise type_error(node.phrase, value, node.types)
        if len(candidates) == 1:
            return candidates[0].check(value)
        results, errors = [], []
        for branch in candidates:
            try:
                results.append(branch.check(value))
            except SchemaViolation as error:
                errors.append(error)
                continue
            if not exactly_one:
                return results[0]
        if len(results) == 1:
            return results[0]
        if results:
            raise SchemaViolation(f"is ambiguous: it matches more than one of {node.phrase}")
        raise max(errors, key=SchemaViolation.specificity)

    node.check = check
    return node


def all_of(parts: list[CompiledSchema]) -> CompiledSchema:
    node = CompiledSchema()
    node.types = parts[0].types
    node.coerce = parts[0].coerce
    node.describe = lambda: parts[0].phrase

    def check(value: Any) -> Any:
        for part in parts:
            value = part.check(value)
        return value

    node.check = check
    return node
