"""`stack start|stop|restart|kill|rm|pause|unpause|top|port|wait|events|images|cp`: the verbs
that act on a stack's existing containers, as Docker Compose users type them.

Like `up`, each loads the stack file for the project's name and its services,
asks the engine and prints what comes back in compose's shapes: a progress
line per container (` Container demo-web-1  Stopped`), `ps`-like tables.
Nothing here imports trio.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Any

from orchestrator.cli.engine_client import EngineClient
from orchestrator.spec.errors import StackError

INTERRUPTED = 130
# `restart` says Started once done, as compose does (`up` says Restarted)
_WORDS = {"Restart": ("Restarting", "Started")}
_VERBS = {"start": "start", "stop": "stop", "restart": "restart", "kill": "kill",
          "pause": "pause", "unpause": "unpause"}


def run_lifecycle(args: argparse.Namespace) -> int:
    from orchestrator.cli.stack_commands import connect

    project, services = _project(args)
    client = connect()
    try:
        if args.command in _VERBS:
            return _verb(client, project, args)
        if args.command == "rm":
            return _remove(client, project, args)
        if args.command == "cp":
            from orchestrator.cli.copy_command import run_copy

            return run_copy(client, project, services, args)
        return {"top": _top, "port": _port, "wait": _wait, "events": _events,
                "images": _images}[args.command](client, project, args)
    except KeyboardInterrupt:
        return INTERRUPTED


def _project(args: argparse.Namespace) -> tuple[str, set[str]]:
    """The project's name and its services, from the stack file; unknown services refused."""
    from orchestrator.cli.stack_loading import load_stack

    stack = load_stack(args)
    services = set(stack.model.get("services") or {})
    named = list(getattr(args, "services", None) or [])
    if getattr(args, "service", None):
        named.append(args.service)
    for name in named:
        if name not in services:
            raise StackError(f"no such service: {name}")
    return str(stack.name), services


# --- start, stop, restart, kill, pause, unpause, rm ---------------------------------------


def _verb(client: EngineClient, project: str, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"services": list(args.services)}
    if getattr(args, "timeout", None) is not None:
        body["timeout"] = args.timeout
    if args.command == "kill":
        body["signal"] = args.signal
    events = client.stream("POST", f"/v1/projects/{project}/{_VERBS[args.command]}", body)
    return 0 if print_progress(events) else 1


def print_progress(events: Iterable[dict[str, Any]]) -> bool:
    """` Container demo-web-1  Stopping`, then `Stopped` (in the `--progress` mode);
    False when a step failed."""
    from orchestrator.cli.stack_progress import ProgressDisplay

    return ProgressDisplay(words=_WORDS).show(events)


def _remove(client: EngineClient, project: str, args: argparse.Namespace) -> int:
    if args.stop:
        body = {"services": list(args.services)}
        if not print_progress(client.stream("POST", f"/v1/projects/{project}/stop", body)):
            return 1
    _, containers = client.request("GET", "/v1/containers", query={"project": project,
                                                                   "all": True})
    doomed = sorted((c for c in containers
                     if c["state"] not in ("running", "paused") and not c.get("oneoff")
                     and (not args.services or c["service"] in args.services)),
                    key=lambda c: c["name"])
    if not doomed:
        print("No stopped containers", file=sys.stderr)
        return 0
    message = f"Going to remove {', '.join(c['name'] for c in doomed)}"
    if args.force:
        print(message)
    elif not _confirm(message):
        return 0
    body = {"services": list(args.services), "containers": [c["id"] for c in doomed],
            "volumes": args.volumes}
    return 0 if print_progress(client.stream("POST", f"/v1/projects/{project}/remove",
                                             body)) else 1


