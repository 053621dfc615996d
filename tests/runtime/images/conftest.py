"""Fixtures shared by the image tests that talk to a registry."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from support.registry import RegistryServer, run_registry

import orchestrator.runtime.images.pull as pull_module
from orchestrator.runtime.images.registry import RegistryClient
from orchestrator.runtime.images.store import ImageStore


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failures show fast: one retry, no real backoff (push uses pull's client too)."""
    fast = partial(RegistryClient, retries=1, backoff=0.01, timeout=10)
    monkeypatch.setattr(pull_module, "RegistryClient", fast)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One real docker-registry per test module, on 127.0.0.1."""
    with run_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with ImageStore(tmp_path / "images") as opened:
        yield opened
