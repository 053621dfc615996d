"""Container logs: raw output files -> timestamped JSON lines, rotation, and the readers.

Everything runs on real files in a temporary container directory; the raw
files are appended to the way a container's fds 1 and 2 are (O_APPEND), once
by a real child process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from orchestrator.runtime.containers.log_format import parse_log_time, parse_since
from orchestrator.runtime.containers.log_reader import follow_log, read_log
from orchestrator.runtime.containers.logs import COMMIT_EVERY, LOG_NAME, LogIngester
from orchestrator.spec.errors import StackError

SIXTEEN_K = 16 * 1024  # where Docker's json-file driver splits a long line


def emit(container: Path, stream: str, data: bytes) -> None:
    """What a container writing to its fd 1 or 2 does to the raw file."""
    fd = os.open(container / f"{stream}.raw", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def texts(container: Path, **options: object) -> list[str]:
    return [entry.text for entry in read_log(container, **options)]  # type: ignore[arg-type]


def write_log(path: Path, *entries: tuple[str, str, str]) -> None:
    """A log as Docker's json-file driver writes it: (time, stream, text) per line."""
    with path.open("a", encoding="utf-8") as out:
        for stamp, stream, text in entries:
            out.write(json.dumps({"log": text, "stream": stream, "time": stamp}) + "\n")


@pytest.fixture
def ingester(tmp_path: Path) -> Iterator[LogIngester]:
    with LogIngester(tmp_path) as ingester:
        yield ingester


def test_output_of_both_streams_becomes_docker_style_json_lines(
    tmp_path: Path, ingester: LogIngester
) -> None:
    emit(tmp_path, "stdout", b"one\ntwo\n")
    emit(tmp_path, "stderr", b"oops\n")
    assert ingester.ingest() == 3
    time.sleep(0.002)
    emit(tmp_path, "stdout", b"three\n")
    assert ingester.ingest() == 1

    lines = (tmp_path / LOG_NAME).read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["log", "stream", "time"]
    assert first["time"].endswith("Z")
    assert abs(parse_log_time(first["time"]) / 1e9 - time.time()) < 5

    entries = read_log(tmp_path)
    assert [(e.stream, e.text) for e in entries] == [
        ("stdout", "one\n"),
        ("stdout", "two\n"),
        ("stderr", "oops\n"),
        ("stdout", "three\n"),
    ]
    epochs = [e.epoch for e in entries]
    assert epochs == sorted(epochs) and epochs[-1] > epochs[0]
    assert texts(tmp_path, streams=("stderr",)) == ["oops\n"]


def test_a_line_without_newline_waits_for_the_rest(tmp_path: Path, ingester: LogIngester) -> None:
    emit(tmp_path, "stdout", b"loading")
    assert ingester.ingest() == 0
    assert texts(tmp_path) == []
    emit(tmp_path, "stdout", b"... done\nnext")
    assert ingester.ingest() == 1
    assert texts(tmp_path) == ["loading... done\n"]


def test_an_unfinished_last_line_is_logged_when_the_container_exits(
    tmp_path: Path, ingester: LogIngester
) -> None:
    emit(tmp_path, "stdout", b"done\nno newline at exit")
    ingester.ingest(flush_partial=True)
    assert texts(tmp_path) == ["done\n", "no newline at exit"]


def test_a_40k_line_is_split_into_16k_entries_that_join_back(
    tmp_path: Path, ingester: LogIngester
) -> None:
    line = b"x" * (40 * 1024) + b"\n"
    emit(tmp_path, "stdout", line[:20000])
    assert ingester.ingest() == 1  # the first 16K cannot wait for a newline
    emit(tmp_path, "stdout", line[20000:])
    ingester.ingest()
    pieces = texts(tmp_path)
    assert [len(p) for p in pieces] == [SIXTEEN_K, SIXTEEN_K, 40 * 1024 - 2 * SIXTEEN_K + 1]
    assert "".join(pieces).encode() == line


def test_a_split_never_breaks_a_multibyte_character(tmp_path: Path, ingester: LogIngester) -> None:
    line = "é" * 20000 + "\n"  # two bytes each: 16K falls inside none
    emit(tmp_path, "stdout", b"a" + line.encode())  # ...once shifted by one byte, it would
    ingester.ingest()
    pieces = texts(tmp_path)
    assert len(pieces) == 3
    assert "".join(pieces) == "a" + line
    assert all(len(p.encode()) <= SIXTEEN_K + 1 for p in pieces)


