"""Read one YAML stack file into plain data, remembering where each key was.

PyYAML's C parser builds the node graph; we turn nodes into Python values
ourselves, because Docker Compose reads YAML the way Go's yaml.v3 does and
PyYAML's own constructor follows YAML 1.1: `yes`, `on` and `2001-12-14` stay
strings here, `0755` is octal and `1_000` is an int, as compose sees them.
Doing the conversion ourselves also gives every key a line and column, resolves
merge keys (`<<`), and keeps compose's `!reset` / `!override` tags in a side
table for the merge stage instead of baking them into the data.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import yaml

from .errors import Location, Path, SourceMap, StackError

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("int", "float", "bool", "null")}
# The tag our parser gives every scalar written without one: we resolve those
# ourselves, so PyYAML's (YAML 1.1, pure Python) resolver is never consulted.
_IMPLICIT = "?"


try:
    from yaml.cyaml import CParser as _BaseParser
except ImportError:  # pragma: no cover - libyaml is present on every supported install
    _BaseParser = yaml.SafeLoader  # type: ignore[misc,assignment]


class _Parser(_BaseParser):  # type: ignore[misc,valid-type]
    """libyaml's parser and composer, without PyYAML's implicit tag resolution."""

    def descend_resolver(self, parent: Any, index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            return _IMPLICIT
        return "tag:yaml.org,2002:seq" if kind is yaml.SequenceNode else "tag:yaml.org,2002:map"

COMPOSE_TAGS = {"!reset": "reset", "!override": "override"}

# A cap on how many nodes one file may expand to through aliases: a "billion
# laughs" file must end in an error, not in an exhausted machine.
MAX_NODES = 250_000
# Real stack files nest a dozen levels; a cap keeps every later stage's
# recursion far from Python's limit.
MAX_DEPTH = 100

_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {
    ".inf": math.inf, ".Inf": math.inf, ".INF": math.inf,
    "+.inf": math.inf, "+.Inf": math.inf, "+.INF": math.inf,
    "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
    ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
}
_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_GO_INT = re.compile(
    r"^[-+]?(0[xX](_?[0-9a-fA-F])+|0[oO](_?[0-7])+|0[bB](_?[01])+|0(_?[0-7])*|[1-9](_?[0-9])*)$"
)


class Document(NamedTuple):
    """One stack file as data, with where each key path was written."""

    filename: str
    data: Any
    source: SourceMap
    tags: dict[Path, str]  # key path -> "reset" | "override"


def resolve_plain(text: str) -> Any:
    """The value of an unquoted scalar, following yaml.v3's resolution rules."""
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    first = text[0]
    if first.isdigit() or first in "+-.":
        if _GO_INT.match(text):
            return _parse_go_int(text)
        if _FLOAT.match(text):
            return float(text)
        special = _SPECIAL_FLOATS.get(text)
        if special is not None:
            return special
    return text


def _parse_go_int(text: str) -> int:
    sign = -1 if text[0] == "-" else 1
    digits = text.lstrip("+-").replace("_", "")
    prefix = digits[:2].lower()
    if prefix == "0x":
        return sign * int(digits[2:], 16)
    if prefix == "0o":
        return sign * int(digits[2:], 8)
    if prefix == "0b":
        return sign * int(digits[2:], 2)
    if len(digits) > 1 and digits[0] == "0":
        return sign * int(digits[1:], 8)
    return sign * int(digits)


def go_string(value: Any) -> str:
    """A scalar as Go's fmt.Sprint would print it (how compose stringifies values)."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def go_float(value: float) -> str:
    """Go's %v for a float64: shortest repr, exponent form outside [1e-4, 1e21)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        return f"{mantissa}e{sign}{exponent.lstrip('+-').zfill(2)}"
    return text


