"""Substitute `$VAR` / `${VAR...}` in a stack file, the way Docker Compose does.

Compose's template engine has quirks a user can observe, and a stack file that
works with `docker compose` must give the same result here, so this follows its
algorithm rather than a cleaner grammar:

* A `${` starts a braced form whose modifier argument runs, greedily, to the
  LAST `}` on the same line; the form is then cut at the first `}` that closes
  it by brace counting, and whatever followed is substituted on its own and
  appended. So `${A:-x}}` gives `x}`, and `${A:-{}}` gives `{}` when A is unset.
* A default, alternative or error message is substituted *before* the variable
  is looked at: `${SET:-${UNSET:?no}}` fails even though SET has a value.
* `$` followed by anything that is not `$`, a name or `{` stays as written
  (`$1`, `$-`, a trailing `$`); a `${` that does not form a valid braced
  expression is an error.
* Variable names are ASCII letters, digits and `_` (not starting with a digit),
  matched case-insensitively as Go does, which also admits U+017F and U+212A.
* Mapping keys are never substituted; every string value is, `x-*` included.
* `$$` becomes `$`: the model holds what the container sees. (`docker compose
  config` writes every `$` back as `$$` when it prints an interpolated model.)

Compose also converts the strings found at a few typed keys (`privileged`,
`cpus`, `ports[].target`, ...) to booleans and numbers while interpolating, so a
user may write `privileged: "${PRIV:-false}"`; `interpolate` does the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import Path, SourceMap, StackError, Warnings

# Names use Go's case-insensitive `[_a-z][_a-z0-9]*`: its simple case folding
# makes `s` match U+017F (long s) and `k` match U+212A (Kelvin sign).
_NAME = r"[_a-zA-Z\u017f\u212a][_a-zA-Z0-9\u017f\u212a]*"
# One `$` form per match. The braced argument `.*` is greedy: it runs to the
# last `}` of the line (`.` stops at a newline), and `_braced` cuts it back.
_PATTERN = re.compile(
    r"\$(?:"
    r"(?P<escaped>\$)"
    rf"|(?P<named>{_NAME})"
    rf"|\{{(?:(?P<braced>{_NAME}(?::?[-+?].*)?)\}}|(?P<invalid>))"
    r")"
)
_NAME_AT_START = re.compile(_NAME)

ESCAPE_HINT = "a literal $ is written $$"

Getter = Callable[[str], "str | None"]
"""Looks a variable up: its value, or None when it is not set."""


class TemplateError(StackError):
    """A bad `${...}` or a missing required variable, before we know where it was."""


def unset_warning(name: str) -> str:
    return f'The "{name}" variable is not set. Defaulting to a blank string.'


def substitute(text: str, lookup: Mapping[str, str], warnings: Warnings | None = None) -> str:
    """`text` with its variables replaced by their values from `lookup`.

    Raises `TemplateError` (a `StackError` without a location) for invalid
    syntax or a missing required variable; warns once per unset variable.
    """
    if "$" not in text:
        return text
    return substitute_with(text, lookup.get, _warner(warnings))


def substitute_with(text: str, get: Getter, on_unset: Callable[[str], None]) -> str:
    """Like `substitute`, with a lookup function and an unset-variable callback."""
    if "$" not in text:
        return text
    try:
        return _substitute(text, get, on_unset)
    except RecursionError:
        raise TemplateError(
            "variable substitution is nested too deeply", hint="simplify the ${...} defaults"
        ) from None


def _warner(warnings: Warnings | None) -> Callable[[str], None]:
    if warnings is None:
        return _ignore
    return lambda name: warnings.warn(unset_warning(name), key=name)


def _ignore(name: str) -> None:
    pass


def _substitute(template: str, get: Getter, on_unset: Callable[[str], None]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("escaped") is not None:
            return "$"
        name = match.group("named")
        if name is not None:
            return _plain(name, get, on_unset)
        if match.group("braced") is None:
            raise TemplateError(
                f"invalid interpolation format: {go_quote(template)}", hint=ESCAPE_HINT
            )
        return _braced(match.group(0), get, on_unset)

    return _PATTERN.sub(replace, template)


def _plain(name: str, get: Getter, on_unset: Callable[[str], None]) -> str:
    value = get(name)
    if value is None:
        on_unset(name)
        return ""
    return value


def _braced(text: str, get: Getter, on_unset: Callable[[str], None]) -> str:
    """Replace one `${...}` match (which may run past its closing brace)."""
    # With a single `{` the first `}` closes it, which spares the count.
    close = text.find("}") if text.count("{") == 1 else _closing_brace(text)
    rest = ""
    if close > -1:
        text, rest = text[: close + 1], text[close + 1 :]
    body = text[2:-1]
    name_end = _NAME_AT_START.match(body).end()  # type: ignore[union-attr]
    name = body[:name_end]
    if name_end == len(body):
        return _plain(name, get, on_unset)

    operator = body[name_end : name_end + 2] if body[name_end] == ":" else body[name_end]
    argument = body[name_end + len(operator) :]
    if "$" in argument:
        argument = _substitute(argument, get, on_unset)
    value = get(name)
    kind = operator[-1]
    needs_content = operator[0] == ":"
    if kind == "-":
        if value is None or (needs_content and value == ""):
            value = argument
    elif kind == "+":
        if value is not None and (not needs_content or value != ""):
            value = argument
        elif value is None:
            value = ""
    elif value is None or (needs_content and value == ""):
        message = f"required variable {name} is missing a value"
        raise TemplateError(f"{message}: {argument}" if argument else message)
    return value + (_substitute(rest, get, on_unset) if rest else "")


def _closing_brace(text: str) -> int:
    """Index of the `}` that closes the leading `${`, counted the way compose does.

    Compose skips the character right after each `{` while counting; keeping
    that makes the cut land where compose's does for inputs like `${A:-{}}`.
    """
    depth = 0
    i = 0
    end = len(text)
    while i < end:
        char = text[i]
        if char == "}":
            depth -= 1
            if depth == 0:
                return i
        elif char == "{":
            depth += 1
            i += 1
        i += 1
    return -1


def go_quote(text: str) -> str:
    """`text` in double quotes with control characters escaped, as Go's %q shows it."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif not char.isprintable() and char != " ":
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