def test_invalid_utf8_is_logged_with_replacement_characters(
    tmp_path: Path, ingester: LogIngester
) -> None:
    emit(tmp_path, "stderr", b"bad \xff\xfe bytes\n\xc3\n")
    emit(tmp_path, "stdout", b"\x00\x1b[31mred\x1b[0m \xe2\x80\xa8 sep\n")
    ingester.ingest()
    assert texts(tmp_path) == [
        "\x00\x1b[31mred\x1b[0m \u2028 sep\n",
        "bad \ufffd\ufffd bytes\n",
        "\ufffd\n",
    ]
    (tmp_path / LOG_NAME).read_bytes().decode("utf-8")  # the log itself stays valid UTF-8


def test_a_new_ingester_resumes_where_the_last_one_stopped(tmp_path: Path) -> None:
    with LogIngester(tmp_path) as first:
        emit(tmp_path, "stdout", b"1\n2\nhal")
        first.ingest()
    emit(tmp_path, "stdout", b"f\n3\n")
    with LogIngester(tmp_path) as second:
        second.ingest()
    assert texts(tmp_path) == ["1\n", "2\n", "half\n", "3\n"]


KEEPER_THAT_CRASHES = """
import os, sys
from pathlib import Path
from orchestrator.runtime.containers.logs import LogIngester
ingester = LogIngester(Path(sys.argv[1]))
ingester.ingest()
os.kill(os.getpid(), 9)
"""


def test_lines_are_neither_lost_nor_doubled_when_the_keeper_is_killed(tmp_path: Path) -> None:
    for round_ in range(3):
        emit(tmp_path, "stdout", f"out {round_}\n".encode() + b"part")
        emit(tmp_path, "stderr", f"err {round_}\n".encode())
        killed = subprocess.run([sys.executable, "-c", KEEPER_THAT_CRASHES, str(tmp_path)])
        assert killed.returncode == -9
        emit(tmp_path, "stdout", b"ial\n")
    with LogIngester(tmp_path) as survivor:
        survivor.ingest()
    assert texts(tmp_path, streams=("stdout",)) == [
        "out 0\n",
        "partial\n",
        "out 1\n",
        "partial\n",
        "out 2\n",
        "partial\n",
    ]
    assert texts(tmp_path, streams=("stderr",)) == ["err 0\n", "err 1\n", "err 2\n"]


def test_ingested_output_does_not_stay_on_disk(tmp_path: Path, ingester: LogIngester) -> None:
    line = b"y" * 1023 + b"\n"
    total = 0
    for _ in range(16):
        emit(tmp_path, "stdout", line * 256)
        total += len(line) * 256
        ingester.ingest()
        raw = os.stat(tmp_path / "stdout.raw")
        assert raw.st_blocks * 512 <= 2 * COMMIT_EVERY
    ingester.ingest(flush_partial=True)
    raw = os.stat(tmp_path / "stdout.raw")
    assert raw.st_size == total  # the writer's O_APPEND offsets are unchanged
    assert raw.st_blocks * 512 <= 8192
    assert len(read_log(tmp_path)) == 16 * 256


def test_rotation_keeps_max_files_and_readers_read_across_them(tmp_path: Path) -> None:
    with LogIngester(tmp_path, max_size=2000, max_files=3) as ingester:
        for number in range(100):
            emit(tmp_path, "stdout", f"line {number}\n".encode())
            ingester.ingest()
    names = sorted(p.name for p in tmp_path.glob(LOG_NAME + "*"))
    assert names == [LOG_NAME, LOG_NAME + ".1", LOG_NAME + ".2"]
    assert all((tmp_path / name).stat().st_size <= 2000 for name in names)

    kept = texts(tmp_path)
    first = int(kept[0].split()[1])
    assert kept == [f"line {n}\n" for n in range(first, 100)]
    assert len(kept) > len((tmp_path / LOG_NAME).read_text().splitlines())
    assert texts(tmp_path, tail=30) == [f"line {n}\n" for n in range(70, 100)]


def test_with_one_file_rotation_starts_the_log_over(tmp_path: Path) -> None:
    with LogIngester(tmp_path, max_size=500, max_files=1) as ingester:
        for number in range(40):
            emit(tmp_path, "stdout", f"line {number}\n".encode())
            ingester.ingest()
    assert [p.name for p in tmp_path.glob(LOG_NAME + "*")] == [LOG_NAME]
    assert texts(tmp_path)[-1] == "line 39\n"


