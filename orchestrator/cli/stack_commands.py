"""`stack up`, `down`, `ps`, `logs`, `ls` and `engine`: the CLI as the engine's thin client.

The CLI loads and validates the stack file itself (it has the working
directory and the environment), sends the normalized model to the engine and
prints what comes back. It starts the engine when nobody answers on its
socket. Nothing here imports trio: a `ps` costs an interpreter start and one
request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from orchestrator.cli.engine_client import EngineClient, default_socket_path
from orchestrator.spec.errors import StackError

DEFAULT_ROOT = "/var/lib/stack"
ENGINE_START_TIMEOUT = 15.0


def run_stack_command(args: argparse.Namespace) -> int:
    if args.command == "engine":
        return _engine(args)
    client = connect()
    if args.command == "up":
        return _up(client, args)
    if args.command == "down":
        return _down(client, args)
    if args.command == "ps":
        return _ps(client, args)
    if args.command == "logs":
        return _logs(client, args)
    if args.command == "ls":
        return _ls(client)
    raise AssertionError(args.command)


# --- the engine -------------------------------------------------------------------------


_answered: set[str] = set()  # sockets an engine answered on, during this command


def connect() -> EngineClient:
    """A client for the engine, which is started first when nobody answers."""
    path = default_socket_path()
    client = EngineClient(path)
    if path in _answered or client.is_running():
        _answered.add(path)  # asking again within one command is a round trip for nothing
        return client
    import subprocess  # here: only a start needs it, and it costs every command its import
    from pathlib import Path

    root = Path(os.environ.get("STACK_ROOT") or DEFAULT_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "stackd.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator.engine.daemon"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while time.monotonic() < deadline:
        if client.is_running():
            _answered.add(path)
            return client
        time.sleep(0.02)
    raise StackError(f"the stack engine did not start; see {root / 'stackd.log'}")


def _engine(args: argparse.Namespace) -> int:
    client = EngineClient(default_socket_path())
    if args.engine_command == "status":
        if not client.is_running():
            print(f"stackd is not running (socket {default_socket_path()})")
            return 1
        _, version = client.request("GET", "/v1/version")
        print(f"stackd {version['version']} running, pid {version.get('pid')}, "
              f"state root {version.get('state_root')}, socket {default_socket_path()}")
        return 0
    if not client.is_running():
        print("stackd is not running")
        return 0
    _, version = client.request("GET", "/v1/version")
    client.request("POST", "/v1/engine/stop")
    client.close()
    pid = int(version.get("pid") or 0)
    deadline = time.monotonic() + 15
    while pid and time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.02)
    print("stackd stopped")
    return 0


# --- up and down ------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Any:
    from orchestrator.cli.stack_loading import load_stack

    return load_stack(args)


def _up(client: EngineClient, args: argparse.Namespace) -> int:
    from orchestrator.spec.environment import secret_environment

    stack = _load(args)
    scale = {}
    for entry in args.scale:
        service, _, count = entry.partition("=")
        if not count.isdigit():
            raise StackError(f"--scale {entry}: expected SERVICE=NUMBER")
        scale[service] = int(count)
    body = {
        "model": stack.model,
        "config_hashes": {name: stack.config_hash(name) for name in stack.model["services"]},
        "working_dir": stack.directory,
        "environment": secret_environment(stack.model, os.environ),
        "options": {
            "services": list(args.services), "force_recreate": args.force_recreate,
            "no_recreate": args.no_recreate, "no_deps": args.no_deps,
            "no_start": args.no_start, "remove_orphans": args.remove_orphans,
            "scale": scale, "dry_run": args.dry_run,
            **({"timeout": args.timeout} if args.timeout is not None else {}),
        },
    }
    began = time.time()
    ok = _print_progress(client.stream("PUT", f"/v1/projects/{stack.name}", body))
    if not ok:
        return 1
    if args.dry_run or args.no_start:
        return 0
    if args.wait:
        return _wait_ready(client, stack.name, args.wait_timeout)
    if args.detach:
        return 0
    from orchestrator.cli.attached import LogLines, color_wanted, run_attached

    _, containers = client.request("GET", "/v1/containers", query={"project": stack.name})
    if args.services:
        containers = [c for c in containers if c["service"] in args.services]
    lines = LogLines(containers, color=color_wanted(args.no_color),
                     prefix=not args.no_log_prefix, timestamps=args.timestamps)
    abort = args.abort_on_container_exit or bool(args.exit_code_from)
    return run_attached(client, stack.name, containers, lines,
                        {"follow": True, "since": began}, abort=abort,
                        exit_code_from=args.exit_code_from, timeout=args.timeout)


def _wait_ready(client: EngineClient, project: str, timeout: int | None) -> int:
    """Until every container runs (and is healthy when it has a healthcheck)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        _, containers = client.request("GET", "/v1/containers",
                                       query={"project": project, "all": True})
        pending = []
        for container in containers:
            if container["oneoff"]:
                continue
            if container["state"] == "exited" and container.get("exit_code") != 0:
                raise StackError(f"container {container['name']} exited "
                                 f"({container.get('exit_code')})")
            if container["health"] == "unhealthy":
                raise StackError(f"container {container['name']} is unhealthy")
            if container["state"] != "exited" and (
                    container["state"] != "running" or container["health"] == "starting"):
                pending.append(container["name"])
        if not pending:
            return 0
        if deadline is not None and time.monotonic() > deadline:
            raise StackError(f"timeout waiting for {', '.join(pending)}")
        time.sleep(0.1)


