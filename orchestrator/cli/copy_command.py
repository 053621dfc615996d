"""`stack cp`: files between the host and a service's containers, as docker cp copies them.

The engine runs the container's own tar (see engine/container_copy.py); this
side makes or unpacks the other end of the archive with `tarfile`, streaming,
over an upgraded connection that carries frames (engine/raw_frames.py). Where
the copy lands follows docker cp: into DEST when it is a directory, as DEST
otherwise, and `SRC/.` copies a directory's contents.
"""

from __future__ import annotations

import argparse
import io
import os
import posixpath
import socket
import sys
import tarfile
from typing import Any

from orchestrator.cli.engine_client import EngineClient, EngineError
from orchestrator.engine import raw_frames
from orchestrator.spec.errors import StackError

CHUNK = 256 * 1024


def run_copy(client: EngineClient, project: str, services: set[str],
             args: argparse.Namespace) -> int:
    source, destination = _endpoint(args.source), _endpoint(args.destination)
    if (source[0] is None) == (destination[0] is None):
        raise StackError("stack cp copies between the host and a container: one of SRC and "
                         "DEST must be SERVICE:PATH or CONTAINER:PATH, the other a host path")
    if source[0] is not None:
        container = _containers(client, project, services, source[0], args.index, every=False)
        _copy_out(client, container[0], source[1], args.destination, args)
        return 0
    assert destination[0] is not None
    data = sys.stdin.buffer.read() if args.source == "-" else None
    for container in _containers(client, project, services, destination[0], args.index,
                                 every=True):
        _copy_in(client, container, args.source, destination[1], args, data)
    return 0


def _endpoint(argument: str) -> tuple[str | None, str]:
    """(service or container, path in it), or (None, host path)."""
    if argument == "-" or argument.startswith(("/", ".", "~")):
        return None, argument
    name, colon, path = argument.partition(":")
    if not colon or not name:
        return None, argument
    return name, path or "/"


def _containers(client: EngineClient, project: str, services: set[str], name: str,
                index: int | None, *, every: bool) -> list[dict[str, Any]]:
    """A service's running containers (all of them to copy to, the first to copy from), or
    the container `name` names."""
    if name not in services:
        try:
            _, container = client.request("GET", f"/v1/containers/{name}")
        except EngineError as error:
            if error.status == 404:
                raise StackError(f"no such service or container: {name}") from None
            raise
        return [container]
    _, running = client.request("GET", "/v1/containers", query={"project": project})
    replicas = sorted((c for c in running if c["service"] == name and not c.get("oneoff")),
                      key=lambda c: c["number"])
    if index is not None:
        replicas = [c for c in replicas if c["number"] == index]
    if not replicas:
        which = f" number {index}" if index is not None else ""
        raise StackError(f"service {name} has no running container{which}",
                         hint="start it first: stack cp uses the container's own tar")
    return replicas if every else replicas[:1]


def _kind(client: EngineClient, container: dict[str, Any], path: str) -> str:
    _, answer = client.request("GET", f"/v1/containers/{container['id']}/archive/stat",
                               query={"path": path})
    return str(answer["kind"])


# --- out of a container -------------------------------------------------------------------


def _copy_out(client: EngineClient, container: dict[str, Any], path: str, destination: str,
              args: argparse.Namespace) -> None:
    kind = _kind(client, container, path)
    if kind == "missing":
        raise StackError(f"could not find {path} in container {container['name']}")
    contents = path.endswith("/.") or path.rstrip("/") == ""
    if destination != "-":
        target, rename = _landing(path, kind, destination, contents)
    sock = client.upgrade("GET", f"/v1/containers/{container['id']}/archive",
                          query={"path": path, "follow_links": args.follow_link})
    with sock, _FrameReader(sock) as reader:
        if destination == "-":
            while chunk := reader.read(CHUNK):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        else:
            try:
                with tarfile.open(fileobj=reader, mode="r|") as archive:
                    archive.extractall(target, filter=_unpacking(rename, args.archive),
                                       numeric_owner=args.archive)
            except tarfile.TarError as error:
                reader.drain()
                if reader.exit_code in (None, 0):
                    raise StackError(f"copying from {container['name']}: {error}") from None
        reader.drain()
    _check(reader, f"copying from {container['name']}")