def docker_log(container: Path) -> None:
    """Six entries one second apart, written with the time formats Docker uses."""
    write_log(
        container / (LOG_NAME + ".1"),
        ("2024-01-02T03:04:00Z", "stdout", "a\n"),
        ("2024-01-02T03:04:01.5Z", "stderr", "b\n"),
        ("2024-01-02T03:04:02.000000001Z", "stdout", "c\n"),
    )
    write_log(
        container / LOG_NAME,
        ("2024-01-02T05:04:03+02:00", "stderr", "d\n"),
        ("2024-01-02T03:04:04.25Z", "stdout", "e\n"),
        ("2024-01-02T03:04:05Z", "stdout", "f\n"),
    )


def at(clock: str) -> float:
    return parse_since(f"2024-01-02T03:04:{clock}Z", now=0)


def test_tail_since_and_until_pick_entries_across_files(tmp_path: Path) -> None:
    docker_log(tmp_path)
    assert texts(tmp_path) == ["a\n", "b\n", "c\n", "d\n", "e\n", "f\n"]
    assert texts(tmp_path, tail=0) == []
    assert texts(tmp_path, tail=4) == ["c\n", "d\n", "e\n", "f\n"]
    assert texts(tmp_path, tail=100) == ["a\n", "b\n", "c\n", "d\n", "e\n", "f\n"]
    assert texts(tmp_path, since=at("01.5")) == ["b\n", "c\n", "d\n", "e\n", "f\n"]
    assert texts(tmp_path, until=at("03")) == ["a\n", "b\n", "c\n", "d\n"]
    assert texts(tmp_path, since=at("02"), until=at("04.25")) == ["c\n", "d\n", "e\n"]
    assert texts(tmp_path, tail=10, since=at("04")) == ["e\n", "f\n"]
    assert texts(tmp_path, tail=2, until=at("03")) == ["c\n", "d\n"]
    assert texts(tmp_path, tail=2, streams=("stderr",)) == ["b\n", "d\n"]
    stamped = read_log(tmp_path, tail=1)[0]
    assert (stamped.time, stamped.stream) == ("2024-01-02T03:04:05Z", "stdout")
    assert stamped.epoch == at("05")


def test_a_half_written_or_damaged_line_is_not_shown(tmp_path: Path) -> None:
    docker_log(tmp_path)
    with (tmp_path / LOG_NAME).open("a") as out:
        out.write('not json\n{"log":"g\\n","stream":"stdout","ti')
    assert texts(tmp_path, tail=2) == ["e\n", "f\n"]
    assert read_log(tmp_path / "missing") == []


def test_since_accepts_docker_time_values() -> None:
    now = 1_700_000_000.0
    assert parse_since("2024-01-02T03:04:05Z", now) == 1704164645
    assert parse_since("2024-01-02T03:04:05.5Z", now) == 1704164645.5
    assert parse_since("2024-01-02T04:04:05+01:00", now) == 1704164645
    assert parse_since("2024-01-02T03:04:05.123456789-00:30", now) == 1704166445123456789 / 10**9
    assert parse_since("2024-01-02Z", now) == 1704153600
    assert parse_since("1700000000", now) == 1_700_000_000
    assert parse_since("1700000000.25", now) == 1_700_000_000.25
    assert parse_since("42s", now) == now - 42
    assert parse_since("10m", now) == now - 600
    assert parse_since("1h30m", now) == now - 5400
    assert parse_since("1.5h", now) == now - 5400
    assert parse_since("250ms", now) == now - 0.25


@pytest.fixture
def two_hours_east(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "XST-2")  # a made-up zone at +02:00 with no summer time
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("two_hours_east")
def test_since_without_a_zone_means_local_time() -> None:
    assert parse_since("2024-01-02T05:04:05", 0) == 1704164645
    assert parse_since("2024-01-02T05:04", 0) == 1704164640
    assert parse_since("2024-01-02", 0) == 1704153600 - 7200


@pytest.mark.parametrize("value", ["", "yesterday", "10x", "1h30", "2024-13-01T00:00:00Z", "1e9"])
def test_a_bad_since_value_is_one_error_with_a_hint(value: str) -> None:
    with pytest.raises(StackError) as caught:
        parse_since(value, time.time(), option="--until")
    message = str(caught.value)
    assert message.startswith("--until: ") and "is not a time" in message
    assert "1h30m" in message and "\n" not in message


