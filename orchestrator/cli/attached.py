"""Following containers' output as compose does, for attached `up` and `logs`.

Each line comes prefixed with its container's service and replica, `web-1  | `,
padded to the longest prefix; on a terminal each container's prefix has its
own color, in compose's palette order. Attached `up` ends when every container
has stopped, or on Ctrl-C: the first stops the stack gracefully, a second one
during that stop kills what still runs. Nothing here imports trio.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from orchestrator.cli.engine_client import EngineClient, default_socket_path
from orchestrator.spec.errors import StackError

INTERRUPTED = 130
# compose's rainbow: cyan, yellow, green, magenta, blue, then the same, bright
PALETTE = ("36", "33", "32", "35", "34", "36;1", "33;1", "32;1", "35;1", "34;1")


def prefix_name(container: dict[str, Any]) -> str:
    """What compose prefixes log lines with: the service and replica, `web-1`."""
    return f"{container['service']}-{container['number']}"


class LogLines:
    """Formats a container's log entries: its (colored) prefix, a timestamp, the line."""

    def __init__(self, containers: Iterable[dict[str, Any]], *, color: bool,
                 prefix: bool = True, timestamps: bool = False):
        names = sorted({prefix_name(c) for c in containers})
        self.width = max((len(name) for name in names), default=0)
        self.colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
        self.color, self.prefix, self.timestamps = color, prefix, timestamps

    def format(self, container: dict[str, Any], entry: dict[str, Any]) -> str:
        stamp = f"{entry['time']} " if self.timestamps else ""
        if not self.prefix:
            return f"{stamp}{entry['line']}"
        name = prefix_name(container)
        head = f"{name:<{self.width}}  | "
        if self.color:
            head = f"\x1b[{self.colors.get(name, PALETTE[0])}m{head}\x1b[0m"
        return f"{head}{stamp}{entry['line']}"


def color_wanted(no_color: bool, out: TextIO | None = None) -> bool:
    if no_color:
        return False
    try:
        return (out or sys.stdout).isatty()
    except (AttributeError, ValueError):
        return False


def follow(containers: list[dict[str, Any]], lines: LogLines,
           query: dict[str, Any]) -> list[threading.Thread]:
    """A thread per container printing its log as it grows, until the container stops.

    Threads, not trio: the CLI stays an interpreter start and a few blocking
    reads, and each log stream gets its own connection to the engine.
    """
    lock = threading.Lock()

    def run(container: dict[str, Any]) -> None:
        own = EngineClient(default_socket_path())
        try:
            for entry in own.stream("GET", f"/v1/containers/{container['id']}/logs",
                                    query=query):
                with lock:
                    sys.stdout.write(lines.format(container, entry))
                    sys.stdout.flush()
        except (StackError, OSError):
            pass  # the engine went away: nothing more to show

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in containers]
    for thread in threads:
        thread.start()
    return threads


def follow_logs(containers: list[dict[str, Any]], lines: LogLines,
                query: dict[str, Any]) -> int:
    """`logs -f`: until every container stops, or Ctrl-C (which stops nothing)."""
    threads = follow(containers, lines, query)
    try:
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.1)
    except KeyboardInterrupt:
        return INTERRUPTED
    return 0


def run_attached(client: EngineClient, project: str, containers: list[dict[str, Any]],
                 lines: LogLines, query: dict[str, Any], *, abort: bool = False,
                 exit_code_from: str | None = None, timeout: int | None = None) -> int:
    """Attached `up`: show the output until the containers stop (with `abort`, until one
    does, then stop the rest), or Ctrl-C, which stops them as compose does."""
    containers = sorted(containers, key=prefix_name)
    print(f"Attaching to {', '.join(prefix_name(c) for c in containers)}", flush=True)
    threads = follow(containers, lines, query)
    stopping = interrupted = False
    try:
        while any(thread.is_alive() for thread in threads):
            if abort and any(not thread.is_alive() for thread in threads):
                stopping = True
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("Gracefully Stopping... press Ctrl+C again to force", flush=True)
        stopping = interrupted = True
    if stopping and not stop_gracefully(client, project, containers, timeout):
        return INTERRUPTED
    if interrupted:
        return INTERRUPTED
    if exit_code_from is None:
        return 0
    _, final = client.request("GET", "/v1/containers", query={"project": project, "all": True})
    codes = [c.get("exit_code") for c in final if c["service"] == exit_code_from]
    return int(codes[0] or 0) if codes else 0


def stop_gracefully(client: EngineClient, project: str, containers: list[dict[str, Any]],
                    timeout: int | None) -> bool:
    """Stop the containers' services with their stop signal and grace period; a Ctrl-C
    meanwhile kills those still running. False when it came to that."""
    from orchestrator.cli.stack_progress import ProgressDisplay, resolve_mode

    # Log lines keep coming during the stop: plain lines mix with them, a live block would not.
    mode = resolve_mode(sys.stderr)
    display = ProgressDisplay("plain" if mode == "tty" else mode)
    body: dict[str, Any] = {"services": sorted({c["service"] for c in containers})}
    if timeout is not None:
        body["timeout"] = timeout
    try:
        display.show(client.stream("POST", f"/v1/projects/{project}/stop", body))
        return True
    except KeyboardInterrupt:
        pass
    # The engine finishes the stops it began; a SIGKILL ends their grace period now.
    own = EngineClient(default_socket_path())
    try:
        _, running = own.request("GET", "/v1/containers", query={"project": project})
        wanted = {c["id"] for c in containers}
        for container in (c for c in running if c["id"] in wanted):
            resource = f"Container {container['name']}"
            display.add({"resource": resource, "action": "Kill", "status": "working"})
            try:
                own.request("POST", f"/v1/containers/{container['id']}/kill",
                            query={"signal": "SIGKILL"})
            except StackError as error:
                display.add({"resource": resource, "action": "Kill", "status": "error",
                             "message": str(error)})
                continue
            display.add({"resource": resource, "action": "Kill", "status": "done"})
    except KeyboardInterrupt:
        pass
    return False