def _landing(path: str, kind: str, destination: str, contents: bool) -> tuple[str, str | None]:
    """Where on the host the archive is unpacked, and the name its top entry takes there."""
    if contents or os.path.isdir(destination):
        if os.path.exists(destination) and not os.path.isdir(destination):
            raise StackError(f"cannot copy a directory to the file {destination}")
        if not os.path.exists(destination):
            os.mkdir(destination)
        return destination, None
    if destination.endswith("/"):
        raise StackError(f"destination directory {destination} does not exist")
    if kind == "directory" and os.path.exists(destination):
        raise StackError(f"cannot copy a directory to the file {destination}")
    parent = os.path.dirname(os.path.abspath(destination))
    if not os.path.isdir(parent):
        raise StackError(f"destination directory {parent} does not exist")
    return parent, os.path.basename(destination)


def _unpacking(rename: str | None, keep_owner: bool) -> Any:
    """tarfile's `tar` filter (nothing lands outside the target), after renaming the top
    entry; files belong to whoever copies unless `keep_owner`."""

    def renamed(name: str) -> str:
        name = name[2:] if name.startswith("./") else name
        if rename is None or name in ("", "."):
            return name or "."
        _, slash, rest = name.partition("/")
        return rename + slash + rest

    def apply(member: tarfile.TarInfo, target: str) -> tarfile.TarInfo:
        changes: dict[str, Any] = {"name": renamed(member.name)}
        if member.islnk():
            changes["linkname"] = renamed(member.linkname)
        if not keep_owner:
            changes.update(uid=os.getuid(), gid=os.getgid(), uname="", gname="")
        return tarfile.tar_filter(member.replace(**changes, deep=False), target)

    return apply


class _FrameReader(io.RawIOBase):
    """The archive's bytes out of stdout frames; stderr and the exit code kept aside."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = raw_frames.FrameDecoder()
        self.pending = bytearray()
        self.errors = bytearray()
        self.exit_code: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending and self.exit_code is None:
            self._receive()
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        del self.pending[:size]
        return size

    def drain(self) -> None:
        """Read to the exit frame (what tarfile did not need is dropped)."""
        while self.exit_code is None:
            self.pending.clear()
            self._receive()
        self.pending.clear()

    def _receive(self) -> None:
        data = self.sock.recv(CHUNK)
        if not data:
            raise StackError("the engine closed the copy before it was done")
        for kind, payload in self.decoder.feed(data):
            if kind == raw_frames.STDOUT:
                self.pending += payload
            elif kind == raw_frames.STDERR:
                self.errors += payload
            elif kind == raw_frames.EXIT:
                self.exit_code = raw_frames.exit_code_of(payload)


class _FrameWriter(io.RawIOBase):
    """What tarfile writes, sent as stdin frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if data:
            self.sock.sendall(raw_frames.encode(raw_frames.STDIN, bytes(data)))
        return len(data)


def _check(reader: _FrameReader, what: str) -> None:
    if reader.exit_code != 0:
        message = reader.errors.decode(errors="replace").strip().replace("\n", "; ")
        raise StackError(f"{what}: {message or f'tar exited with code {reader.exit_code}'}")


# --- into a container ---------------------------------------------------------------------


def _copy_in(client: EngineClient, container: dict[str, Any], source: str, path: str,
             args: argparse.Namespace, data: bytes | None) -> None:
    kind = _kind(client, container, path)
    if data is not None:
        if kind != "directory":
            raise StackError(f"{path} in container {container['name']} is not a directory, "
                             "and a tar from stdin is unpacked into one")
        directory, name = path, None
    else:
        if not os.path.lexists(source):
            raise StackError(f"no such file or directory: {source}")
        contents = source.endswith("/.")
        if kind == "directory":
            name = "." if contents else os.path.basename(source.rstrip("/")) or "."
            directory = path
        else:
            if path.endswith("/"):
                raise StackError(f"directory {path} does not exist in container "
                                 f"{container['name']}")
            if os.path.isdir(source) and kind == "other":
                raise StackError(f"cannot copy a directory to the file {path} in container "
                                 f"{container['name']}")
            directory = posixpath.dirname(path.rstrip("/")) or "/"
            name = posixpath.basename(path.rstrip("/"))
    sock = client.upgrade("PUT", f"/v1/containers/{container['id']}/archive",
                          query={"path": directory, "keep_owner": args.archive})
    with sock, _FrameReader(sock) as reader:
        writer = _FrameWriter(sock)
        if data is not None:
            writer.write(data)
        else:
            root = (source[:-2] or "/") if source.endswith("/.") else source
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT,
                              dereference=args.follow_link) as archive:
                archive.add(root, arcname=name)
        sock.sendall(raw_frames.encode(raw_frames.STDIN))  # the end of the archive
        reader.drain()
    _check(reader, f"copying to {container['name']}")
