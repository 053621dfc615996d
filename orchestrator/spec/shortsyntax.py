"""Parsers for compose's one-line spellings of ports, volumes and commands.

Port specs (`127.0.0.1:8080:80/udp`), volume specs (`./data:/data:ro`) and
shell command lines (`sh -c 'echo hi'`) are each read here the way Docker
Compose reads them, including its quirks, because `stack config` must print
the same canonical values compose does.

Every parser raises `ValueError` with a message in compose's words; the
transform stage turns it into a `StackError` that points at the key.
"""

from __future__ import annotations

from typing import Any

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
