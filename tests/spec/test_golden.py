"""Whole stacks, end to end: `config --format json` equals what Docker Compose printed.

Each folder under fixtures/golden/ is a project. Its expected.json is Docker
Compose v2's output for it (with the project's directory written as
`{project}`), kept literally, so the test needs no Docker here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.cli.main import main

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
CASES = sorted(path.name for path in GOLDEN.iterdir() if (path / "expected.json").exists())


@pytest.mark.parametrize("case", CASES)
def test_config_json_equals_docker_compose_output(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = GOLDEN / case
    for name in list(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(directory)
    args_file = directory / "args.json"
    args = json.loads(args_file.read_text()) if args_file.exists() else []
    assert main([*args, "config", "--format", "json"]) == 0
    expected = (directory / "expected.json").read_text().replace("{project}", str(directory))
    assert capsys.readouterr().out == expected
