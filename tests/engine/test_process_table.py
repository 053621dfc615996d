"""`stack top`'s columns from /proc text, as `ps -ef` prints them."""

from __future__ import annotations

import time

import pytest

from orchestrator.engine.process_table import (
    TITLES,
    boot_time,
    command_line,
    cpu_time,
    effective_uid,
    parse_stat,
    process_row,
    start_time,
    tty_name,
)

# pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
# utime stime cutime cstime priority nice threads itrealvalue starttime ...
STAT = "4242 (httpd) S 4230 4242 4242 0 -1 4194560 90 0 0 0 150 50 0 0 20 0 1 0 {start} 1 2 3"


def test_a_command_name_with_spaces_and_parentheses_is_read_whole() -> None:
    stat = parse_stat("77 (my (odd) name) R 1 77 77 34816 77 0 0 0 0 0 7 3 0 0 20 0 1 0 500 1")
    assert (stat.pid, stat.command, stat.ppid, stat.tty) == (77, "my (odd) name", 1, 34816)
    assert (stat.cpu_ticks, stat.start_ticks) == (10, 500)


def test_the_effective_uid_is_the_second_one() -> None:
    assert effective_uid("Name:\tx\nUid:\t1000\t33\t33\t33\nGid:\t0\t0\t0\t0\n") == 33
    with pytest.raises(ValueError):
        effective_uid("Name:\tx\n")


def test_boot_time_comes_from_btime() -> None:
    assert boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n") == 1700000000


@pytest.mark.parametrize(("number", "name"), [
    (0, "?"), (34816, "pts/0"), (34819, "pts/3"), ((137 << 8) | 5, "pts/261"),
    ((4 << 8) | 1, "tty1"), ((4 << 8) | 65, "ttyS1"), ((5 << 8) | 1, "?"),
])
def test_terminals_are_named_as_ps_names_them(number: int, name: str) -> None:
    assert tty_name(number) == name


def test_cpu_time_shows_days_only_when_there_are_some() -> None:
    assert cpu_time(0) == "00:00:00"
    assert cpu_time(3723) == "01:02:03"
    assert cpu_time(2 * 86400 + 61) == "2-00:01:01"


def test_start_time_is_a_clock_time_today_a_date_this_year_else_a_year() -> None:
    now = time.mktime((2026, 6, 15, 12, 0, 0, 0, 0, -1))
    assert start_time(now - 3600, now) == "11:00"
    assert start_time(time.mktime((2026, 3, 2, 8, 0, 0, 0, 0, -1)), now) == "Mar02"
    assert start_time(time.mktime((2024, 3, 2, 8, 0, 0, 0, 0, -1)), now) == "2024"


def test_a_process_without_arguments_shows_its_name_in_brackets() -> None:
    assert command_line(b"httpd\0-f\0-p\x008080\0", "httpd") == "httpd -f -p 8080"
    assert command_line(b"", "kworker/0:1") == "[kworker/0:1]"


def test_a_row_has_every_column_in_order() -> None:
    hz, booted = 100, 1_700_000_000
    now = booted + 1000.0  # started at tick 80000: 200 s ago, 2 s of CPU
    row = process_row(parse_stat(STAT.format(start=80000)), "root", b"httpd\0-f\0",
                      booted=booted, now=now, hz=hz)
    assert len(row) == len(TITLES)
    assert row[:4] == ["root", "4242", "4230", "1"]
    assert row[5:] == ["?", "00:00:02", "httpd -f"]
