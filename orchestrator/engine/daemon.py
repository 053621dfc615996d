"""stackd: one engine per state root, serving the API on a unix socket.

Started by the CLI when nobody answers on the socket (detached, its output in
`<state root>/stackd.log`), or by an init system. A lock in the state root
keeps a second engine from starting. SIGTERM, SIGINT or `POST /v1/engine/stop`
stop serving; containers keep running, and the next engine adopts them.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
from pathlib import Path

import trio

from orchestrator.engine.api import build_router
from orchestrator.engine.engine import Engine
from orchestrator.engine.http import serve
from orchestrator.runtime.nurseries import open_nursery

DEFAULT_ROOT = "/var/lib/stack"
DEFAULT_SOCKET = "/run/stack/stack.sock"


def state_root() -> Path:
    return Path(os.environ.get("STACK_ROOT") or DEFAULT_ROOT)


def socket_path() -> Path:
    return Path(os.environ.get("STACK_SOCKET") or DEFAULT_SOCKET)


async def run_engine(root: Path, socket: Path) -> None:
    engine = Engine(root)
    stopping = trio.Event()
    async with open_nursery() as nursery:
        await nursery.start(engine.run)
        server = await nursery.start(serve, socket, build_router(engine, stopping.set))

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    stopping.set()

        async def on_dump_request() -> None:
            with trio.open_signal_receiver(signal.SIGUSR1) as signals:
                async for _ in signals:
                    print(describe_tasks(), file=sys.stderr, flush=True)

        nursery.start_soon(on_signals)
        nursery.start_soon(on_dump_request)
        await stopping.wait()
        # Answer the request that asked us to stop, let others finish, then go; the
        # containers stay with the keeper.
        server.stop()
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    engine.networks.stale_links.flush()  # links a release left for later: gone before we are


def describe_tasks() -> str:
    """Every task of the engine and where it waits, innermost call last: what
    `kill -USR1 <stackd>` writes into stackd.log when an operation seems stuck."""
    lines = [f"stackd {os.getpid()}: tasks"]

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        lines.append(f"{'  ' * depth}- {task.name}")
        for place in _awaiting(task.coro):
            lines.append(f"{'  ' * depth}    at {place}")
        for nursery in task.child_nurseries:
            for child in sorted(nursery.child_tasks, key=lambda t: t.name):
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)
    return "\n".join(lines)


def _awaiting(coro: object) -> list[str]:
    places = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) \
            or getattr(coro, "ag_frame", None)
        if frame is not None:
            places.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) \
            or getattr(coro, "ag_await", None)
    return places


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stackd", description="the stack engine")
    parser.add_argument("--root", type=Path, default=None, help="state root (STACK_ROOT)")
    parser.add_argument("--socket", type=Path, default=None, help="API socket (STACK_SOCKET)")
    args = parser.parse_args(argv)
    root = args.root or state_root()
    socket = args.socket or socket_path()
    root.mkdir(parents=True, exist_ok=True)
    socket.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(root / "stackd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"stackd: another engine serves {root}", file=sys.stderr)
        return 1
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    try:
        trio.run(run_engine, root, socket)
    finally:
        socket.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
