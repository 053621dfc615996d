"""A real container's output in its log: streams, times, tail/since/until, follow, and TTYs."""

from __future__ import annotations

import time

import pytest
import trio
from support.containers import ServiceRunner

from orchestrator.runtime.containers.log_reader import LogEntry, follow_log, read_log
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.trio


async def test_stdout_and_stderr_are_logged_with_stream_and_time(runner: ServiceRunner):
    before = time.time()
    ran = await runner.run("""
        services:
          app: {image: busybox, command: sh -c 'echo to-out; echo to-err >&2; printf unfinished'}
    """)
    after = time.time()
    assert ran.exit_code == 0
    entries = read_log(runner.runtime.root / runner.created[-1])
    by_text = {e.text: e for e in entries}
    assert set(by_text) == {"to-out\n", "to-err\n", "unfinished"}
    assert by_text["to-out\n"].stream == "stdout"
    assert by_text["to-err\n"].stream == "stderr"
    assert by_text["unfinished"].stream == "stdout"  # the last line, without its newline
    for entry in entries:
        assert before <= entry.epoch <= after
        assert entry.time.endswith("Z")


async def test_a_large_output_is_logged_whole_and_in_order(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, command: seq 1 50000}
    """)
    assert ran.exit_code == 0
    assert ran.stdout.split() == [str(n) for n in range(1, 50001)]


async def test_tail_since_and_until_select_entries(runner: ServiceRunner):
    await runner.run("""
        services:
          app:
            image: busybox
            command: sh -c 'echo one; sleep 0.3; echo two; sleep 0.3; echo three'
    """)
    folder = runner.runtime.root / runner.created[-1]
    entries = read_log(folder)
    assert texts(entries) == ["one", "two", "three"]
    two = entries[1].epoch
    assert texts(read_log(folder, tail=2)) == ["two", "three"]
    assert texts(read_log(folder, tail=0)) == []
    assert texts(read_log(folder, since=two)) == ["two", "three"]
    assert texts(read_log(folder, until=two)) == ["one", "two"]
    assert texts(read_log(folder, since=two, until=two)) == ["two"]
    assert texts(read_log(folder, tail=1, until=two)) == ["two"]
    assert texts(read_log(folder, streams=["stderr"])) == []


async def test_follow_sees_new_lines_and_ends_when_the_container_exits(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app:
            image: busybox
            command: >-
              sh -c 'echo before; while [ ! -e /go ]; do sleep 0.02; done;
              echo after; sleep 0.2; echo last'
    """)
    folder = runner.runtime.root / container.id

    def is_running() -> bool:
        return runner.runtime.get(container.id).state.status in ("running", "paused")

    seen: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async for entry in follow_log(folder, is_running=is_running):
                    seen.append(entry.text.strip())

            nursery.start_soon(follow)
            while seen != ["before"]:
                await trio.sleep(0.01)
            code, _, stderr = await runner.exec(container, ["touch", "/go"])
            assert code == 0, stderr
        # The nursery closes only once following has ended by itself.
    assert seen == ["before", "after", "last"]
    assert runner.runtime.get(container.id).state.status == "exited"


async def test_follow_with_tail_zero_shows_only_what_comes_next(runner: ServiceRunner):
    container = await runner.start("""
        services:
          app:
            image: busybox
            command: >-
              sh -c 'echo old; while [ ! -e /go ]; do sleep 0.02; done; echo new'
    """)
    folder = runner.runtime.root / container.id
    with trio.fail_after(5):
        while runner.output(container.id)[0] != "old\n":
            await trio.sleep(0.01)

    def is_running() -> bool:
        return runner.runtime.get(container.id).state.status == "running"

    seen: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async for entry in follow_log(folder, is_running=is_running, tail=0):
                    seen.append(entry.text)

            nursery.start_soon(follow)
            await trio.sleep(0.1)
            await runner.exec(container, ["touch", "/go"])
    assert seen == ["new\n"]


async def test_a_tty_container_writes_through_a_real_terminal(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            tty: true
            command: sh -c 'test -t 1 && echo tty; test -t 0 && echo in-tty; echo err >&2; tty'
    """)
    assert ran.exit_code == 0
    entries = read_log(runner.runtime.root / runner.created[-1])
    # A terminal merges the streams and turns "\n" into "\r\n", as with Docker; the
    # terminal is the container's own, named in its /dev/pts.
    assert [(e.stream, e.text) for e in entries] == [
        ("stdout", "tty\r\n"), ("stdout", "in-tty\r\n"), ("stdout", "err\r\n"),
        ("stdout", "/dev/pts/0\r\n"),
    ]


async def test_without_tty_output_is_not_a_terminal(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, command: sh -c 'test -t 1 && echo tty || echo no-tty'}
    """)
    assert ran.stdout == "no-tty\n"


def texts(entries: list[LogEntry]) -> list[str]:
    return [e.text.rstrip("\n") for e in entries]


async def test_logging_max_size_and_max_file_rotate_the_log(runner: ServiceRunner) -> None:
    ran = await runner.run("""
        services:
          app:
            image: busybox
            logging: {driver: json-file, options: {max-size: 2k, max-file: "2"}}
            command: sh -c 'for i in $$(seq 1 400); do echo line-$$i; done'
    """)
    assert ran.exit_code == 0
    container = runner.runtime.list()[0]
    folder = runner.runtime.root / container.id
    logs = sorted(p.name for p in folder.iterdir() if p.name.startswith("container.log"))
    assert logs == ["container.log", "container.log.1"]
    assert all((folder / name).stat().st_size <= 2048 + 200 for name in logs)
    assert ran.stdout.splitlines()[-1] == "line-400"


async def test_unsupported_logging_driver_is_one_clear_error(runner: ServiceRunner) -> None:
    expected = r"services\.app\.logging\.driver: logging driver 'syslog'"
    with pytest.raises(StackError, match=expected):
        runner.create("""
            services:
              app: {image: busybox, command: "true", logging: {driver: syslog}}
        """)
