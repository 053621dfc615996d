"""The README's main job: `stacks/hello` comes up offline and serves its page."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from support.stack_cli import cli_engine

pytestmark = pytest.mark.slow

HELLO = Path(__file__).resolve().parents[2] / "stacks" / "hello"


def test_hello_stack_serves_a_page_written_by_the_other_service(
    container_root: Path, tmp_path: Path
) -> None:
    with cli_engine(container_root, tmp_path / "stack.sock") as engine:
        stack = engine.project(options=("--project-directory", str(HELLO)),
                               down_options=("-v",))
        up = stack("up", "-d")
        assert " Container hello-web-1  Healthy" in up.stderr
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:8080/", timeout=2) as answer:
                    page = answer.read().decode()
                if "web answered from" in page:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the page never appeared"
            time.sleep(0.2)
        assert page.startswith("<h1>Hello from stack</h1>")
        ps = stack("ps").stdout
        assert "(healthy)" in ps and "127.0.0.1:8080->8080/tcp" in ps
