"""The keeper's reading of a launch's report pipe, whatever order its lines come in."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.runtime.containers.keeper import Keeper, Launch


@pytest.mark.parametrize("report", [b"pid 4242\nready\n", b"ready\npid 4242\n",
                                    b"ready\n", b"pid 4242\n"])
def test_a_held_start_is_recorded_once_both_pid_and_ready_are_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: bytes
) -> None:
    """The container reports "ready" and the process that forked it reports its "pid": under
    load the child's line can come first, and a start recorded then had pid 0, so its exit was
    never matched and every `wait` on it hung."""
    keeper = Keeper(tmp_path)
    started: list[tuple[int, bool]] = []
    monkeypatch.setattr(keeper, "_started",
                        lambda launch, *, held: started.append((launch.pid, held)))
    running: Any = SimpleNamespace(container=SimpleNamespace(id="c" * 64))
    read, write = os.pipe()
    try:
        launch = Launch(client=None, kind="start", report=read, hold=True,  # type: ignore[arg-type]
                        running=running)
        for line in report.splitlines(keepends=True):  # one line at a time, as it may come
            os.write(write, line)
            keeper._read_launch(launch)
        complete = b"pid" in report and b"ready" in report
        assert started == ([(4242, True)] if complete else [])
        assert ("c" * 64 in keeper.held) == complete
    finally:
        os.close(read)
        os.close(write)
