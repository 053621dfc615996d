"""The pipeline: stack files in, one validated `Stack` out.

Each stage lives in its own module and is testable alone; this module only
puts them in order. Per file: parse -> interpolate -> schema -> canonical
(short syntax to long) -> paths -> extends -> include. Then the files merge
in command-line order, and the merged document is normalized, filtered by
profiles and checked as a whole.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from .discovery import STDIN, ProjectFiles, ProjectOptions, project_name_for, resolve_project
from .errors import SourceMap, StackError, Warnings
from .extends import apply_extends
from .host_ports import validate_host_ports
from .include import apply_include
from .interpolate import interpolate, substitute
from .merge import merge_documents
from .model import Stack
from .normalize import normalize
from .paths import LOADING_HOME, resolve_paths
from .profiles import all_profiles, apply_profiles, disabled_services
from .schema import validate_schema
from .transform import apply_defaults, canonical
from .validate import validate_model
from .yamlfile import Document, parse_yaml


def load_stack(options: ProjectOptions) -> Stack:
    if options.environ is None:
        return _load_stack(options)
    # Loading for another process (the engine, for a CLI): its HOME expands `~`.
    token = LOADING_HOME.set(options.environ.get("HOME"))
    try:
        return _load_stack(options)
    finally:
        LOADING_HOME.reset(token)


def _load_stack(options: ProjectOptions) -> Stack:
    warnings = Warnings()
    project = resolve_project(options, warnings)
    reader = _FileReader(options.interpolate, warnings)
    name = project_name_for(project, reader.declared_name(project.files, project.environment))
    if not options.interpolate:
        return _as_written(project, name, reader, warnings)
    # As in compose, the files can refer to the project's final name and to
    # the working directory even when the environment does not define them.
    environment = {"PWD": options.cwd or os.getcwd(), **project.environment,
                   "COMPOSE_PROJECT_NAME": name}
    document = reader.load_project(project.files, project.directory, environment)
    data = document.data
    declared = all_profiles(data)
    disabled = disabled_services(data, set(project.profiles))
    data = apply_profiles(data, set(project.profiles))
    data = normalize(data, name, project.directory, environment, document.source, warnings)
    validate_model(data, document.source, disabled=disabled)
    validate_host_ports(data, document.source)
    return Stack(name, project.directory, project.files, data, document.source,
                 warnings.messages, declared)


def _as_written(project: ProjectFiles, name: str, reader: _FileReader,
                warnings: Warnings) -> Stack:
    """The files merged with `${VARIABLES}` left as written (`config --no-interpolate`).

    Until variables have values, types, short syntax and references cannot be
    checked, so this is the merge of the files as they are, and nothing more.
    """
    data: dict = {}
    source = SourceMap(project.files[0])
    for path in project.files:
        document = reader.parse(path)
        data = merge_documents(data, document.data, document.tags, source, document.source)
    services = data.get("services")
    if services is not None and not isinstance(services, dict):
        raise source.error(("services",), "services must be a mapping of service names")
    for key, service in (services or {}).items():
        if service is not None and not isinstance(service, dict):
            raise source.error(("services", key), "a service must be a mapping of its settings")
    model = {"name": name, **{key: value for key, value in data.items() if key != "name"}}
    return Stack(name, project.directory, project.files, model, source, warnings.messages,
                 all_profiles(model))


class _FileReader:
    """Reads files through the per-file stages, once each, for extends and include too."""

    def __init__(self, interpolate: bool, warnings: Warnings) -> None:
        self.interpolate = interpolate
        self.warnings = warnings
        self.cache: dict[tuple[str, str, tuple[tuple[str, str], ...]], Document] = {}
        self.parsed: dict[str, Document] = {}

    def declared_name(self, files: list[str], environment: Mapping[str, str]) -> str | None:
        """The top-level `name:` the files give (the last one wins), interpolated."""
        name = None
        for path in files:
            declared = self.parse(path).data.get("name")
            if isinstance(declared, str):
                name = declared
        if name is not None and self.interpolate:
            try:
                name = substitute(name, environment, self.warnings)
            except StackError:
                return None  # reported with its location when the file is interpolated
        return name

    def parse(self, path: str) -> Document:
        """A file's YAML, parsed once (stdin can be read only once)."""
        document = self.parsed.get(path)
        if document is None:
            document = self.parsed[path] = parse_yaml(_read(path), path)
        return document

    def load_project(
        self, files: list[str], directory: str, environment: Mapping[str, str]
    ) -> Document:
        """The files read and merged in order, as one document.

        Every file's relative paths are taken against the project directory,
        as compose does for `-f` overrides.
        """
        data: dict = {}
        source = SourceMap(files[0] if files else "")
        for path in files:
            document = self.load_file(path, directory, environment)
            data = merge_documents(data, document.data, document.tags, source, document.source)
        apply_defaults(data, directory)
        return Document(files[0] if files else "", data, source, {})

    def load_file(self, path: str, base_dir: str, environment: Mapping[str, str]) -> Document:
        """One file through every per-file stage, extends and include resolved."""
        document = self._prepared(path, base_dir, environment)
        document = apply_extends(
            document, lambda other: self._prepared(other, os.path.dirname(other), environment)
        )
        return apply_include(document, self._include_loader(environment), base_dir=base_dir)

    def _prepared(self, path: str, base_dir: str, environment: Mapping[str, str]) -> Document:
        """One file parsed, interpolated, checked, in long syntax, with absolute paths.

        Cached: a file that several services extend is read once.
        """
        key = (path, base_dir, tuple(sorted(environment.items())))
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        document = self.parse(path)
        data = document.data
        if self.interpolate:
            data = interpolate(data, environment, document.source, self.warnings)
        data = validate_schema(data, document.source)
        data = canonical(data, document.source)
        data = resolve_paths(data, base_dir)
        document = document._replace(data=data)
        self.cache[key] = document
        return document

    def _include_loader(self, environment: Mapping[str, str]):
        def load_included(paths: list[str], directory: str, env_files: list[str]) -> Document:
            """An included project sees ours, plus what its env files add (ours wins)."""
            from .dotenv import read_dotenv

            from_files: dict[str, str] = {}
            for env_file in env_files:
                from_files.update(read_dotenv(env_file, environment, earlier=from_files))
            return self.load_project(paths, directory, {**from_files, **environment})

        return load_included


def _read(path: str) -> str:
    if path == STDIN:
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError:
        raise StackError("the file is not valid UTF-8 text", location=path) from None
    except OSError as exc:
        raise StackError(f"cannot read the file: {exc.strerror}", location=path) from None


__all__ = ["ProjectFiles", "ProjectOptions", "load_stack"]