# ---------------------------------------------------------------------------
# The whole document


def interpolate(data: Any, lookup: Mapping[str, str], source: SourceMap, warnings: Warnings) -> Any:
    """A copy of one file's `data` with every string value substituted.

    Strings at the keys compose types while interpolating are converted too
    (see `_CASTS`). Errors are `StackError`s pointing at the value's key path.
    """
    if not isinstance(data, dict):
        return data
    walker = _Walker(lookup.get, _warner(warnings), source, warnings)
    try:
        return walker.walk(data, (), _CASTS)
    except RecursionError:
        raise StackError(
            "the document is nested too deeply", location=source.default_file or None
        ) from None


# A cast table node: (caster for this exact path or None, children by key).
# "*" matches any mapping key and "[]" any list item, as in compose's table.
_CastNode = tuple["Callable[[str, _Walker, Path], Any] | None", dict[str, "_CastNode"]]


class _Walker:
    __slots__ = ("get", "on_unset", "source", "warnings")

    def __init__(
        self, get: Getter, on_unset: Callable[[str], None], source: SourceMap, warnings: Warnings
    ) -> None:
        self.get = get
        self.on_unset = on_unset
        self.source = source
        self.warnings = warnings

    def walk(self, value: Any, path: Path, casts: _CastNode | None) -> Any:
        """Copy `value`, substituting and casting where the cast table says."""
        if casts is None:
            return self.copy(value, path)
        kind = type(value)
        if kind is str:
            if "$" in value:
                value = self.substitute(value, path)
            return value if casts[0] is None else casts[0](value, self, path)
        if kind is dict:
            children = casts[1]
            wildcard = children.get("*")
            out = {}
            for key, item in value.items():
                below = children.get(key, wildcard) if type(key) is str else None
                if below is not None:
                    out[key] = self.walk(item, path + (key,), below)
                elif type(item) is str and "$" not in item:
                    out[key] = item
                else:
                    out[key] = self.copy(item, path + (key,))
            return out
        if kind is list:
            item_casts = casts[1].get("[]")
            return [self.walk(v, path + (i,), item_casts) for i, v in enumerate(value)]
        return value

    def copy(self, value: Any, path: Path) -> Any:
        """Copy `value`, substituting strings; most of a file goes through here,
        so leaves are handled inline rather than by a call each."""
        kind = type(value)
        if kind is str:
            return self.substitute(value, path) if "$" in value else value
        if kind is dict:
            out = {}
            for key, item in value.items():
                kind = type(item)
                if kind is str:
                    out[key] = self.substitute(item, path + (key,)) if "$" in item else item
                elif kind is dict or kind is list:
                    out[key] = self.copy(item, path + (key,))
                else:
                    out[key] = item
            return out
        if kind is list:
            items = []
            for index, item in enumerate(value):
                kind = type(item)
                if kind is str:
                    items.append(self.substitute(item, path + (index,)) if "$" in item else item)
                elif kind is dict or kind is list:
                    items.append(self.copy(item, path + (index,)))
                else:
                    items.append(item)
            return items
        return value

    def substitute(self, text: str, path: Path) -> str:
        try:
            return substitute_with(text, self.get, self.on_unset)
        except StackError as error:
            raise self.source.error(path, error.message, error.hint) from None


