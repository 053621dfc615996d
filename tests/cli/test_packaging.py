"""What `pip install .` installs: the package must carry the data it reads at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_stack_file_schema_and_both_commands(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "schemas"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name)
        else:
            shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "orchestrator", source / "orchestrator", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        schema = archive.read("orchestrator/schemas/stack.schema.json")
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        commands = archive.read(entry_points).decode()
    assert schema == (REPO / "schemas" / "stack.schema.json").read_bytes()
    assert "stack = orchestrator.cli.main:entry" in commands
    assert "stackd = orchestrator.engine.daemon:main" in commands