def parse_yaml(text: str, filename: str) -> Document:
    """Parse `text` (the contents of `filename`) into a Document.

    Raises StackError for malformed YAML, duplicate keys, non-mapping
    documents, recursive aliases and alias bombs.
    """
    try:
        root = yaml.compose(text, Loader=_Parser)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where: Location | str = filename
        if mark is not None:
            where = Location(filename, mark.line + 1, mark.column + 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise StackError(f"invalid YAML: {problem}", location=where) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise StackError(
            f"invalid YAML: character {_char(exc.character)!r} is not allowed in a YAML file",
            location=Location(filename, line, col),
        ) from None
    except yaml.YAMLError as exc:
        raise StackError(f"invalid YAML: {exc}", location=filename) from None
    except (ValueError, UnicodeError) as exc:
        raise StackError(f"invalid YAML: {exc}", location=filename) from None
    except RecursionError:
        raise StackError("invalid YAML: values are nested too deeply", location=filename) from None
    reader = _NodeReader(filename)
    if root is None:
        return Document(filename, {}, reader.source, reader.tags)
    try:
        data = reader.read(root, ())
    except RecursionError:
        raise StackError("values are nested too deeply", location=filename) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise StackError(
            "the top level of a stack file must be a mapping (services:, networks:, ...)",
            location=_location(filename, root),
        )
    return Document(filename, data, reader.source, reader.tags)


def _char(character: str | int) -> str:
    return chr(character) if isinstance(character, int) else character


def _location(filename: str, node: yaml.Node) -> Location:
    return Location(filename, node.start_mark.line + 1, node.start_mark.column + 1)


class _NodeReader:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.source = SourceMap(filename)
        self.tags: dict[Path, str] = {}
        self.nodes_read = 0
        self.active: set[int] = set()

    def read(self, node: yaml.Node, path: Path) -> Any:
        self.nodes_read += 1
        if self.nodes_read > MAX_NODES:
            raise StackError(
                f"the file expands to more than {MAX_NODES} values through aliases",
                location=_location(self.filename, node),
            )
        if len(path) > MAX_DEPTH:
            raise StackError(f"values are nested more than {MAX_DEPTH} levels deep",
                             location=_location(self.filename, node))
        tag = node.tag
        if tag in COMPOSE_TAGS:
            self.tags[path] = COMPOSE_TAGS[tag]
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, tag)
        key = id(node)
        if key in self.active:
            raise StackError("an alias refers to a value that contains it",
                             location=_location(self.filename, node))
        self.active.add(key)
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.source.add((*path, index), _location(self.filename, item))
                    items.append(self.read(item, (*path, index)))
                return items
            return self._mapping(node, path)
        finally:
            self.active.discard(key)

    def _scalar(self, node: yaml.ScalarNode, tag: str) -> Any:
        if tag == _IMPLICIT or tag in COMPOSE_TAGS:
            return node.value if node.style else resolve_plain(node.value)
        if tag in _SCALAR_TAGS:
            return resolve_plain(node.value)
        return node.value  # !!str, or a tag we do not know: the text as written

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        explicit: dict[str, yaml.Node] = {}
        merged: list[tuple[str, Any, Path]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or (
                key_node.tag == _IMPLICIT and not key_node.style and key_node.value == "<<"
            ):
                merged.extend(self._merge_sources(value_node, path))
                continue
            key = self._key(key_node)
            if key in explicit:
                first = explicit[key].start_mark.line + 1
                raise StackError(
                    f"key {key!r} is already defined at line {first}",
                    location=_location(self.filename, key_node),
                    path=path,
                )
            explicit[key] = key_node
            self.source.add((*path, key), _location(self.filename, key_node))
            result[key] = self.read(value_node, (*path, key))
        for key, value, origin in merged:
            if key not in result:
                result[key] = value
                self.source.update(self.source.rebase(origin, (*path, key)))
        return result

    def _merge_sources(self, node: yaml.Node, path: Path) -> list[tuple[str, Any, Path]]:
        """Entries a merge key brings in; earlier sources win over later ones."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        entries: list[tuple[str, Any, Path]] = []
        seen: set[str] = set()
        for index, source in enumerate(sources):
            if not isinstance(source, yaml.MappingNode):
                raise StackError(
                    "a merge key (<<) takes a mapping or a list of mappings",
                    location=_location(self.filename, source),
                    path=path,
                )
            origin = (*path, f"<<{index}")
            value = self.read(source, origin)
            for key, item in value.items():
                if key not in seen:
                    seen.add(key)
                    entries.append((key, item, (*origin, key)))
        return entries

    def _key(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise StackError("a mapping key must be a plain value, not a list or mapping",
                             location=_location(self.filename, node))
        value = self._scalar(node, node.tag)
        return go_string(value) if not isinstance(value, str) else value
