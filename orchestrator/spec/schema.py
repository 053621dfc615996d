"""Check a stack file against schemas/stack.schema.json, fast.

The `jsonschema` package is the reference (the tests compare against it), but
importing it alone costs more than our whole `stack config` budget, so this
package interprets the small part of JSON Schema our schema uses. The schema is
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

This module is the validator's face: the stack schema, compiled once, and
turning a failed check into one located StackError. The rest is in
`schema_compiler` (schema document to checks), `schema_checks` (the check of
each keyword) and `schema_values` (value types, casts, wording of failures).
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import SourceMap, StackError
from .schema_checks import Check, CompiledSchema
from .schema_compiler import SchemaCompiler
from .schema_values import SchemaViolation, json_type

SCHEMA_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas", "stack.schema.json"
)

_root: CompiledSchema | None = None


def compile_schema(schema: dict[str, Any]) -> Check:
    """A check function for `schema` (the subset of JSON Schema described above).

    The function returns the value with strings cast where the schema wants a
    boolean or a number, and raises `SchemaViolation` otherwise; `validate_schema`
    turns that into a StackError.
    """
    return SchemaCompiler(schema).compile(schema).check


def _stack_check() -> Check:
    global _root
    if _root is None:
        with open(SCHEMA_PATH, encoding="utf-8") as schema_file:
            schema = json.load(schema_file)
        compiler = SchemaCompiler(schema)
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
    except SchemaViolation as error:
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
