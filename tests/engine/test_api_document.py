"""The engine's routes are exactly the ones schemas/engine-api.yaml documents."""

from __future__ import annotations

from pathlib import Path

from support.engine_api import openapi_routes

from orchestrator.engine.api import build_router
from orchestrator.engine.engine import Engine


def test_every_documented_route_is_served_and_every_served_route_documented(
    tmp_path: Path,
) -> None:
    router = build_router(Engine(tmp_path), lambda: None)
    assert router.routes() == openapi_routes()
