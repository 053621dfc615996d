"""The engine API's OpenAPI document, for tests that hold a router or a response against it.

`openapi_routes` lists what the document promises (method, path pattern), to
compare with `Router.routes()`; `ApiDocument` validates bodies against the
schemas the document gives for a request or a response.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

API_DOCUMENT = Path(__file__).resolve().parents[2] / "schemas" / "engine-api.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_URI = "urn:stack:engine-api"


@cache
def _load(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        return yaml.safe_load(file)


def openapi_routes(path: str | Path = API_DOCUMENT) -> set[tuple[str, str]]:
    """Every (METHOD, "/v1/containers/{id}/logs") the document describes."""
    document = _load(Path(path))
    return {
        (method.upper(), pattern)
        for pattern, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


class ApiDocument:
    def __init__(self, path: str | Path = API_DOCUMENT) -> None:
        self.document = _load(Path(path))
        # The whole document is one schema resource, so that the `#/components/...`
        # references inside any operation's schema resolve against it.
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(_URI, resource)

    def _validate(self, value: Any, *pointer: str) -> None:
        schema = {"$ref": f"{_URI}#/{_pointer(*pointer)}"}
        jsonschema.Draft202012Validator(schema, registry=self.registry).validate(value)

    def response_content_type(self, method: str, pattern: str, status: int) -> str | None:
        """The media type the document gives for this answer (None: no body)."""
        responses = self.document["paths"][pattern][method.lower()]["responses"]
        response = responses.get(str(status)) or responses["default"]
        if "$ref" in response:
            response = self.document["components"]["responses"][response["$ref"].split("/")[-1]]
        content = response.get("content")
        return next(iter(content)) if content else None

    def check_response(self, method: str, pattern: str, status: int, body: Any) -> None:
        """Raise jsonschema.ValidationError unless `body` is what the document promises.

        For an NDJSON response, `body` is the list of its lines' objects.
        """
        responses = self.document["paths"][pattern][method.lower()]["responses"]
        key = str(status) if str(status) in responses else "default"
        media = self.response_content_type(method, pattern, status)
        if media is None:
            assert body is None, f"{method} {pattern} {status} has no body in the document"
            return
        response = responses[key]
        if "$ref" in response:
            pointer = ("components", "responses", response["$ref"].split("/")[-1])
        else:
            pointer = ("paths", pattern, method.lower(), "responses", key)
        if media == "application/x-ndjson":
            assert isinstance(body, list)
            for line in body:
                self._validate(line, *pointer, "content", media, "schema")
        else:
            self._validate(body, *pointer, "content", media, "schema")

    def check_request(self, method: str, pattern: str, body: Any) -> None:
        """Raise jsonschema.ValidationError unless `body` is a request body the document allows."""
        pointer = ("paths", pattern, method.lower(), "requestBody", "content", "application/json",
                   "schema")
        self._validate(body, *pointer)
