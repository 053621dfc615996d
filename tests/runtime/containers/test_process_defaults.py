"""A container's processes start as under Docker, whatever the keeper or whoever
started the engine had: every signal at its default action and none blocked
(Python ignores SIGPIPE; `nohup` ignores SIGHUP; systemd ignores SIGPIPE), and
the umask 022 (a user's shell may have 077)."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from support.containers import TRAPS_SIGHUP, ServiceRunner
from support.images import busybox_image, write_docker_archive_classic

from orchestrator.runtime.images.exchange import load_archive
from orchestrator.runtime.images.store import ImageStore

pytestmark = pytest.mark.trio

NOTHING = "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
SHOW_SIGNALS = ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]


async def test_the_main_process_and_an_exec_ignore_and_block_no_signal(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, command: [grep, -E, "^Sig(Blk|Ign)", /proc/self/status]}
    """)
    assert ran.stdout == NOTHING
    container = await runner.start("""
        services:
          idle: {image: busybox, command: sleep 30}
    """)
    code, stdout, _ = await runner.exec(container, SHOW_SIGNALS)
    assert (code, stdout) == (0, NOTHING)


async def test_a_pipe_reader_that_goes_away_ends_the_writer_quietly(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, command: sh -c 'yes | head -n 1'}
    """)
    assert ran.exit_code == 0
    assert ran.stdout == "y\n"
    assert ran.stderr == ""  # no "write error: Broken pipe" from yes


@pytest.fixture
async def runner_started_under_nohup(tmp_path: Path) -> AsyncIterator[ServiceRunner]:
    """A state root of its own, whose keeper starts while SIGHUP is ignored and the
    umask is 077, as for `umask 077; nohup stackd`."""
    root = tmp_path / "root"
    with ImageStore(root / "images") as store:
        load_archive(store, str(write_docker_archive_classic(tmp_path / "busybox.tar",
                                                             [busybox_image()])))
    runner = ServiceRunner(root, project_dir=tmp_path)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    umask = os.umask(0o077)
    try:
        await runner.runtime.keeper.request({"op": "held"})  # starts the keeper
    finally:
        signal.signal(signal.SIGHUP, previous)
        os.umask(umask)
    try:
        yield runner
    finally:
        await runner.remove_all()
        await runner.runtime.shutdown_keeper()


async def test_a_shell_traps_sighup_when_the_engine_was_started_under_nohup(
    runner_started_under_nohup: ServiceRunner,
):
    runner = runner_started_under_nohup
    container = await runner.start(TRAPS_SIGHUP)
    with trio.fail_after(10):
        while "ready" not in runner.output(container.id)[0]:
            await trio.sleep(0.02)
    await runner.runtime.kill(container.id, "SIGHUP")
    with trio.fail_after(5):
        state = await runner.runtime.wait(container.id)
    assert state.exit_code == 7


async def test_processes_get_dockers_umask_whatever_the_engine_was_started_with(
    runner_started_under_nohup: ServiceRunner,
):
    runner = runner_started_under_nohup
    ran = await runner.run("""
        services:
          app:
            image: busybox
            command: sh -c 'umask; touch /tmp/made; stat -c %a /tmp/made'
            volumes: ["./made-at-start/below:/data"]
    """)
    assert ran.stdout == "0022\n644\n"
    source = runner.project_dir / "made-at-start"  # compose's create_host_path
    assert stat.S_IMODE(source.stat().st_mode) == 0o755
    container = await runner.start("""
        services:
          idle: {image: busybox, command: sleep 30}
    """)
    assert await runner.exec(container, ["sh", "-c", "umask"]) == (0, "0022\n", "")
