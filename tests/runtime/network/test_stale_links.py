"""The host veths a release leaves for later: deleted a moment later, or at once by a flush,
and never a link that has taken the same name since."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.runtime.network import links, stale_links
from orchestrator.runtime.network.owner import Owner
from orchestrator.runtime.network.stale_links import StaleLinks


@pytest.fixture
def owner(tmp_path: Path) -> Owner:
    return Owner.of(tmp_path)


@pytest.fixture
def name() -> Iterator[str]:
    name = "vstk" + secrets.token_hex(5)
    yield name
    subprocess.run(["ip", "link", "del", name], capture_output=True)


def add_link(name: str, owner: Owner) -> int:
    """A veth pair as a container's plug makes it (deleting either end deletes both)."""
    peer = "tmp" + secrets.token_hex(5)
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer], check=True)
    subprocess.run(["ip", "link", "set", name, "alias", owner.link_alias], check=True)
    index = links.host_index(name)
    assert index is not None
    return index


def test_a_noted_link_stays_until_a_flush_deletes_it(owner: Owner, name: str) -> None:
    add_link(name, owner)
    stale = StaleLinks(owner)
    stale.note(name)
    assert links.host_index(name) is not None  # not waited for: the caller goes on
    stale.flush()
    assert links.host_index(name) is None


def test_a_link_made_again_under_the_noted_name_is_left_alone(owner: Owner, name: str) -> None:
    first = add_link(name, owner)
    stale = StaleLinks(owner)
    stale.note(name)
    subprocess.run(["ip", "link", "del", name], check=True)
    second = add_link(name, owner)  # the same container plugged in again
    assert second != first
    stale.flush()
    assert links.host_index(name) == second


def test_a_noted_link_is_deleted_by_itself_a_moment_later(
    owner: Owner, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stale_links, "DELAY", 0.2)
    add_link(name, owner)
    StaleLinks(owner).note(name)
    deadline = time.monotonic() + 10
    while links.host_index(name) is not None:
        assert time.monotonic() < deadline, "the noted link was never deleted"
        time.sleep(0.05)


def test_another_roots_link_is_never_deleted(owner: Owner, name: str, tmp_path: Path) -> None:
    other = Owner.of(tmp_path / "elsewhere")
    add_link(name, other)
    stale = StaleLinks(owner)
    stale.note(name)
    stale.flush()
    assert links.host_index(name) is not None
