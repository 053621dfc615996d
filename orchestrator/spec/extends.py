"""Resolve `extends`: a service built on top of another one, here or in another file.

The service it extends is taken whole (compose inherits everything, also
`depends_on`, `volumes_from` and `links`), then the local definition is merged
over it with the same rules as two stack files (merge.py), `!reset` and
`!override` included. Chains are followed to the end, across files; a loop is
an error that names the whole chain.

Relative paths need no rebasing here: each file reaches this stage with its
paths already resolved against its own directory, so a build context or bind
mount inherited from `../common/base.yaml` keeps pointing next to that file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .errors import Path, SourceMap, StackError
from .merge import Merger, clear_tagged, unique_service_lists
from .yamlfile import Document

LoadFile = Callable[[str], Document]
"""Reads another stack file through the per-file stages before extends."""

_ServiceKey = tuple[str, str]  # (file, service name)


def apply_extends(document: Document, load_file: LoadFile) -> Document:
    """`document` with every `extends` resolved and the `extends` keys gone.

    `load_file(path)` returns the file at the absolute `path` parsed,
    interpolated, validated, canonical and with its relative paths resolved
    against its own directory, but with its own extends NOT applied: only the
    chain a service needs is followed (as compose does), and one resolver sees
    the whole chain, so a loop across files is found. The input document is
    not changed.
    """
    services = document.data.get("services")
    if not isinstance(services, dict) or not any(
        isinstance(service, dict) and "extends" in service for service in services.values()
    ):
        return document
    resolver = _Resolver(document, load_file)
    resolved = dict(services)
    source = document.source.rebase((), ())
    tags = dict(document.tags)
    for name, service in services.items():
        if isinstance(service, dict) and "extends" in service:
            resolved[name], where = resolver.resolve(document, name, ())
            source.update(where)
            # A tag on a list item has done its work here, and the item's index
            # now means another item of the merged list; tags on keys still act
            # against the earlier files when the stack files are merged.
            for path in document.tags:
                if path[:2] == ("services", name) and any(isinstance(p, int) for p in path):
                    del tags[path]
    data = {**document.data, "services": resolved}
    return document._replace(data=data, source=source, tags=tags)


class _Resolver:
    def __init__(self, document: Document, load_file: LoadFile) -> None:
        self.load_file = load_file
        self.files: dict[str, Document] = {document.filename: document}
        self.done: dict[_ServiceKey, tuple[dict[str, Any], SourceMap]] = {}

    def resolve(
        self, document: Document, name: str, chain: tuple[_ServiceKey, ...]
    ) -> tuple[dict[str, Any], SourceMap]:
        """Service `name` of `document` with its extends applied, and its locations.

        The locations are keyed by full path (`services.<name>...`) and the
        returned service must not be changed by the caller (it is memoized).
        """
        key = (document.filename, name)
        done = self.done.get(key)
        if done is not None:
            return done
        service = document.data["services"][name]
        service = service if isinstance(service, dict) else {}
        here: Path = ("services", name)
        if "extends" not in service:
            where = SourceMap(document.filename)
            copied = Merger(document.source, where, set()).take(service, here, here)
            self.done[key] = (copied, where)
            return copied, where

        base_document, ref = self._base_of(document, name, service["extends"])
        chain = (*chain, key)
        if (base_document.filename, ref) in chain:
            raise _cycle_error(document, name, (*chain, (base_document.filename, ref)))
        base, base_where = self.resolve(base_document, ref, chain)

        where = SourceMap(document.filename)
        merged = Merger(base_where, where, set()).take(base, here, ("services", ref))
        resets = clear_tagged(merged, document.tags, here)
        local = {field: value for field, value in service.items() if field != "extends"}
        merged = Merger(document.source, where, resets).merge_mapping(merged, local, here, here)
        unique_service_lists(merged)
        location = document.source.locate(here)
        if location is not None and not isinstance(location, str):
            where.add(here, location)
        self.done[key] = (merged, where)
        return merged, where

    def _base_of(self, document: Document, name: str, extends: Any) -> tuple[Document, str]:
        """The document that holds the extended service, and that service's name."""
        at: Path = ("services", name, "extends")
        file = None
        if isinstance(extends, str):
            ref = extends
        elif isinstance(extends, dict):
            ref, file = extends.get("service"), extends.get("file")
            if not isinstance(ref, str) or not ref:
                raise document.source.error(
                    at, "extends needs the name of the service to extend",
                    hint="add `service: <name>`",
                )
        else:
            raise document.source.error(at, "extends must be a service name or a mapping")
        if file is None:
            self._require(document, name, ref, in_file=None)
            return document, ref
        here = os.path.dirname(document.filename)
        path = os.path.normpath(os.path.join(here, str(file)))
        shown = os.path.relpath(path, here) if here else path
        base_document = self.files.get(path)
        if base_document is None:
            if not os.path.isfile(path):
                raise document.source.error(
                    (*at, "file"), f"the file to extend from does not exist: {shown}"
                )
            base_document = self.files[path] = self.load_file(path)
        self._require(base_document, name, ref, in_file=(document, shown))
        return base_document, ref

    @staticmethod
    def _require(
        holder: Document, name: str, ref: str, in_file: tuple[Document, str] | None
    ) -> None:
        services = holder.data.get("services")
        if isinstance(services, dict) and ref in services:
            return
        known = sorted(services) if isinstance(services, dict) else []
        hint = _did_you_mean(ref, known)
        if in_file is None:
            raise holder.source.error(
                ("services", name, "extends"),
                f'service "{name}" extends "{ref}", which is not defined',
                hint=hint,
            )
        document, file = in_file
        raise document.source.error(
            ("services", name, "extends", "service"),
            f'service "{name}" extends "{ref}", which {file} does not define',
            hint=hint,
        )


def _cycle_error(document: Document, name: str, chain: tuple[_ServiceKey, ...]) -> StackError:
    steps = []
    previous_file = document.filename if len(chain) < 2 else chain[0][0]
    for file, service in chain:
        if file != previous_file:
            steps.append(f"{service} ({os.path.basename(file)})")
        else:
            steps.append(service)
        previous_file = file
    return document.source.error(
        ("services", name, "extends"),
        "services extend each other in a loop: " + " -> ".join(steps),
        hint="one service of the loop must define its own settings instead",
    )


def _did_you_mean(name: str, known: list[str]) -> str | None:
    if not known:
        return None
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "defined services: " + ", ".join(known)