@pytest.mark.trio
async def test_follow_shows_old_then_new_lines_and_ends_when_the_container_stops(
    tmp_path: Path, ingester: LogIngester
) -> None:
    emit(tmp_path, "stdout", b"before\n")
    ingester.ingest()
    running = True
    following = trio.Event()

    def is_running() -> bool:
        following.set()  # asked only once the follower has read what was there
        return running

    async def container() -> None:
        nonlocal running
        await following.wait()
        for number in range(5):
            emit(tmp_path, "stdout" if number % 2 else "stderr", f"after {number}\n".encode())
            ingester.ingest()
            await trio.sleep(0.03)
        emit(tmp_path, "stdout", b"bye")
        ingester.ingest(flush_partial=True)
        running = False

    seen = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(container)
            async for entry in follow_log(tmp_path, is_running=is_running):
                seen.append(entry.text)
    assert seen == ["before\n"] + [f"after {n}\n" for n in range(5)] + ["bye"]


@pytest.mark.trio
async def test_follow_with_tail_zero_shows_only_new_lines(
    tmp_path: Path, ingester: LogIngester
) -> None:
    emit(tmp_path, "stdout", b"old 1\nold 2\n")
    ingester.ingest()
    calls = 0

    def is_running() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            emit(tmp_path, "stdout", b"new\n")
            ingester.ingest()
        return calls < 3

    with trio.fail_after(10):
        seen = [entry.text async for entry in follow_log(tmp_path, tail=0, is_running=is_running)]
    assert seen == ["new\n"]


@pytest.mark.trio
async def test_follow_keeps_up_across_rotations(tmp_path: Path) -> None:
    seen: list[str] = []
    running = True

    async def container(ingester: LogIngester) -> None:
        nonlocal running
        for batch in range(8):
            for number in range(batch * 40, batch * 40 + 40):  # ~3 rotations per batch
                emit(tmp_path, "stdout", f"line {number}\n".encode())
            ingester.ingest()
            while len(seen) < batch * 40 + 40:
                await trio.sleep(0.01)
        running = False

    with LogIngester(tmp_path, max_size=1000, max_files=20) as ingester, trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(container, ingester)
            async for entry in follow_log(tmp_path, is_running=lambda: running):
                seen.append(entry.text)
    assert seen == [f"line {n}\n" for n in range(320)]


@pytest.mark.trio
async def test_follow_ends_when_until_has_passed(tmp_path: Path) -> None:
    docker_log(tmp_path)
    with trio.fail_after(10):
        old = [e.text async for e in follow_log(tmp_path, until=at("02"), is_running=lambda: True)]
        assert old == ["a\n", "b\n", "c\n"]
        started = time.monotonic()
        soon = time.time() + 0.2
        new = follow_log(tmp_path, tail=0, until=soon, is_running=lambda: True)
        rest = [e.text async for e in new]
        assert rest == [] and time.monotonic() - started >= 0.15


SHELL_CONTAINER = """
for i in 1 2 3 4 5; do
    echo "out $i"
    echo "err $i" >&2
    sleep 0.05
done
printf 'exit without newline'
"""


@pytest.mark.trio
async def test_a_real_process_writing_to_o_append_files_is_followed_to_its_end(
    tmp_path: Path,
) -> None:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    stdout = os.open(tmp_path / "stdout.raw", flags, 0o640)
    stderr = os.open(tmp_path / "stderr.raw", flags, 0o640)
    try:
        process = subprocess.Popen(["sh", "-c", SHELL_CONTAINER], stdout=stdout, stderr=stderr)
    finally:
        os.close(stdout)
        os.close(stderr)
    running = True

    async def keeper(ingester: LogIngester) -> None:
        nonlocal running
        while process.poll() is None:
            ingester.ingest()
            await trio.sleep(0.02)
        ingester.ingest(flush_partial=True)
        running = False

    seen = []
    try:
        with LogIngester(tmp_path) as ingester, trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keeper, ingester)
                async for entry in follow_log(tmp_path, is_running=lambda: running):
                    seen.append((entry.stream, entry.text))
    finally:
        process.kill()
        process.wait()
    assert [text for stream, text in seen if stream == "stdout"] == [
        *(f"out {i}\n" for i in range(1, 6)),
        "exit without newline",
    ]
    errors = [text for stream, text in seen if stream == "stderr"]
    assert errors == [f"err {i}\n" for i in range(1, 6)]
    assert seen == [(e.stream, e.text) for e in read_log(tmp_path)]
