"""The log's format, without I/O: output cut into entries, and the times on them.

Entries are cut from raw output the way Docker's json-file driver cuts them:
a line each, at most 16K. Entry times are kept as integer nanoseconds until
the last step, and turned into float seconds as `ns / 10**9` everywhere (a
correctly rounded division), so the same stamp read from the log and typed by
a user compares equal.
"""

from __future__ import annotations

import calendar
import datetime
import re
import time
from decimal import Decimal
from functools import lru_cache

from orchestrator.spec.errors import StackError

SPLIT_SIZE = 16 * 1024
"""Longest entry text without its newline; longer lines are cut, as Docker cuts at 16K."""

_NS = 10**9

_STAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})"
)
# What `docker logs --since` accepts as a time: a date, optionally an hour, minutes,
# seconds and a fraction, and a zone (local time without one).
_USER_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?"
    r"([Zz]|[+-]\d{2}:?\d{2})?"
)
_UNIX_TIME = re.compile(r"(\d+)(?:\.(\d+))?")
# A Go duration, as Docker parses it: "10m", "1h30m", "1.5h", "300ms", "-5m" (in the future).
_DURATION = re.compile(r"([-+]?)((?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)")
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": _NS}
_UNIT_NS |= {"m": 60 * _NS, "h": 3600 * _NS}

_HINT = (
    "use an RFC 3339 time such as 2024-01-02T03:04:05Z, a Unix timestamp such as "
    "1700000000, or a duration before now such as 42s, 10m or 1h30m"
)


def split_entries(buffer: bytes, *, flush: bool) -> tuple[list[bytes], int]:
    """Cut raw output into entry texts; returns them and how many bytes of `buffer` they use.

    A line ends with its newline. A run of more than SPLIT_SIZE bytes without
    one is cut into SPLIT_SIZE pieces (at a UTF-8 character boundary when one
    is near, so a character is not broken in two). What is left without a
    newline waits for more output unless `flush`.
    """
    pieces: list[bytes] = []
    start, size = 0, len(buffer)
    while start < size:
        newline = buffer.find(b"\n", start, start + SPLIT_SIZE + 1)
        if newline != -1:
            end = newline + 1
        elif size - start > SPLIT_SIZE:
            end = _char_boundary(buffer, start + SPLIT_SIZE, start)
        elif flush:
            end = size
        else:
            break
        pieces.append(buffer[start:end])
        start = end
    return pieces, start


def _char_boundary(buffer: bytes, cut: int, floor: int) -> int:
    """`cut`, moved back to the start of a UTF-8 sequence that it would split."""
    for back in range(1, 4):
        if cut - back <= floor:
            break
        byte = buffer[cut - back]
        if byte & 0xC0 == 0x80:  # a continuation byte: keep looking for the lead
            continue
        if byte >= 0xC0:
            length = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if back < length:
                return cut - back
        break
    return cut


def format_log_time(ns: int) -> str:
    """UTC RFC 3339 with nanoseconds, trailing zeros dropped, as Go's RFC3339Nano writes it."""
    seconds, fraction = divmod(ns, _NS)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def parse_log_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time with a zone; ValueError if it is not one."""
    match = _STAMP.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    seconds = _utc_seconds(int(year), int(month), int(day), int(hour), int(minute), int(second))
    return (seconds - _zone_seconds(zone)) * _NS + _fraction_ns(fraction)


def parse_since(text: str, now: float, *, option: str = "--since") -> float:
    """Seconds since the epoch for a `--since`/`--until` value, read as Docker reads it.

    An RFC 3339 time (a date alone, or without seconds, or without a zone,
    which then means local time), a Unix timestamp in seconds ("1700000000.5"),
    or a duration meaning that long before `now` ("10m", "1h30m").
    """
    value = text.strip()
    duration = _DURATION.fullmatch(value)
    if duration is not None:
        sign, parts = duration.groups()
        ns = sum(Decimal(amount) * _UNIT_NS[unit] for amount, unit in _DURATION_PART.findall(parts))
        return now - float(-ns if sign == "-" else ns) / _NS
    unix = _UNIX_TIME.fullmatch(value)
    if unix is not None:
        return (int(unix.group(1)) * _NS + _fraction_ns(unix.group(2))) / _NS
    moment = _USER_TIME.fullmatch(value)
    if moment is not None:
        try:
            return _user_time_ns(moment) / _NS
        except (ValueError, OverflowError):
            pass
    raise StackError(f"{text!r} is not a time", location=option, hint=_HINT)


def _user_time_ns(match: re.Match[str]) -> int:
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    fields = (int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    if zone is None:
        seconds = int(datetime.datetime(*fields).timestamp())  # naive: the local zone, with DST
    else:
        datetime.datetime(*fields)  # rejects a 31st of February the same way in both branches
        seconds = _utc_seconds(*fields) - _zone_seconds(zone)
    return seconds * _NS + _fraction_ns(fraction)


@lru_cache(maxsize=256)
def _utc_seconds(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    # Cached: consecutive log entries mostly share their second.
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def _zone_seconds(zone: str) -> int:
    if zone in ("Z", "z"):
        return 0
    digits = zone[1:].replace(":", "")
    offset = int(digits[:2]) * 3600 + int(digits[2:]) * 60
    return -offset if zone[0] == "-" else offset


def _fraction_ns(fraction: str | None) -> int:
    return int(fraction[:9].ljust(9, "0")) if fraction else 0  # finer than a nanosecond: dropped
