"""A caller's own pipes as a process's stdio: a container started on them (`run` attached),
and an exec whose caller closes its copies as soon as the process runs."""

from __future__ import annotations

import os

import pytest
import trio
from support.containers import ServiceRunner

pytestmark = pytest.mark.trio


def _drain(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


async def test_a_container_started_on_the_callers_pipes_reads_and_writes_there(
    runner: ServiceRunner,
) -> None:
    container = runner.create("""
        services:
          app: {image: busybox, command: "sh -c 'cat; echo to-stderr >&2; exit 3'"}
    """)
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    await runner.runtime.start(container.id, stdio=(stdin_r, out_w, err_w))
    for fd in (stdin_r, out_w, err_w):
        os.close(fd)
    os.write(stdin_w, b"through our pipe\n")
    os.close(stdin_w)
    with trio.fail_after(10):
        state = await runner.runtime.wait(container.id)
    assert state.exit_code == 3
    assert _drain(out_r) == "through our pipe\n"
    assert _drain(err_r) == "to-stderr\n"
    assert runner.output(container.id) == ("", "")  # none of it went to the log


async def test_exec_reports_the_pid_once_it_runs_and_its_pipe_ends_with_it(
    runner: ServiceRunner,
) -> None:
    container = await runner.start("""
        services:
          app: {image: busybox, command: sleep 30}
    """)
    process = runner.runtime.exec_process(container, ["sh", "-c", "echo $$; exit 4"])
    out_r, out_w = os.pipe()
    stdin = os.open("/dev/null", os.O_RDONLY)
    codes = []

    async def execute(task_status: trio.TaskStatus[int]) -> None:
        codes.append(await runner.runtime.exec(container.id, process, (stdin, out_w, out_w),
                                               task_status=task_status))

    async with trio.open_nursery() as nursery:
        pid = await nursery.start(execute)
        os.close(out_w)  # the keeper has its own copy by now
        os.close(stdin)
        # The pipe ends when the process does, with no copy of ours left to hold it open.
        output = await trio.to_thread.run_sync(_drain, out_r)
    assert pid > 0
    assert codes == [4]
    assert output.strip().isdigit()
