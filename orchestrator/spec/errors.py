"""The one error type a user ever sees from the stack-file pipeline.

Every stage reports a user's mistake as a `StackError`: one line that says
where (file:line:col and the key path, such as `services.web.ports[0]`), what
is wrong, and when we can guess it, what was probably meant. The CLI prints
`str(error)` and exits 1; nothing else escapes the loader.
"""

from __future__ import annotations

from typing import NamedTuple

Path = tuple[str | int, ...]
"""A key path into a stack document: mapping keys are str, list indices int."""


class Location(NamedTuple):
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


def format_path(path: Path) -> str:
    """`("services", "web", "ports", 0)` -> `services.web.ports[0]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


class StackError(Exception):
    """A problem with the user's input, reported as one line."""

    def __init__(
        self,
        message: str,
        *,
        location: Location | str | None = None,
        path: Path | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.path = path
        self.hint = hint

    def name_files_relative_to(self, cwd: str) -> None:
        """Name a file below `cwd` relatively, as the user typed it."""
        location = self.location
        file = getattr(location, "file", location)
        if not isinstance(file, str) or not file.startswith("/"):
            return
        import os

        relative = os.path.relpath(file, cwd)
        if not relative.startswith(".."):
            self.location = location._replace(file=relative) if file is not location else relative

    def __str__(self) -> str:
        parts = []
        if self.location:
            parts.append(str(self.location))
        if self.path:
            parts.append(format_path(self.path))
        text = ": ".join([*parts, self.message])
        if self.hint:
            text += f" ({self.hint})"
        # One line, always: a quoted user value must not break it.
        return " ".join(text.splitlines())


class SourceMap:
    """Where each key path of a document came from.

    Filled by the YAML reader (one entry per mapping key and list item), then
    carried along as files are merged, so that a check made on the merged
    model can still point at the line a user wrote.
    """

    __slots__ = ("_where", "default_file")

    def __init__(self, default_file: str = "", where: dict[Path, Location] | None = None) -> None:
        self.default_file = default_file
        self._where: dict[Path, Location] = where if where is not None else {}

    def add(self, path: Path, location: Location) -> None:
        self._where[path] = location

    def update(self, other: SourceMap) -> None:
        """Later files win: their locations replace ours for the same path."""
        self._where.update(other._where)

    def rebase(self, old_prefix: Path, new_prefix: Path) -> SourceMap:
        """The entries under `old_prefix`, moved to live under `new_prefix`."""
        n = len(old_prefix)
        moved = {
            new_prefix + path[n:]: loc
            for path, loc in self._where.items()
            if path[:n] == old_prefix
        }
        return SourceMap(self.default_file, moved)

    def get(self, path: Path) -> Location | None:
        """The location recorded for exactly `path`, if any."""
        return self._where.get(path)

    def locate(self, path: Path) -> Location | str | None:
        """The location of `path`, or of its nearest ancestor we know."""
        for end in range(len(path), -1, -1):
            loc = self._where.get(tuple(path[:end]))
            if loc is not None:
                return loc
        return self.default_file or None

    def error(self, path: Path, message: str, hint: str | None = None) -> StackError:
        return StackError(message, location=self.locate(path), path=path, hint=hint)

    def __contains__(self, path: Path) -> bool:
        return path in self._where


class Warnings:
    """Warnings collected while loading, each said once however often it recurs."""

    __slots__ = ("messages", "_seen")

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._seen: set[str] = set()

    def warn(self, message: str, key: str | None = None) -> None:
        """Record `message` unless one with the same `key` (default: the text) was."""
        key = message if key is None else key
        if key not in self._seen:
            self._seen.add(key)
            self.messages.append(message)
