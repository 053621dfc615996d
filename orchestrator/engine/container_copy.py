"""`stack cp` in the engine: files in and out of a running container, as tar streams.

The copy must see the container's own mounts (volumes, tmpfs), which only a
process in its mount namespace does — and a thread of the engine cannot enter
one (a multi-threaded process may not setns into a mount namespace). So the
copy runs as the container's own `tar`, started through the runtime's exec
(which forks into the container's namespaces), its archive carried as frames
on an upgraded connection (see raw_frames.py). A container without `tar` (or
`test`, used to look at the destination) cannot be copied to or from: the
error says so.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Awaitable, Callable

import trio

from orchestrator.engine import raw_frames
from orchestrator.runtime.containers.runtime import Container, ContainerRuntime
from orchestrator.runtime.nurseries import open_nursery
from orchestrator.spec.errors import StackError

Send = Callable[[bytes], Awaitable[None]]
TOOL_MISSING = 127


def tar_create_argv(path: str, follow_links: bool) -> list[str]:
    """tar that writes `path` to stdout: as its own name, or its contents for `dir/.`."""
    argv = ["tar", "-c", "-f", "-"] + (["-h"] if follow_links else [])
    if path.endswith("/.") or path.rstrip("/") == "":
        return [*argv, "-C", path[:-2] if path.endswith("/.") else "/", "."]
    path = path.rstrip("/")
    # `./name`, so that a name starting with '-' is never read as an option.
    return [*argv, "-C", posixpath.dirname(path) or "/", "./" + posixpath.basename(path)]


def tar_extract_argv(directory: str, keep_owner: bool) -> list[str]:
    """tar that unpacks stdin into `directory`; files belong to root unless `keep_owner`."""
    owner = ["--numeric-owner"] if keep_owner else ["-o"]
    return ["tar", "-x", "-f", "-", *owner, "-C", directory]


class ContainerCopy:
    def __init__(self, runtime: ContainerRuntime, container: Container):
        self.runtime = runtime
        self.container = container

    async def path_kind(self, path: str) -> str:
        """`directory`, `other` (a file, a device...) or `missing`, as the container sees it."""
        if await self._quiet(["test", "-d", path]) == 0:
            return "directory"
        return "other" if await self._quiet(["test", "-e", path]) == 0 else "missing"

    async def send_archive(self, path: str, follow_links: bool, send: Send) -> None:
        """Frames out: the tar of `path` (stdout), tar's complaints (stderr), its exit code."""
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        errors = bytearray()
        code = TOOL_MISSING

        async def run() -> None:
            nonlocal code
            try:
                code = await self._exec(tar_create_argv(path, follow_links),
                                        (null, out_write, err_write))
            except StackError as error:
                errors.extend(str(error).encode())
            finally:
                for fd in (null, out_write, err_write):
                    os.close(fd)

        async with open_nursery() as nursery:
            nursery.start_soon(run)
            nursery.start_soon(_collect, err_read, errors)
            async with trio.lowlevel.FdStream(out_read) as archive:
                while chunk := await archive.receive_some(raw_frames.MAX_PAYLOAD):
                    await send(raw_frames.encode(raw_frames.STDOUT, chunk))
        await _finish(send, code, errors)

    async def receive_archive(self, directory: str, keep_owner: bool,
                              stream: trio.abc.ReceiveStream, send: Send) -> None:
        """Frames in (stdin: a tar, ended by an empty frame) unpacked into `directory`."""
        in_read, in_write = os.pipe()
        err_read, err_write = os.pipe()
        errors = bytearray()
        code = TOOL_MISSING

        async def run() -> None:
            nonlocal code
            try:
                code = await self._exec(tar_extract_argv(directory, keep_owner),
                                        (in_read, err_write, err_write))
            except StackError as error:
                errors.extend(str(error).encode())
            finally:
                # Only now can writes into a tar that died fail (EPIPE) instead of waiting.
                os.close(in_read)
                os.close(err_write)

        async with open_nursery() as nursery:
            nursery.start_soon(run)
            nursery.start_soon(_collect, err_read, errors)
            await _feed(stream, in_write)
        await _finish(send, code, errors)

    async def _quiet(self, argv: list[str]) -> int:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            return await self._exec(argv, (null, null, null))
        finally:
            os.close(null)

    async def _exec(self, argv: list[str], stdio: tuple[int, int, int]) -> int:
        # As root: a copy reads and writes what the user names, whoever the service runs as.
        process = self.runtime.exec_process(self.container, argv, user=(0, 0), cwd="/")
        try:
            return await self.runtime.exec(self.container.id, process, stdio)
        except StackError as error:
            if f'exec: "{argv[0]}"' in str(error):
                raise StackError(
                    f"container {self.container.name} has no {argv[0]} program, and stack cp "
                    f"copies with the container's own tar and test",
                    hint="use an image that has them (busybox has both)",
                ) from None
            raise


async def _collect(fd: int, into: bytearray) -> None:
    async with trio.lowlevel.FdStream(fd) as stream:
        while chunk := await stream.receive_some():
            if len(into) < 64 * 1024:  # a message, not a log: keep its start
                into.extend(chunk)


async def _feed(stream: trio.abc.ReceiveStream, fd: int) -> None:
    """Client's stdin frames into the pipe to tar, until the empty frame (or the client goes).

    Once tar has gone, what is left is read and dropped: the client sends all of
    its archive before it reads the answer, and must be able to.
    """
    decoder = raw_frames.FrameDecoder()
    async with trio.lowlevel.FdStream(fd) as pipe:
        writable = True
        while data := await stream.receive_some():
            for kind, payload in decoder.feed(data):
                if kind != raw_frames.STDIN:
                    continue
                if not payload:
                    return
                if writable:
                    try:
                        await pipe.send_all(payload)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        writable = False


async def _finish(send: Send, code: int, errors: bytearray) -> None:
    if errors:
        await send(raw_frames.encode(raw_frames.STDERR, bytes(errors)))
    await send(raw_frames.exit_frame(code))
