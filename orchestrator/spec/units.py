"""Parsers for the compact one-string notations a stack file may use.

Durations (`1m30s`), byte sizes (`512m`), port specs (`127.0.0.1:8080:80/udp`),
volume specs (`./data:/data:ro`) and shell command lines (`sh -c 'echo hi'`)
are each read here the way Docker Compose reads them, including its quirks,
because `stack config` must print the same canonical values compose does.

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


# --- ports ---------------------------------------------------------------------

_PROTOCOLS = ("tcp", "udp", "sctp")


def _port_range(text: str) -> tuple[int, int]:
    start_text, dash, end_text = text.partition("-")
    start = _port_number(start_text)
    end = _port_number(end_text) if dash else start
    if end < start:
        raise ValueError
    return start, end


def _port_number(text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise ValueError
    number = int(text)
    if number > 65535:
        raise ValueError
    return number


def parse_port_spec(spec: str) -> list[dict[str, Any]]:
    """`[ip:][host[-end]:]container[-end][/proto]` -> one long-form dict per port.

    Entries come out sorted the way compose sorts them: by the text
    `port/proto`, so `9998-10001` lists 10000 and 10001 before 9998.
    """
    parts = spec.split(":")
    container = parts[-1]
    if len(parts) == 1:
        host_ip, host = "", ""
    elif len(parts) == 2:
        host_ip, host = "", parts[0]
    else:
        host_ip, host = ":".join(parts[:-2]), parts[-2]
    proto_parts = container.split("/")
    if not proto_parts[0]:
        protocol, container = "", ""
    elif len(proto_parts) == 1 or not proto_parts[1]:
        protocol, container = "tcp", proto_parts[0]
    else:
        protocol, container = proto_parts[1], proto_parts[0]
    if host_ip.startswith("["):
        if not host_ip.endswith("]"):
            raise ValueError(f"invalid IP address {host_ip}")
        host_ip = host_ip[1:-1]
    if host_ip:
        import ipaddress  # only a port bound to an address needs it: keep startup fast

        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise ValueError(f"invalid IP address: {host_ip}") from None
    if not container:
        raise ValueError(f"no port specified: {spec}<empty>")
    try:
        start, end = _port_range(container)
    except ValueError:
        raise ValueError(f"invalid containerPort: {container}") from None
    host_start = host_end = 0
    if host:
        try:
            host_start, host_end = _port_range(host)
        except ValueError:
            raise ValueError(f"invalid hostPort: {host}") from None
        if end - start != host_end - host_start and end != start:
            raise ValueError(
                "invalid ranges specified for container and host Ports: "
                f"{container} and {host}"
            )
    protocol = protocol.lower()
    if protocol not in _PROTOCOLS:
        raise ValueError(f"invalid proto: {protocol}")
    entries: list[tuple[str, dict[str, Any]]] = []
    for offset in range(end - start + 1):
        target = start + offset
        published = ""
        if host:
            published = str(host_start + offset)
            if start == end and host_start != host_end:
                published = f"{published}-{host_end}"
        entry: dict[str, Any] = {"mode": "ingress"}
        if host_ip:
            entry["host_ip"] = host_ip
        entry["target"] = target
        if published:
            entry["published"] = published
        entry["protocol"] = protocol
        entries.append((f"{target}/{protocol}", entry))
    entries.sort(key=lambda item: item[0])
    return [entry for _, entry in entries]


# --- volumes -------------------------------------------------------------------

_PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
_SELINUX = ("z", "Z")


def _is_drive(buffer: str, char: str) -> bool:
    return char == ":" and len(buffer) == 1 and buffer.isalpha()


def _is_file_path(source: str) -> bool:
    if not source:
        return False
    if source[0] in "./~" or source.startswith("\\\\"):
        return True
    return len(source) > 1 and _is_drive(source[0], source[1])


def parse_volume_spec(spec: str) -> dict[str, Any]:
    """`[source:]target[:options]` -> the long form compose derives from it.

    A source that looks like a path (`.`, `/`, `~`, a drive letter) is a
    bind mount, anything else names a volume. Options compose does not know
    are ignored, as compose ignores them. `${...}` spans are never split.
    """
    if not spec:
        raise ValueError("invalid empty volume spec")
    if len(spec) <= 2:
        return {"type": "volume", "target": spec}
    source = target = ""
    read_only = False
    nocopy = False
    bind: dict[str, str] = {}
    buffer = ""
    depth = 0
    end = "\0"
    for index, char in enumerate(spec + end):
        if char == "$" and index + 1 < len(spec) and spec[index + 1] == "{":
            depth += 1
            buffer += char
            continue
        if char == "}" and depth > 0:
            depth -= 1
            buffer += char
            continue
        if _is_drive(buffer, char):
            buffer += char
        elif char in (":", end) and depth == 0:
            if not buffer:
                raise ValueError(f"invalid spec: {spec}: empty section between colons")
            if not source and char == end:
                target = buffer
            elif not source:
                source = buffer
            elif not target:
                target = buffer
            elif char == ":":
                raise ValueError(f"invalid spec: {spec}: too many colons")
            else:
                for option in buffer.split(","):
                    if option == "ro":
                        read_only = True
                    elif option == "rw":
                        read_only = False
                    elif option == "nocopy":
                        nocopy = True
                    elif option in _PROPAGATIONS:
                        bind["propagation"] = option
                    elif option in _SELINUX:
                        bind["selinux"] = option
            buffer = ""
        else:
            buffer += char
    volume: dict[str, Any] = {}
    is_bind = _is_file_path(source)
    volume["type"] = "bind" if is_bind else "volume"
    if source:
        volume["source"] = source
    volume["target"] = clean_path(target) if target else ""
    if read_only:
        volume["read_only"] = True
    # Compose keeps SELinux relabelling and propagation options under `bind`
    # even for a named volume.
    options = {key: bind[key] for key in ("selinux", "propagation") if key in bind}
    if is_bind:
        volume["bind"] = {**options, "create_host_path": True}
    else:
        if options:
            volume["bind"] = options
        volume["volume"] = {"nocopy": True} if nocopy else {}
    return volume


def clean_path(path: str) -> str:
    """Go's path.Clean: lexical `.`/`..`/`//` removal on slash paths."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    text = "/".join(parts)
    if rooted:
        return "/" + text
    return text or "."


