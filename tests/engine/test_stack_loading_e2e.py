"""The engine loads stack files for the CLI: what a user sees must not change.

The CLI's environment, working directory and HOME are the ones that count,
not the engine's (started earlier, from another shell); mistakes still name
the file as the user typed it; `-f -` still reads the CLI's stdin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack_cli import StackCli, cli_engine

from orchestrator.cli.engine_client import EngineClient, EngineError

pytestmark = pytest.mark.slow

STACK = """
services:
  app:
    image: busybox
    network_mode: none
    environment:
      GREETING: ${GREETING:-unset}
    volumes:
      - ~/data:/data:ro
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "compose.yaml").write_text(STACK)
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "note").write_text("from the CLI's home\n")
    return folder


@pytest.fixture
def stack(container_root: Path, tmp_path: Path, project: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[StackCli]:
    monkeypatch.delenv("GREETING", raising=False)
    with cli_engine(container_root, tmp_path / "stack.sock") as engine:
        stack = engine.project(project)
        stack("ls")  # the engine starts here: without GREETING, and with the test's own HOME
        yield stack


def test_the_clis_environment_and_home_are_used_not_the_engines(
    stack: StackCli, tmp_path: Path
) -> None:
    home = str(tmp_path / "home")
    shown = stack("run", "--rm", "-T", "app", "sh", "-c", 'echo "$GREETING"; cat /data/note',
                  env={"GREETING": "hello", "HOME": home})
    assert shown.stdout == "hello\nfrom the CLI's home\n"
    unset = stack("run", "--rm", "-T", "app", "sh", "-c", 'echo "$GREETING"',
                  env={"HOME": home})
    assert unset.stdout == "unset\n"


def test_files_are_found_from_the_clis_working_directory(
    stack: StackCli, tmp_path: Path, project: Path
) -> None:
    deeper = project / "sub" / "dir"
    deeper.mkdir(parents=True)
    assert stack("config", "--services", cwd=deeper).stdout == "app\n"  # the local loader
    stack("run", "-d", "app", "sleep", "60", cwd=deeper,  # the engine's
          env={"HOME": str(tmp_path / "home")})
    outside = stack("-f", "proj/compose.yaml", "ps", "--services", cwd=tmp_path)
    assert outside.stdout == "app\n"


def test_a_mistake_is_one_line_naming_the_file_as_typed(stack: StackCli, project: Path) -> None:
    (project / "compose.yaml").write_text("services:\n  app:\n    image: [busybox\n")
    failed = stack("up", "-d", check=False)
    assert failed.returncode == 1
    lines = failed.stderr.splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("error: compose.yaml:4:1: invalid YAML"), lines[0]
    assert failed.stderr == stack("config", check=False).stderr  # as the local loader says it
    missing = stack("-f", "nowhere.yaml", "ps", check=False)
    assert missing.stderr == "error: nowhere.yaml: stack file not found\n"


def test_stdin_is_still_read_by_the_cli(stack: StackCli, tmp_path: Path) -> None:
    ran = stack("-p", "fromstdin", "-f", "-", "run", "--rm", "-T", "piped", "echo", "ran",
                cwd=tmp_path, stdin="services:\n  piped: {image: busybox, network_mode: none}\n")
    assert ran.stdout == "ran\n"


def test_bad_load_requests_are_refused(stack: StackCli, tmp_path: Path) -> None:
    client = EngineClient(str(tmp_path / "stack.sock"))
    try:
        for body, expected in [
            ({"environment": {}}, "cwd"),
            ({"cwd": "relative", "environment": {}}, "absolute"),
            ({"cwd": "/", "environment": {"A": 1}}, "environment"),
            ({"cwd": "/", "environment": {}, "files": [3]}, "files"),
            ({"cwd": "/", "environment": {}, "files": ["-"]}, "stdin"),
            ({"cwd": "/", "environment": {}, "unknown": True}, "unknown"),
        ]:
            with pytest.raises(EngineError) as refused:
                client.request("POST", "/v1/stacks/load", body)
            assert refused.value.status == 400
            assert expected in str(refused.value)
    finally:
        client.close()


def test_sigusr1_makes_the_engine_write_its_tasks_into_its_log(
    stack: StackCli, container_root: Path
) -> None:
    import signal
    import time

    pid = int((container_root / "stackd.lock").read_text())
    log = container_root / "stackd.log"
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while f"stackd {pid}: tasks" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "no task list in stackd.log"
        time.sleep(0.05)
    listed = log.read_text(errors="replace").split(f"stackd {pid}: tasks")[-1]
    assert "- orchestrator.engine.http.serve" in listed
    assert "_accept" in listed  # where it waits: for the next connection
    assert stack("ls").returncode == 0  # and it goes on serving
