"""Which files make up the project, where it lives, and what environment it sees.

The same rules as Docker Compose: `-f` files (repeatable, `-` for stdin), else
`COMPOSE_FILE`, else the first default name found in the working directory or
one of its parents, with its `.override` file merged on top. `.env` in the
project directory (or the `--env-file` files instead) feeds interpolation and
the `COMPOSE_*` settings; the process environment wins over both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from .errors import StackError, Warnings

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_FILES = tuple(name.replace(".y", ".override.y") for name in DEFAULT_FILES)
STDIN = "-"

_INVALID_NAME_CHARS = re.compile(r"[^-_a-z0-9]")
_VALID_NAME = re.compile(r"^[a-z0-9][-_a-z0-9]*$")


class ProjectOptions(NamedTuple):
    """What the user asked for on the command line, plus the process environment."""

    files: Sequence[str] = ()
    project_directory: str | None = None
    project_name: str | None = None
    env_files: Sequence[str] = ()
    profiles: Sequence[str] = ()
    interpolate: bool = True
    environ: Mapping[str, str] | None = None  # None: os.environ
    cwd: str | None = None  # None: os.getcwd()


class ProjectFiles(NamedTuple):
    """The resolved inputs of one load: files, directory, environment, name, profiles."""

    files: list[str]  # absolute paths, or "-" for stdin
    directory: str
    environment: dict[str, str]
    name: str | None  # from -p or COMPOSE_PROJECT_NAME; else decided by the files
    profiles: list[str]


def normalize_project_name(name: str) -> str:
    """Compose's normalization: lower case, only [-_a-z0-9], no leading - or _."""
    return _INVALID_NAME_CHARS.sub("", name.lower()).lstrip("-_")


def check_project_name(name: str, origin: str) -> str:
    if not _VALID_NAME.match(name):
        raise StackError(
            f"invalid project name {name!r} (from {origin}): use only lowercase letters, digits,"
            " '-' and '_', starting with a letter or digit"
        )
    return name


def resolve_project(options: ProjectOptions, warnings: Warnings) -> ProjectFiles:
    from .dotenv import read_dotenv

    environ = dict(os.environ if options.environ is None else options.environ)
    cwd = options.cwd or os.getcwd()
    home = environ.get("HOME")
    explicit_dir = (_absolute(options.project_directory, cwd, home)
                    if options.project_directory else None)

    def environment_for(directory: str) -> dict[str, str]:
        """Variables from the env files under those of the process (which win)."""
        env: dict[str, str] = {}
        if options.env_files:
            paths = [_absolute(p, cwd, home) for p in options.env_files]
        else:
            default = os.path.join(directory, ".env")
            paths = [default] if os.path.isfile(default) else []
        for path in paths:
            if not os.path.isfile(path):
                raise StackError("env file not found", location=path)
            env.update(read_dotenv(path, environ, earlier=env))
        env.update(environ)
        return env

    files = list(options.files)
    override_search = False
    environment = environment_for(explicit_dir or cwd)
    if not files and environment.get("COMPOSE_FILE"):
        separator = environment.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        files = [f for f in environment["COMPOSE_FILE"].split(separator) if f]
    if not files:
        found = _find_default_file(explicit_dir or cwd, warnings)
        if found is None:
            raise StackError(
                "no stack file found: looked for "
                + ", ".join(DEFAULT_FILES)
                + " in this directory and its parents (or pass -f FILE)"
            )
        files = [found]
        override_search = True
    files = [f if f == STDIN else _absolute(f, cwd, home) for f in files]
    for path in files:
        if path != STDIN and not os.path.isfile(path):
            raise StackError("stack file not found", location=path)
    if override_search:
        override = _find_override(files[0], warnings)
        if override:
            files.append(override)

    first = files[0]
    directory = explicit_dir or (cwd if first == STDIN else os.path.dirname(first))
    if directory != (explicit_dir or cwd):
        environment = environment_for(directory)

    name = None
    if options.project_name:
        name = check_project_name(options.project_name, "-p")
    elif environment.get("COMPOSE_PROJECT_NAME"):
        name = check_project_name(environment["COMPOSE_PROJECT_NAME"], "COMPOSE_PROJECT_NAME")

    profiles = list(options.profiles)
    if not profiles and environment.get("COMPOSE_PROFILES"):
        profiles = [p.strip() for p in environment["COMPOSE_PROFILES"].split(",") if p.strip()]
    return ProjectFiles(files, directory, environment, name, profiles)


def project_name_for(files: ProjectFiles, declared: object) -> str:
    """The project's name: -p / COMPOSE_PROJECT_NAME, else `name:`, else the directory's."""
    if files.name:
        return files.name
    if isinstance(declared, str) and normalize_project_name(declared):
        return normalize_project_name(declared)
    name = normalize_project_name(os.path.basename(os.path.normpath(files.directory)))
    if not name:
        raise StackError(
            f"cannot derive a project name from the directory {files.directory!r}: pass -p NAME"
        )
    return name


def _absolute(path: str, cwd: str, home: str | None) -> str:
    if home and (path == "~" or path.startswith("~/")):
        path = home + path[1:]
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(path)))


def _find_default_file(start: str, warnings: Warnings) -> str | None:
    directory = start
    while True:
        present = [n for n in DEFAULT_FILES if os.path.isfile(os.path.join(directory, n))]
        if present:
            chosen = os.path.join(directory, present[0])
            if len(present) > 1:
                warnings.warn(
                    f"found several stack files in {directory} ({', '.join(present)});"
                    f" using {present[0]}"
                )
            return chosen
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _find_override(main_file: str, warnings: Warnings) -> str | None:
    directory = os.path.dirname(main_file)
    present = [
        os.path.join(directory, name)
        for name in OVERRIDE_FILES
        if os.path.isfile(os.path.join(directory, name))
    ]
    if not present:
        return None
    if len(present) > 1:
        warnings.warn(f"found several override files in {directory}; using {present[0]}")
    return present[0]