# --- shell words ---------------------------------------------------------------

_INVALID_COMMAND = "invalid command line string"


def split_command(line: str) -> list[str]:
    """Split a command string into words the way compose does (go-shellwords).

    Quotes and backslashes work as in a POSIX shell, no variable or
    backtick expansion happens, and an unquoted `;`, `&`, `|`, `<` or `>`
    ends the command: compose keeps only the words before it.
    """
    args: list[str] = []
    buf = ""
    got = False  # whether the current word has begun (possibly empty: "")
    escaped = double = single = backquote = dollar = False
    for char in line:
        if escaped:
            buf += char
            escaped = False
            got = True
            continue
        if char == "\\":
            if single:
                buf += char
            else:
                escaped = True
            continue
        if char in " \t\r\n":
            if single or double or backquote or dollar:
                buf += char
            elif got:
                args.append(buf)
                buf = ""
                got = False
            continue
        if char == "`":
            if not single and not double and not dollar:
                backquote = not backquote
        elif char == ")":
            if not single and not double and not backquote:
                dollar = not dollar
        elif char == "(":
            if not single and not double and not backquote:
                if not dollar and buf.endswith("$"):
                    dollar = True
                    buf += "("
                    continue
                raise ValueError(_INVALID_COMMAND)
        elif char == '"':
            if not single and not dollar:
                if double:
                    got = True
                double = not double
                continue
        elif char == "'":
            if not double and not dollar:
                if single:
                    got = True
                single = not single
                continue
        elif char in ";&|<>" and not (single or double or backquote or dollar):
            if char == ">" and buf and buf[0].isdigit():
                got = False  # `2>file`: the fd number is not a word
            break
        got = True
        buf += char
    if got:
        args.append(buf)
    if escaped or single or double or backquote or dollar:
        raise ValueError(_INVALID_COMMAND)
    return args
