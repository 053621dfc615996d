"""`stack exec` and `stack run`: a command in a service's container, attached to this terminal.

The engine runs the process; this side relays: stdin out, stdout and stderr
back, over one upgraded connection in frames (`raw_frames.py`). On a terminal
the command gets one too (unless `-T`): ours goes raw, so every key —
Ctrl-C included — reaches the program inside, and comes back cooked however
the command ends; a resized window is passed on. The exit code is the
process's, as with Docker Compose. No trio here: one `select` loop.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import select
import signal
import socket
import sys
from typing import Any

from orchestrator.cli.engine_client import EngineClient
from orchestrator.engine import raw_frames
from orchestrator.engine.attach_frames import PROGRESS, json_frame, json_payload
from orchestrator.spec.errors import StackError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_READ_SIZE = 64 * 1024


def run_exec(args: argparse.Namespace) -> int:
    """`exec` and `run` (both attach the same way)."""
    try:
        return _exec(args) if args.command == "exec" else _run(args)
    except KeyboardInterrupt:  # before the process ran, or a detached run's progress
        return EXIT_INTERRUPTED


# --- exec -----------------------------------------------------------------------------------


def _exec(args: argparse.Namespace) -> int:
    from orchestrator.cli.stack_commands import connect

    if not args.cmd:
        print("error: exec needs a command to run after SERVICE", file=sys.stderr)
        return EXIT_USAGE
    stack = _load(args)
    if args.service not in stack.model["services"]:
        raise StackError(f"no such service: {args.service}")
    client = connect()
    container = _running_container(client, stack.name, args.service, args.index)
    tty = not args.no_tty and not args.detach and _stdin_is_terminal()
    body: dict[str, Any] = {"cmd": list(args.cmd), "tty": tty, "stdin": not args.detach,
                            "env": _environment(args.env)}
    if args.user:
        body["user"] = args.user
    if args.workdir:
        body["working_dir"] = args.workdir
    path = f"/v1/containers/{container['id']}/exec"
    if args.detach:
        client.request("POST", path, body | {"detach": True})
        return 0
    body.update(_terminal_size() if tty else {})
    return _attach(client.upgrade("POST", path, body), tty=tty)


def _running_container(client: EngineClient, project: str, service: str,
                       index: int) -> dict[str, Any]:
    _, containers = client.request("GET", "/v1/containers", query={"project": project})
    replicas = [c for c in containers if c["service"] == service and not c["oneoff"]]
    for container in replicas:
        if container["number"] == index:
            return container
    if replicas:
        raise StackError(f'service "{service}" is not running container #{index}')
    raise StackError(f'service "{service}" is not running',
                     hint=f"start it first: stack up -d {service}")


# --- run ------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from orchestrator.cli.stack_commands import _print_progress, connect
    from orchestrator.spec.environment import secret_environment

    stack = _load(args)
    if args.service not in stack.model["services"]:
        raise StackError(f"no such service: {args.service}")
    tty = not args.no_tty and not args.detach and _stdin_is_terminal()
    body: dict[str, Any] = {
        "model": stack.model,
        "config_hashes": {name: stack.config_hash(name) for name in stack.model["services"]},
        "working_dir": stack.directory,
        "environment": secret_environment(stack.model, os.environ),
        "service": args.service,
        "command": list(args.cmd) or None,
        "entrypoint": _entrypoint(args.entrypoint),
        "env": _environment(args.env),
        "volumes": [_volume(spec) for spec in args.volumes],
        "service_ports": args.service_ports, "no_deps": args.no_deps, "rm": args.rm,
        "tty": tty, "interactive": True,
    }
    for key, value in (("name", args.name), ("user", args.user), ("workdir", args.workdir)):
        if value:
            body[key] = value
    client = connect()
    path = f"/v1/projects/{stack.name}/run"
    if args.detach:
        container: dict[str, Any] = {}
        lines = client.stream("POST", path, body | {"detach": True})
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the id alone
            ok = _print_progress(line for line in lines if not _take_id(line, container))
        if not ok or not container:
            return 1
        print(container["id"])
        return 0
    body.update(_terminal_size() if tty else {})
    return _attach(client.upgrade("POST", path, body), tty=tty)


def _take_id(line: dict[str, Any], container: dict[str, Any]) -> bool:
    """The last line of a detached run names the container."""
    if "id" in line:
        container.update(line)
        return True
    return False


def _entrypoint(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from orchestrator.spec.shortsyntax import split_command

    try:
        return split_command(text)
    except ValueError as error:
        raise StackError(f"--entrypoint {text!r}: {error}") from None


def _volume(spec: str) -> dict[str, Any]:
    """`-v` in the long syntax the model uses; a relative bind source is relative to here."""
    from orchestrator.spec.shortsyntax import parse_volume_spec

    try:
        volume = parse_volume_spec(spec)
    except ValueError as error:
        raise StackError(f"-v {spec}: {error}", hint="use [SOURCE:]TARGET[:ro|rw]") from None
    if volume["type"] == "bind":
        volume["source"] = os.path.abspath(os.path.expanduser(volume["source"]))
    return volume


# --- shared ---------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Any:
    from orchestrator.cli.stack_loading import load_stack

    return load_stack(args)


def _environment(entries: list[str]) -> list[str]:
    """`-e KEY=value` as given; `-e KEY` takes KEY's value here, or is dropped when unset."""
    resolved = []
    for entry in entries:
        key, equals, _ = entry.partition("=")
        if not key:
            raise StackError(f"-e {entry!r}: expected KEY=VALUE or KEY")
        if equals:
            resolved.append(entry)
        elif key in os.environ:
            resolved.append(f"{key}={os.environ[key]}")
    return resolved


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def _terminal_size() -> dict[str, int]:
    try:
        size = os.get_terminal_size(sys.stdin.fileno())
    except (AttributeError, ValueError, OSError):
        return {}
    return {"rows": size.lines, "cols": size.columns} if size.lines and size.columns else {}


