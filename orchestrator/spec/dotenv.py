"""Read `.env` and `env_file` files with Docker Compose's dotenv rules.

The format is loose and compose's reading of it has corners a user can see, so
this follows compose statement by statement:

* `KEY=value`, `KEY: value` and `export KEY=value`; spaces around the
  separator are dropped. Keys may hold letters and digits of any script and
  `_ . - [ ]`. A line holding only `KEY` takes KEY's value from `lookup` and
  is skipped when lookup does not have it. `KEY=` is the empty string.
* Unquoted values run to the end of the line, lose trailing white space, and
  end before the first ` #` (a space then `#`; `x#y` keeps its `#`).
* `'single quotes'` are literal (only `\\'` is unescaped) and may span lines.
  `"double quotes"` may span lines and understand `\\n \\t \\r \\a \\b \\f \\v
  \\\\ \\" \\$` and octal `\\0ooo`. After a closing quote, parsing simply goes
  on, so `A="x" # note` is fine and `A="x"B=y` sets both.
* Unquoted and double-quoted values are interpolated like a stack file (see
  `interpolate.py`); a variable is looked up in `lookup` FIRST and only then
  among the keys set above it, which is compose's order.
* Full-line `#` comments and blank lines are skipped; a UTF-8 BOM is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from .errors import Location, StackError, Warnings
from .interpolate import TemplateError, go_quote, substitute_with, unset_warning

# Go's unicode.IsSpace (the Unicode White_Space property).
_WHITE_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WHITE_SPACE_CHARS = "".join(_WHITE_SPACE)
# What compose skips around keys and values: white space except line breaks.
_BLANK = frozenset("\t\v\f\r \x85\xa0")
_KEY_PUNCTUATION = frozenset("_.-[]")
_EXPORT = re.compile(r"export[\t\n\f\r ]+")
_ESCAPE = re.compile(r"\\(?:[abcfnrtv$\"\\]|0[0-9]{0,3})")
_SIMPLE_ESCAPES = {
    "\\a": "\a",
    "\\b": "\b",
    "\\f": "\f",
    "\\n": "\n",
    "\\r": "\r",
    "\\t": "\t",
    "\\v": "\v",
    '\\"': '"',
    "\\\\": "\\",
    # `\$` must survive interpolation as a literal dollar, which is spelled `$$`.
    "\\$": "$$",
}


def read_dotenv(
    path: str,
    lookup: Mapping[str, str] | None = None,
    warnings: Warnings | None = None,
    *,
    earlier: Mapping[str, str] | None = None,
    raw: bool = False,
) -> dict[str, str]:
    """The variables set by the env file at `path` (see `parse_dotenv`).

    With `raw` (an env_file entry's `format: raw`), see `parse_raw_env`.
    """
    text = _read_text(path)
    if raw:
        return parse_raw_env(text, path)
    return parse_dotenv(text, path, lookup, warnings, earlier=earlier)


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        raise StackError("env file not found", location=path) from None
    except IsADirectoryError:
        raise StackError("env file is a directory", location=path) from None
    except OSError as error:
        raise StackError(f"cannot read env file: {error.strerror}", location=path) from None
    # Go keeps undecodable bytes and its JSON output turns them into U+FFFD.
    return raw.decode("utf-8", errors="replace")


def parse_raw_env(text: str, filename: str) -> dict[str, str]:
    """`KEY=value` lines taken literally: no quotes, escapes, comments after values,
    nor interpolation. Blank lines, `#` lines and lines without `=` are skipped."""
    variables: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, found, value = line.partition("=")
        if not found:
            continue
        if not key or any(char.isspace() for char in key):
            raise StackError(
                f"variable {key!r} contains whitespace", location=Location(filename, number, 1)
            )
        variables[key] = value
    return variables


def parse_dotenv(
    text: str,
    filename: str,
    lookup: Mapping[str, str] | None = None,
    warnings: Warnings | None = None,
    *,
    earlier: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables set by env-file `text`, in the order the file sets them.

    A `${VAR}` reference is answered by `lookup`, then by the keys this file
    set above it, then by `earlier`: the values of the env files read before
    this one, which compose keeps in the same table as this file's own (so a
    key this file redefines hides the earlier value from the next lines on).
    A bare `KEY` line takes its value from `lookup` alone.

    For compose's `--env-file`/`.env` chain, `lookup` is the process
    environment and `earlier` the files before; for a service's `env_file`
    list, `lookup` is the project environment over the service's
    `environment`, and `earlier` that `environment` under the files before;
    for `label_file`, `lookup` is the labels of the files before. Unset
    variables warn into `warnings`, once per name.
    """
    return _Parser(text, filename, lookup or {}, earlier or {}, warnings).parse()


class _Parser:
    """One pass over the text; `pos` moves forward, `line` counts as compose does."""

    def __init__(
        self,
        text: str,
        filename: str,
        lookup: Mapping[str, str],
        earlier: Mapping[str, str],
        warnings: Warnings | None,
    ) -> None:
        self.text = text[1:] if text.startswith("\ufeff") else text
        self.filename = filename
        self.lookup = lookup
        self.earlier = earlier
        self.values: dict[str, str] = {}
        self.on_unset: Callable[[str], None] = (
            (lambda name: warnings.warn(unset_warning(name), key=name))
            if warnings is not None
            else (lambda name: None)
        )
        self.pos = 0
        self.line = 1

    def parse(self) -> dict[str, str]:
        while self._skip_to_statement():
            statement_line = self.line
            key, inherited = self._key()
            if " " in key:
                raise self._error("a key cannot contain a space")
            if inherited:
                value = self.lookup.get(key)
                if value is not None:
                    self.values[key] = value
                continue
            self.values[key] = self._value(statement_line)
        return self.values

    def _error(self, message: str) -> StackError:
        return StackError(message, location=f"{self.filename}:{self.line}")

    def _skip_to_statement(self) -> bool:
        """Skip white space and comment lines; False at the end of the text."""
        text, end = self.text, len(self.text)
        pos = self.pos
        while True:
            while pos < end and text[pos] in _WHITE_SPACE:
                if text[pos] == "\n":
                    self.line += 1
                pos += 1
            if pos == end:
                self.pos = pos
                return False
            if text[pos] != "#":
                self.pos = pos
                return True
            newline = text.find("\n", pos)
            if newline == -1:
                self.pos = end
                return False
            pos = newline

    def _key(self) -> tuple[str, bool]:
        """Read a key up to `=`, `:` or a line end (which makes it a bare KEY)."""
        text, end = self.text, len(self.text)
        start = self.pos
        export = _EXPORT.match(text, start)
        if export:
            start += 6
            while start < end and text[start] in _BLANK:
                start += 1
        if start == end:
            raise self._error("a key is missing after 'export'")

        key, resume, inherited = "", start, False
        for pos in range(start, end):
            char = text[pos]
            if char in _BLANK:
                continue
            if char in "=:\n":
                key, resume, inherited = text[start:pos], pos + 1, char == "\n"
                break
            if char in _KEY_PUNCTUATION or char.isalnum() or _is_number(char):
                continue
            first_line = text[start:].split("\n", 1)[0]
            raise self._error(
                f"unexpected character {go_quote(char)} in variable name {go_quote(first_line)}"
            )
        # A last line with neither `=` nor a line end is read, as compose
        # reads it, as the value of an empty key.

        if inherited and " " not in key:
            self.line += 1
        key = key.rstrip(_WHITE_SPACE_CHARS)
        while resume < end and text[resume] in _BLANK:
            resume += 1
        self.pos = resume
        return key, inherited

    def _value(self, statement_line: int) -> str:
        text, pos = self.text, self.pos
        quote = text[pos] if pos < len(text) else ""
        if quote not in ("'", '"'):
            newline = text.find("\n", pos)
            if newline == -1:
                newline = len(text)
            self.pos = min(newline + 1, len(text))
            self.line += 1
            value = text[pos:newline].split(" #", 1)[0].rstrip(_WHITE_SPACE_CHARS)
            return self._expand(value, statement_line)

        chars: list[str] = []
        escaped = False
        for index in range(pos + 1, len(text)):
            char = text[index]
            if char == "\n":
                self.line += 1
            if char != quote:
                if char == "\\" and not escaped:
                    escaped = True
                    continue
                if escaped:
                    escaped = False
                    chars.append("\\")
                chars.append(char)
                continue
            if escaped:
                escaped = False
                chars.append(char)
                continue
            self.pos = index + 1
            value = "".join(chars)
            if quote == '"':
                value = self._expand(_ESCAPE.sub(_unescape, value), statement_line)
            return value

        first_line = text[pos:].split("\n", 1)[0]
        raise self._error(f"unterminated quoted value {first_line}")

    def _expand(self, value: str, line: int) -> str:
        if "$" not in value:
            return value
        lookup, values, earlier = self.lookup, self.values, self.earlier

        def get(name: str) -> str | None:
            found = lookup.get(name)
            if found is None:
                found = values.get(name)
            return found if found is not None else earlier.get(name)

        try:
            return substitute_with(value, get, self.on_unset)
        except TemplateError as error:
            raise StackError(
                error.message, location=f"{self.filename}:{line}", hint=error.hint
            ) from None


def _unescape(match: re.Match[str]) -> str:
    sequence = match.group(0)
    simple = _SIMPLE_ESCAPES.get(sequence)
    if simple is not None:
        return simple
    # `\0ooo` is an octal byte value; anything else after `\0` is kept,
    # minus the `0`, exactly as compose leaves it.
    digits = sequence[2:]
    if len(digits) == 3 and all(d in "01234567" for d in digits):
        code = int(digits, 8)
        if code <= 255:
            return chr(code)
    return "\\" + digits


def _is_number(char: str) -> bool:
    """Go's unicode.IsNumber: any character of the Unicode category N."""
    if char.isascii():
        return False  # ASCII digits were already accepted by isalnum()
    import unicodedata  # only reached by keys with non-ASCII characters

    return unicodedata.category(char)[0] == "N"