def _cast_error(walker: _Walker, path: Path, value: str, wanted: str) -> StackError:
    return walker.source.error(path, f"cannot convert {go_quote(value)} to {wanted}")


_DECIMAL_INT = re.compile(r"[+-]?[0-9]+\Z")
_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\Z",
    re.IGNORECASE,
)
_INT64 = 1 << 63


def _to_int(value: str, walker: _Walker, path: Path) -> int:
    # strconv.Atoi / ParseInt(s, 10, 64): base 10 only, an optional sign, 64 bits.
    if _DECIMAL_INT.match(value):
        number = int(value)
        if -_INT64 <= number < _INT64:
            return number
        raise walker.source.error(path, f"{go_quote(value)} is out of range for an integer")
    raise _cast_error(walker, path, value, "an integer")


def _to_float(value: str, walker: _Walker, path: Path) -> float:
    # strconv.ParseFloat; Python's float() also takes spaces and digit
    # underscores, which Go refuses, hence the pattern check first. (Go's hex
    # floats such as 0x1p-2 are not accepted here.)
    if _GO_FLOAT.match(value):
        return float(value)
    raise _cast_error(walker, path, value, "a number")


def _to_bool(value: str, walker: _Walker, path: Path) -> bool:
    lowered = value.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if lowered in ("y", "yes", "on", "n", "no", "off"):
        meaning = lowered in ("y", "yes", "on")
        walker.warnings.warn(
            f"{go_quote(value)} for boolean is not supported by YAML 1.2, "
            f"please use `{'true' if meaning else 'false'}`"
        )
        return meaning
    raise _cast_error(walker, path, value, "a boolean (true or false)")


def _cast_table() -> _CastNode:
    """Compose's interpolation type-cast paths, as a tree walked with the data."""
    service = {
        "cpu_count": _to_int,
        "cpu_percent": _to_float,
        "cpu_period": _to_int,
        "cpu_quota": _to_int,
        "cpu_rt_period": _to_int,
        "cpu_rt_runtime": _to_int,
        "cpus": _to_float,
        "cpu_shares": _to_int,
        "init": _to_bool,
        "deploy.replicas": _to_int,
        "deploy.update_config.parallelism": _to_int,
        "deploy.update_config.max_failure_ratio": _to_float,
        "deploy.rollback_config.parallelism": _to_int,
        "deploy.rollback_config.max_failure_ratio": _to_float,
        "deploy.restart_policy.max_attempts": _to_int,
        "deploy.placement.max_replicas_per_node": _to_int,
        "healthcheck.retries": _to_int,
        "healthcheck.disable": _to_bool,
        "oom_kill_disable": _to_bool,
        "oom_score_adj": _to_int,
        "pids_limit": _to_int,
        "ports.[].target": _to_int,
        "privileged": _to_bool,
        "read_only": _to_bool,
        "scale": _to_int,
        "stdin_open": _to_bool,
        "tty": _to_bool,
        "ulimits.*": _to_int,
        "ulimits.*.hard": _to_int,
        "ulimits.*.soft": _to_int,
        "volumes.[].read_only": _to_bool,
        "volumes.[].volume.nocopy": _to_bool,
    }
    flat = {f"services.*.{key}": caster for key, caster in service.items()}
    for kind, keys in (
        ("networks", ("external", "internal", "attachable", "enable_ipv4", "enable_ipv6")),
        ("volumes", ("external",)),
        ("secrets", ("external",)),
        ("configs", ("external",)),
    ):
        flat.update({f"{kind}.*.{key}": _to_bool for key in keys})

    root: list[Any] = [None, {}]
    for dotted, caster in flat.items():
        node = root
        for part in dotted.split("."):
            node = node[1].setdefault(part, [None, {}])
        node[0] = caster

    def freeze(node: list[Any]) -> _CastNode:
        return (node[0], {key: freeze(child) for key, child in node[1].items()})

    return freeze(root)


_CASTS = _cast_table()
