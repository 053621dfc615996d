"""The example stacks in stacks/ run as their headers say: the real CLI, a real stackd,
the host's own userland (no image, no download)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.stack_cli import StackCli, cli_engine

pytestmark = pytest.mark.slow

STACKS = Path(__file__).resolve().parents[2] / "stacks"


@pytest.fixture
def stack_in(container_root: Path, tmp_path: Path) -> Iterator[Callable[[str], StackCli]]:
    """`stack_in("notes")` runs the CLI on stacks/notes; every stack used is taken down."""
    with cli_engine(container_root, tmp_path / "stack.sock", "10.219.0.0/16:24") as engine:
        yield lambda name: engine.project(options=("--project-directory", str(STACKS / name)),
                                          down_options=("-v",))


def fetch(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, data), timeout=5) as answer:
        return answer.status, answer.read()


def eventually(probe: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """The first true value of `probe()`; connection errors count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
            if value:
                return value
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def published(container: dict[str, Any]) -> list[str]:
    return [f"{p['url']}:{p['published_port']}->{p['target_port']}"
            for p in container.get("publishers", [])]


# --- stacks/jobqueue -------------------------------------------------------------------------


def dashboard_workers(count: int) -> Callable[[], dict[str, Any] | None]:
    """A probe: the dashboard's state once it shows `count` workers that each did a job."""

    def probe() -> dict[str, Any] | None:
        state = json.loads(fetch("http://127.0.0.1:8081/stats.json")[1])
        busy = [w for w in state["workers"] if w["done"] > 0]
        return state if len(state["workers"]) == count == len(busy) else None

    return probe


def test_jobqueue_spreads_jobs_over_the_replicas_the_dashboard_finds_by_name(
    stack_in: Callable[[str], StackCli],
) -> None:
    stack = stack_in("jobqueue")
    up = stack("up", "-d")
    assert " Container jobqueue-queue-1  Healthy" in up.stderr
    assert " Container jobqueue-worker-2  Started" in up.stderr

    state = eventually(dashboard_workers(2), "two busy workers on the dashboard")
    names = {w["worker"] for w in state["workers"]}
    assert len({w["address"] for w in state["workers"]}) == 2
    assert names <= set(state["queue"]["done_by"])  # the queue saw the same workers
    assert "<h1>Job queue</h1>" in fetch("http://127.0.0.1:8081/")[1].decode()

    running = stack.containers()
    assert sorted(running) == ["jobqueue-dashboard-1", "jobqueue-producer-1",
                               "jobqueue-queue-1", "jobqueue-worker-1", "jobqueue-worker-2"]
    assert published(running["jobqueue-dashboard-1"]) == ["127.0.0.1:8081->8081"]
    assert running["jobqueue-dashboard-1"]["health"] == "healthy"
    assert all(not published(c) for n, c in running.items() if "dashboard" not in n)

    stack("up", "-d", "--scale", "worker=3")
    state = eventually(dashboard_workers(3), "a third worker on the dashboard")
    assert names < {w["worker"] for w in state["workers"]}

    stack("up", "-d")  # back to deploy.replicas
    eventually(dashboard_workers(2), "two workers again")
    assert "jobqueue-worker-3" not in stack.containers()


# --- stacks/notes ----------------------------------------------------------------------------


def test_notes_migrates_first_then_serves_the_page_through_the_internal_api(
    stack_in: Callable[[str], StackCli],
) -> None:
    stack = stack_in("notes")
    lines = stack("up", "-d").stderr.splitlines()
    # The API starts only once the migration exited with 0; the page once the API is healthy.
    assert lines.index(" Container notes-migrate-1  Exited") < \
        lines.index(" Container notes-api-1  Starting")
    assert lines.index(" Container notes-api-1  Healthy") < \
        lines.index(" Container notes-web-1  Starting")

    page = eventually(lambda: fetch("http://127.0.0.1:8082/")[1].decode(), "the page")
    assert "<li>Buy milk</li>" in page and "3 notes" in page
    status, created = fetch("http://127.0.0.1:8082/api/notes", b'{"text": "from the test"}')
    assert status == 201 and json.loads(created)["text"] == "from the test"
    assert "<li>from the test</li>" in fetch("http://127.0.0.1:8082/")[1].decode()
    by_hand = stack("run", "--rm", "migrate")
    assert by_hand.stdout == "database at schema 2, 4 notes\n"

    before = stack.containers()
    assert before["notes-migrate-1"]["state"] == "exited"
    assert before["notes-migrate-1"]["exit_code"] == 0
    assert published(before["notes-web-1"]) == ["127.0.0.1:8082->8082"]
    assert not published(before["notes-api-1"])
    backend = json.loads(stack("network", "inspect", "notes_backend").stdout)[0]
    assert backend["Internal"] is True
    assert sorted(c["Name"] for c in backend["Containers"].values()) == ["notes-api-1",
                                                                          "notes-web-1"]

    # A second `up` runs the one-shot migration again, as compose does; it changes nothing
    # now, and the running services stay as they are.
    stack("up", "-d")
    after = stack.containers()
    for name in ("notes-api-1", "notes-web-1"):
        assert after[name]["id"] == before[name]["id"]

    def migration_log() -> str:
        text = stack("logs", "--no-log-prefix", "migrate").stdout
        return text if text.endswith("4 notes\n") else ""

    migrations = eventually(migration_log, "the second migration")
    assert migrations.count("seeded 3 notes") == 1
    assert migrations.endswith("database at schema 2, 4 notes\n")

    stack("down", "-v")
    assert "notes_data" not in stack("volume", "ls", "-q").stdout
    assert stack.containers() == {}