def _attach(sock: socket.socket, *, tty: bool) -> int:
    """Relay until the exit frame; its code. The terminal is ours again before any message."""
    session = _Session(sock, tty)
    try:
        code, error = session.run()
    except KeyboardInterrupt:  # without a TTY, Ctrl-C is ours: leaving ends the process
        code, error = EXIT_INTERRUPTED, ""
    except OSError as failure:  # the engine went away mid-stream (stopped, or it failed)
        code, error = 1, f"lost the stack engine's connection ({failure.strerror or failure})"
    finally:
        session.close()
    if error:
        print(f"error: {error}", file=sys.stderr)
    return code


class _Session:
    def __init__(self, sock: socket.socket, tty: bool) -> None:
        self.sock = sock
        self.stdin = _readable_stdin()
        self.raw = tty and self.stdin >= 0 and os.isatty(self.stdin)
        self.saved: list[Any] | None = None
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.previous_wakeup = -1
        self.previous_winch: Any = None
        self.resized = False

    def run(self) -> tuple[int, str]:
        import termios
        import tty

        if self.raw:
            self.saved = termios.tcgetattr(self.stdin)
            tty.setraw(self.stdin)
            self.previous_winch = signal.signal(signal.SIGWINCH, self._on_winch)
            self.previous_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        if self.stdin < 0:  # nothing to forward: the process's stdin ends now
            self._send(raw_frames.encode(raw_frames.STDIN, b""))
        decoder = raw_frames.FrameDecoder()
        while True:
            watched = [self.sock, self.wake_r] + ([self.stdin] if self.stdin >= 0 else [])
            readable, _, _ = select.select(watched, [], [])
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                size = _terminal_size() if self.resized else {}
                self.resized = False
                if size:
                    self._send(json_frame(raw_frames.RESIZE, size))
            if self.stdin in readable:
                self._forward_stdin()
            if self.sock in readable:
                data = self.sock.recv(_READ_SIZE)
                if not data:
                    raise StackError("the stack engine closed the connection before the "
                                     "process ended")
                for kind, payload in decoder.feed(data):
                    if kind == raw_frames.EXIT:
                        result = json_payload(payload) or {}
                        return int(result.get("exit_code", 1)), str(result.get("error") or "")
                    self._show(kind, payload)

    def _on_winch(self, signum: int, frame: Any) -> None:
        self.resized = True

    def _forward_stdin(self) -> None:
        try:
            data = os.read(self.stdin, _READ_SIZE)
        except OSError as error:
            if error.errno != errno.EIO:
                raise
            data = b""
        self._send(raw_frames.encode(raw_frames.STDIN, data))
        if not data:  # the empty frame closes the process's stdin; nothing more to read
            self.stdin = -1

    def _send(self, frame: bytes) -> None:
        try:
            self.sock.sendall(frame)
        except OSError as error:
            raise StackError(f"the stack engine closed the connection ({error.strerror})") from None

    def _show(self, kind: int, payload: bytes) -> None:
        if kind == raw_frames.STDOUT:
            _write_all(sys.stdout.fileno(), payload)
        elif kind == raw_frames.STDERR:
            _write_all(sys.stderr.fileno(), payload)
        elif kind == PROGRESS:
            import io

            from orchestrator.cli.stack_commands import _print_progress

            lines = io.StringIO()
            with contextlib.redirect_stderr(lines):
                _print_progress([json_payload(payload) or {}], live=False)
            text = lines.getvalue()
            # A raw terminal needs its carriage returns spelled out.
            _write_all(sys.stderr.fileno(),
                       (text.replace("\n", "\r\n") if self.raw else text).encode())

    def close(self) -> None:
        import termios

        if self.saved is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(self.stdin if self.stdin >= 0 else sys.stdin.fileno(),
                                  termios.TCSADRAIN, self.saved)
        if self.previous_winch is not None:
            signal.signal(signal.SIGWINCH, self.previous_winch)
            signal.set_wakeup_fd(self.previous_wakeup)
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)
        self.sock.close()


def _readable_stdin() -> int:
    """Our stdin's fd, or -1 when there is none to read (closed, or not a file at all)."""
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (AttributeError, ValueError, OSError):
        return -1
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
