"""`ps -ef` for a container's processes, from the text of /proc (what `stack top` shows).

Pure: the caller reads /proc/<pid>/stat, status and cmdline and hands their
contents in; this turns them into the columns `docker top` prints by default
(UID PID PPID C STIME TTY TIME CMD), so it is tested with made-up /proc text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

TITLES = ("UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD")
DAY = 24 * 3600


@dataclass(frozen=True)
class ProcessStat:
    """The fields of /proc/<pid>/stat that ps -ef needs (times in clock ticks)."""

    pid: int
    command: str  # the kernel's short name (comm), shown when there is no command line
    ppid: int
    tty: int
    cpu_ticks: int  # user + system
    start_ticks: int  # since boot


def parse_stat(text: str) -> ProcessStat:
    # comm (field 2) may hold spaces and parentheses: it ends at the last ')'.
    head, _, rest = text.rpartition(")")
    pid, _, command = head.partition(" (")
    fields = rest.split()  # fields[0] is field 3 (state)
    return ProcessStat(
        pid=int(pid), command=command, ppid=int(fields[1]), tty=int(fields[4]),
        cpu_ticks=int(fields[11]) + int(fields[12]), start_ticks=int(fields[19]),
    )


def effective_uid(status: str) -> int:
    """The effective uid from /proc/<pid>/status (`Uid: real effective saved fs`)."""
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])
    raise ValueError("no Uid line in the process status")


def boot_time(proc_stat: str) -> int:
    """When the machine booted (Unix time), from /proc/stat's `btime`."""
    for line in proc_stat.splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def tty_name(number: int) -> str:
    """A controlling terminal's name from its device number, `?` for none."""
    if number == 0:
        return "?"
    major = (number >> 8) & 0xFFF
    minor = (number & 0xFF) | ((number >> 12) & 0xFFF00)
    if 136 <= major <= 143:  # Unix98 pseudo-terminals
        return f"pts/{minor + (major - 136) * 256}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    return "?"


def cpu_time(seconds: int) -> str:
    """Cumulative CPU time as ps prints it: `[DD-]HH:MM:SS`."""
    days, rest = divmod(seconds, DAY)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def start_time(started: float, now: float) -> str:
    """`HH:MM` within a day, `MonDD` within the year, else the year (as ps does)."""
    local = time.localtime(started)
    if now - started < DAY:
        return time.strftime("%H:%M", local)
    if local.tm_year == time.localtime(now).tm_year:
        return time.strftime("%b%d", local)
    return str(local.tm_year)


def command_line(cmdline: bytes, command: str) -> str:
    """The arguments joined by spaces; a kernel thread or zombie has none: `[comm]`."""
    arguments = [a.decode(errors="replace") for a in cmdline.rstrip(b"\0").split(b"\0") if a]
    return " ".join(arguments) if arguments else f"[{command}]"


def process_row(stat: ProcessStat, user: str, cmdline: bytes, *, booted: int, now: float,
                hz: int) -> list[str]:
    """One line of `ps -ef` as a list of columns, in TITLES' order."""
    started = booted + stat.start_ticks / hz
    cpu_seconds = stat.cpu_ticks // hz
    elapsed = max(now - started, 1e-9)
    percent = min(99, int(stat.cpu_ticks / hz * 100 / elapsed))
    return [user, str(stat.pid), str(stat.ppid), str(percent), start_time(started, now),
            tty_name(stat.tty), cpu_time(cpu_seconds), command_line(cmdline, stat.command)]