def _confirm(question: str) -> bool:
    print(f"{question}. Are you sure? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


# --- top, port, images --------------------------------------------------------------------


def _running(client: EngineClient, project: str, services: Iterable[str]) -> list[dict]:
    wanted = set(services)
    _, containers = client.request("GET", "/v1/containers", query={"project": project})
    return sorted((c for c in containers if not wanted or c["service"] in wanted),
                  key=lambda c: c["name"])


def _top(client: EngineClient, project: str, args: argparse.Namespace) -> int:
    for container in _running(client, project, args.services):
        _, table = client.request("GET", f"/v1/containers/{container['id']}/top")
        print(container["name"])
        _table(table["titles"], table["processes"])
        print()
    return 0


def _port(client: EngineClient, project: str, args: argparse.Namespace) -> int:
    replicas = [c for c in _running(client, project, [args.service]) if not c.get("oneoff")]
    chosen = [c for c in replicas if c["number"] == args.index]
    if not chosen:
        raise StackError(f"service {args.service} has no running container number {args.index}")
    container = chosen[0]
    publishers = container.get("publishers", [])
    if args.private_port is None:
        for p in publishers:
            print(f"{p['url']}:{p['published_port']}->{p['target_port']}/{p['protocol']}")
        return 0
    for p in publishers:
        if p["target_port"] == args.private_port and p["protocol"] == args.protocol:
            print(f"{p['url']}:{p['published_port']}")
            return 0
    raise StackError(f"no port {args.private_port}/{args.protocol} published for container "
                     f"{container['name']}")


def _images(client: EngineClient, project: str, args: argparse.Namespace) -> int:
    _, rows = client.request("GET", f"/v1/projects/{project}/images",
                             query={"service": list(args.services)})
    if args.quiet:
        ids = dict.fromkeys(r["image_id"].split(":")[-1] for r in rows if r["image_id"])
        print("".join(f"{image_id}\n" for image_id in ids), end="")
    elif args.format == "json":
        print(json.dumps(rows))
    else:
        _table(("CONTAINER", "REPOSITORY", "TAG", "IMAGE ID", "SIZE"),
               [(r["container"], r["repository"] or "<none>", r["tag"] or "<none>",
                 r["image_id"].split(":")[-1][:12], _size(r["size"])) for r in rows])
    return 0


def _size(size: int | None) -> str:
    """Decimal units with three significant digits, as docker prints image sizes."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> None:
    lines = [list(map(str, header)), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


# --- wait, events -------------------------------------------------------------------------


def _wait(client: EngineClient, project: str, args: argparse.Namespace) -> int:
    code = 0
    exits = client.stream("POST", f"/v1/projects/{project}/wait",
                          {"services": list(args.services)})
    for event in exits:
        print(f'container "{event["name"]}" exited with status code {event["exit_code"]}',
              flush=True)
        code = int(event["exit_code"])
        if args.down_project:
            exits.close()  # the engine stops waiting for the others
            body = {"remove_orphans": True}
            if not print_progress(_down_lines(client.stream(
                    "POST", f"/v1/projects/{project}/down", body))):
                return 1
            break
    return code


def _down_lines(events: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """`down`'s progress in this module's words (its actions are the planner's changes)."""
    for event in events:
        if event.get("status") in ("warning", "planned"):
            continue
        yield event


def _events(client: EngineClient, project: str, args: argparse.Namespace) -> int:
    wanted = set(args.services)
    owners: dict[str, tuple[str, str] | None] = {}  # container id -> (project, service)

    def owner(event: dict[str, Any]) -> tuple[str, str] | None:
        if event.get("project"):
            return str(event["project"]), str(event.get("service", ""))
        container_id = str(event.get("id", ""))
        if container_id not in owners:
            _, containers = client.request("GET", "/v1/containers",
                                           query={"project": project, "all": True})
            owners.update({c["id"]: (project, c["service"]) for c in containers})
            owners.setdefault(container_id, None)
        return owners[container_id]

    for event in client.stream("GET", "/v1/events", query={"project": project}):
        found = owner(event)
        if found is None or found[0] != project or (wanted and found[1] not in wanted):
            continue
        print(_event_line(event, found[1], as_json=args.json), flush=True)
    return 0


def _event_line(event: dict[str, Any], service: str, *, as_json: bool) -> str:
    attributes = {"name": str(event.get("name", ""))} if event.get("name") else {}
    attributes.update({k: str(v) for k, v in (event.get("attributes") or {}).items()})
    if "exit_code" in event:
        attributes["exitCode"] = str(event["exit_code"])
    when = _timestamp(event.get("time"))
    if as_json:
        return json.dumps({"time": when.isoformat() if when else event.get("time"),
                           "type": event.get("type", "container"), "service": service,
                           "id": event.get("id", ""), "action": event.get("action", ""),
                           "attributes": attributes})
    stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f") if when else str(event.get("time", ""))
    details = ", ".join(f"{k}={v}" for k, v in attributes.items())
    return (f"{stamp} {event.get('type', 'container')} {event.get('action', '')} "
            f"{event.get('id', '')} ({details})")


def _timestamp(value: Any) -> Any:
    """An event's time (Unix seconds or RFC 3339) as a local datetime; None if unreadable."""
    from datetime import datetime

    if isinstance(value, int | float):
        return datetime.fromtimestamp(value).astimezone()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone()
        except ValueError:
            return None
    return None
