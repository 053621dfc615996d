"""Durations and byte sizes written the compact way a stack file may write them.

Durations (`1m30s`) and byte sizes (`512m`) are each read here the way Docker
Compose reads them, including its quirks, because `stack config` must print
the same canonical values compose does.

Every parser raises `ValueError` with a message in compose's words; the
transform stage turns it into a `StackError` that points at the key.
"""

from __future__ import annotations

import re
from typing import Any

# --- durations ---------------------------------------------------------------

_NS = 1
_US = 1000 * _NS
_MS = 1000 * _US
_S = 1000 * _MS
_DURATION_UNITS = {
    "ns": _NS,
    "us": _US,
    "\u00b5s": _US,  # micro sign
    "\u03bcs": _US,  # Greek mu
    "ms": _MS,
    "s": _S,
    "m": 60 * _S,
    "h": 3600 * _S,
    "d": 24 * 3600 * _S,
    "w": 7 * 24 * 3600 * _S,
}
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_MAX_DURATION = (1 << 63) - 1


def parse_duration(text: str) -> int:
    """A Go duration string (`1h30m`, `1.5s`, `2d`, `500ms`) in nanoseconds.

    Compose accepts Go's units plus days (`d`) and weeks (`w`).
    """
    original = text
    if text in ("0", "+0", "-0"):
        return 0
    if not text:
        raise ValueError(f'time: invalid duration "{original}"')
    negative = text[0] == "-"
    if text[0] in "+-":
        text = text[1:]
    if not text:
        raise ValueError(f'time: invalid duration "{original}"')
    total = 0
    pos = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        assert match is not None  # the pattern matches the empty string
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not fraction:
            raise ValueError(f'time: invalid duration "{original}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{original}"')
        scale = _DURATION_UNITS.get(unit)
        if scale is None:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{original}"')
        value = int(whole or "0") * scale
        if fraction:
            # Go adds the fraction through float64, truncating: do the same.
            value += int(float(int(fraction)) * (scale / 10 ** len(fraction)))
        total += value
        if total > _MAX_DURATION:
            raise ValueError(f'time: invalid duration "{original}"')
        pos = match.end()
    return -total if negative else total


def format_duration(nanoseconds: int) -> str:
    """Go's time.Duration.String(): `1m30s`, `1h0m0s`, `500ms`, `100µs`, `0s`."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    value = abs(nanoseconds)
    if value < _S:
        if value < _US:
            return f"{sign}{value}ns"
        if value < _MS:
            return f"{sign}{_decimal(value, 3)}\u00b5s"
        return f"{sign}{_decimal(value, 6)}ms"
    text = f"{_decimal(value % (60 * _S), 9)}s"
    minutes = value // (60 * _S)
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes >= 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def _decimal(value: int, digits: int) -> str:
    """`value / 10**digits` without trailing zeros: 1500, 3 -> `1.5`."""
    whole, fraction = divmod(value, 10**digits)
    tail = str(fraction).rjust(digits, "0").rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def canonical_duration(value: Any) -> str:
    """A duration as compose prints it: `90s` -> `1m30s`."""
    text = value if isinstance(value, str) else str(value)
    return format_duration(parse_duration(text))


# --- byte sizes --------------------------------------------------------------

_SIZE_MULTIPLIERS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_GO_INT = re.compile(r"^[+-]?[0-9]+$")
_SIZE_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")


def parse_bytes(value: Any) -> int:
    """A memory size in bytes: `512m`, `1g`, `1.5g`, `100b`, `2MB`, `1 KiB`, 1024.

    Units are binary (k = 1024), as in compose; a plain number is bytes.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid size: '{value}'")
    if isinstance(value, int):
        return value
    text = str(value)
    if _GO_INT.match(text):
        return int(text)
    cut = max(text.rfind(c) for c in "0123456789. ")
    if cut < 0:
        raise ValueError(f"invalid size: '{text}'")
    if text[cut] == " ":
        number, suffix = text[:cut], text[cut + 1 :]
    else:
        number, suffix = text[: cut + 1], text[cut + 1 :]
    if not _SIZE_NUMBER.match(number):
        raise ValueError(f'strconv.ParseFloat: parsing "{number}": invalid syntax')
    size = float(number)
    if size < 0:
        raise ValueError(f"invalid size: '{text}'")
    if not suffix:
        return int(size)
    lowered = suffix.lower()
    if len(lowered) > 3:
        raise ValueError(f"invalid suffix: '{lowered}'")
    if lowered[0] == "b":
        if len(lowered) > 1:
            raise ValueError(f"invalid suffix: '{lowered}'")
        return int(size)
    multiplier = _SIZE_MULTIPLIERS.get(lowered[0])
    if (
        multiplier is None
        or (len(lowered) == 2 and lowered[1] != "b")
        or (len(lowered) == 3 and lowered[1:] != "ib")
    ):
        raise ValueError(f"invalid suffix: '{lowered}'")
    return int(size * multiplier)