def _down(client: EngineClient, args: argparse.Namespace) -> int:
    name = _project_name(args)
    body: dict[str, Any] = {"remove_orphans": args.remove_orphans, "volumes": args.volumes}
    if args.rmi:
        body["rmi"] = args.rmi
    if args.timeout is not None:
        body["timeout"] = args.timeout
    return 0 if _print_progress(client.stream("POST", f"/v1/projects/{name}/down", body)) else 1


def _project_name(args: argparse.Namespace) -> str:
    return str(_load(args).name)


def _print_progress(events: Any, *, live: bool = True) -> bool:
    """The engine's progress in the chosen `--progress` mode; False when a step failed.
    Not `live` when the lines are interleaved with other output (no redrawn block)."""
    from orchestrator.cli.stack_progress import ProgressDisplay, resolve_mode

    mode = resolve_mode(sys.stderr)
    return ProgressDisplay("plain" if mode == "tty" and not live else mode).show(events)


# --- ps, logs, ls -----------------------------------------------------------------------


def _ps(client: EngineClient, args: argparse.Namespace) -> int:
    name = _project_name(args)
    _, containers = client.request("GET", "/v1/containers",
                                   query={"project": name, "all": args.all or bool(args.status)})
    if args.status:
        containers = [c for c in containers if c["state"] in args.status]
    containers.sort(key=lambda c: (c["service"], c["number"]))
    if args.quiet:
        print("".join(f"{c['id']}\n" for c in containers), end="")
    elif args.services:
        print("".join(f"{s}\n" for s in dict.fromkeys(c["service"] for c in containers)), end="")
    elif args.format == "json":
        print(json.dumps(containers))
    else:
        rows = [(c["name"], c["image"], _command(c["command"]), c["service"],
                 _status(c), _ports(c)) for c in containers]
        _table(("NAME", "IMAGE", "COMMAND", "SERVICE", "STATUS", "PORTS"), rows)
    return 0


def _command(command: str) -> str:
    """As compose shows it: quoted, cut at 20 characters with an ellipsis."""
    if len(command) > 20:
        command = command[:19] + "…"
    return json.dumps(command, ensure_ascii=False)


def _status(container: dict[str, Any]) -> str:
    state = container["state"]
    if state == "running":
        text = f"Up {_ago(container.get('started_at'))}"
        if container.get("health"):
            text += f" ({container['health']})"
        return text
    if state == "exited":
        return f"Exited ({container.get('exit_code')}) {_ago(container.get('finished_at'))} ago"
    return state.capitalize()


def _ago(when: float | None) -> str:
    if not when:
        return ""
    seconds = max(0, int(time.time() - when))
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def _ports(container: dict[str, Any]) -> str:
    return ", ".join(
        f"{p['url']}:{p['published_port']}->{p['target_port']}/{p['protocol']}"
        for p in container.get("publishers", [])
    )


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("   ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _logs(client: EngineClient, args: argparse.Namespace) -> int:
    from orchestrator.cli.attached import LogLines, color_wanted, follow_logs
    from orchestrator.runtime.containers.log_format import parse_since

    name = _project_name(args)
    _, containers = client.request("GET", "/v1/containers", query={"project": name, "all": True})
    if args.services:
        containers = [c for c in containers if c["service"] in args.services]
    containers.sort(key=lambda c: (c["service"], c["number"]))
    lines = LogLines(containers, color=color_wanted(args.no_color),
                     prefix=not args.no_log_prefix, timestamps=args.timestamps)
    now = time.time()
    if args.tail != "all" and not args.tail.isdigit():
        raise StackError(f"--tail {args.tail}: expected a number of lines or 'all'")
    query = {"tail": None if args.tail == "all" else int(args.tail), "follow": args.follow,
             "since": parse_since(args.since, now) if args.since else None,
             "until": parse_since(args.until, now, option="--until") if args.until else None}
    if args.follow and len(containers) > 1:
        return follow_logs(containers, lines, query)
    try:
        for container in containers:
            for entry in client.stream("GET", f"/v1/containers/{container['id']}/logs",
                                       query=query):
                print(lines.format(container, entry), end="", flush=True)
    except KeyboardInterrupt:  # ends `logs -f`; the containers go on
        return 130
    return 0


def _ls(client: EngineClient) -> int:
    _, projects = client.request("GET", "/v1/projects")
    _table(("NAME", "STATUS", "WORKING DIR"),
           [(p["name"], p["status"], p.get("working_dir", "")) for p in projects])
    return 0
