"""The README's main job: `stacks/hello` comes up offline and serves its page."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.host_network import root_leftovers

pytestmark = pytest.mark.slow

HELLO = Path(__file__).resolve().parents[2] / "stacks" / "hello"


def test_hello_stack_serves_a_page_written_by_the_other_service(
    container_root: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "STACK_ROOT": str(container_root),
           "STACK_SOCKET": str(tmp_path / "stack.sock")}

    def stack(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli.main",
                               "--project-directory", str(HELLO), *args],
                              env=env, capture_output=True, text=True, timeout=120)

    try:
        up = stack("up", "-d")
        assert up.returncode == 0, up.stderr
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
    finally:
        stack("down", "-v")
        stack("engine", "stop")
    assert root_leftovers(container_root) == []
