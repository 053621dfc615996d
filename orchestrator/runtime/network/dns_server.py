"""The DNS server containers use: UDP and TCP on each bridge's gateway address.

Names of ours are answered by the `DnsAnswerer`; other names are relayed to
upstream resolvers (the host's, from resolv.conf, or a container's own `dns:`).
The server runs in the engine's nursery (`await nursery.start(server.run)`)
and its listening addresses follow the bridges: `listen_on` when one appears,
`stop_listening` when it goes.

A container must never hang on DNS: the whole forward has a budget of about a
second, and a query gets SERVFAIL at once when there is no upstream or every
upstream refuses (an ICMP port unreachable shows as ConnectionRefusedError on
a connected UDP socket). Upstreams are asked in turn, each given a head start
before the next joins, so a slow first resolver still answers within budget.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from orchestrator.runtime.network.dns_answer import (
    DNS_PORT,
    Answer,
    DnsAnswerer,
    Forward,
    Nameserver,
    parse_nameserver,
)
from orchestrator.spec.errors import StackError

RESOLV_CONF = "/etc/resolv.conf"
FORWARD_BUDGET = 1.0  # seconds for a whole forward, every upstream included
UPSTREAM_HEAD_START = 0.3  # seconds one upstream has before the next is asked too
TCP_IDLE_TIMEOUT = 10.0  # seconds a client's TCP connection may stay silent
MAX_FORWARDS = 256  # forwards in flight per address; beyond that, SERVFAIL at once
MAX_TCP_CONNECTIONS = 64  # per address; a client over the limit is closed at once
_MAX_MESSAGE = 65535
# An upstream answering these is treated as no answer, so the next one is tried.
_RCODE_SERVFAIL, _RCODE_REFUSED = 2, 5


@dataclass
class _Listener:
    scope: trio.CancelScope
    done: trio.Event = field(default_factory=trio.Event)
    forwards: int = 0
    connections: int = 0


class DnsServer:
    """Answers containers' DNS queries on a changing set of addresses."""

    def __init__(self, answerer: DnsAnswerer, *, port: int = DNS_PORT,
                 upstreams: Sequence[str] | None = None,
                 resolv_conf: str = RESOLV_CONF) -> None:
        """`upstreams` (e.g. `["192.0.2.53", "127.0.0.1:5353"]`) replaces the host's resolvers,
        read from `resolv_conf` again whenever that file changes."""
        self._answerer = answerer
        self._port = port
        self._fixed_upstreams = (None if upstreams is None
                                 else tuple(parse_nameserver(u) for u in upstreams))
        self._resolv_conf = resolv_conf
        self._resolv_stamp: tuple[int, int, int] | None = None
        self._host_upstreams: tuple[Nameserver, ...] = ()
        self._listeners: dict[str, _Listener] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def addresses(self) -> frozenset[str]:
        return frozenset(self._listeners)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; the listeners live (and end) inside this task's nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def listen_on(self, address: str) -> None:
        """Answer on `address` (UDP and TCP) from now on; nothing happens if we already do.

        Binding happens here, so a taken port or a missing address is the caller's
        error; with port 53 busy on that address the message says so.
        """
        if self._nursery is None:
            raise RuntimeError("DnsServer.listen_on before run() started")
        while (current := self._listeners.get(address)) is not None:
            if not current.scope.cancel_called:
                return
            await current.done.wait()  # still closing: its port is not free yet
        # Registered before binding, so a concurrent call for the same address returns at once.
        listener = _Listener(trio.CancelScope())
        self._listeners[address] = listener
        try:
            udp, tcp = await self._bind(address)
        except BaseException:
            del self._listeners[address]
            listener.done.set()
            raise
        self._nursery.start_soon(self._serve_address, address, listener, udp, tcp)

    async def stop_listening(self, address: str) -> None:
        """Stop answering on `address`; the port is free again when this returns."""
        listener = self._listeners.get(address)
        if listener is None:
            return
        listener.scope.cancel()
        await listener.done.wait()

    async def _bind(self, address: str) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        udp = trio.socket.socket(family, socket.SOCK_DGRAM)
        tcp = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            # A restarted engine must get the TCP port back despite old TIME_WAIT connections.
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for sock in (udp, tcp):
                try:
                    await sock.bind((address, self._port))
                except OSError as error:
                    if error.errno != errno.EADDRINUSE:
                        raise
                    raise StackError(
                        f"cannot serve DNS on {address}:{self._port}: the port is taken",
                        hint="stop the other DNS server listening on that address") from None
            tcp.listen(128)
        except BaseException:
            udp.close()
            tcp.close()
            raise
        return udp, tcp

    async def _serve_address(self, address: str, listener: _Listener,
                             udp: trio.socket.SocketType, tcp: trio.socket.SocketType) -> None:
        try:
            with listener.scope, udp, tcp:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve_udp, udp, listener, nursery)
                    nursery.start_soon(trio.serve_listeners,
                                       lambda stream: self._serve_tcp(stream, listener),
                                       [trio.SocketListener(tcp)])
        finally:
            if self._listeners.get(address) is listener:
                del self._listeners[address]
            listener.done.set()

    # -- UDP -----------------------------------------------------------------------------------

    async def _serve_udp(self, sock: trio.socket.SocketType, listener: _Listener,
                         nursery: trio.Nursery) -> None:
        while True:
            try:
                query, client = await sock.recvfrom(_MAX_MESSAGE)
            except ConnectionError:  # an ICMP error about an earlier reply: not for us to fix
                continue
            decision = self._answerer.decide(query, client[0])
            if isinstance(decision, Answer):
                await _send_udp(sock, decision.wire, client)
            elif isinstance(decision, Forward):
                if listener.forwards >= MAX_FORWARDS:
                    await _send_udp(sock, decision.servfail(), client)
                else:
                    listener.forwards += 1
                    nursery.start_soon(self._forward_udp, sock, decision, client, listener)

    async def _forward_udp(self, sock: trio.socket.SocketType, decision: Forward,
                           client: tuple[str, int], listener: _Listener) -> None:
        try:
            reply = await self._forward(decision, tcp=False)
            await _send_udp(sock, reply if reply is not None else decision.servfail(), client)
        finally:
            listener.forwards -= 1

    # -- TCP -------------------------------------------------------------------------------------

    async def _serve_tcp(self, stream: trio.SocketStream, listener: _Listener) -> None:
        if listener.connections >= MAX_TCP_CONNECTIONS:
            await stream.aclose()
            return
        listener.connections += 1
        try:
            async with stream:
                client = stream.socket.getpeername()[0]
                reader = _MessageReader(stream)
                while True:
                    # RFC 7766: several queries per connection, answered in order.
                    query = None
                    with trio.move_on_after(TCP_IDLE_TIMEOUT):
                        query = await reader.next_message()
                    if query is None:
                        return  # closed by the client, or idle too long
                    reply = await self._reply_tcp(query, client)
                    if reply is None:
                        return
                    await stream.send_all(len(reply).to_bytes(2, "big") + reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            listener.connections -= 1

    async def _reply_tcp(self, query: bytes, client: str) -> bytes | None:
        decision = self._answerer.decide(query, client, tcp=True)
        if isinstance(decision, Answer):
            return decision.wire
        if isinstance(decision, Forward):
            reply = await self._forward(decision, tcp=True)
            return reply if reply is not None else decision.servfail()
        return None  # a message we cannot answer: the stream cannot be trusted either

    # -- forwarding --------------------------------------------------------------------------------

    async def _forward(self, decision: Forward, *, tcp: bool) -> bytes | None:
        """The first good upstream reply within the budget, or None."""
        upstreams = decision.nameservers or self._upstreams()
        ask = _ask_tcp if tcp else _ask_udp
        reply: bytes | None = None

        async def attempt(upstream: Nameserver, failed: trio.Event) -> None:
            nonlocal reply
            try:
                answer = await ask(upstream, decision.query)
            except (OSError, trio.BrokenResourceError):  # refused, unreachable, reset
                answer = None
            if answer is not None and answer[3] & 0x0F not in (_RCODE_SERVFAIL, _RCODE_REFUSED):
                reply = answer
                nursery.cancel_scope.cancel()
            failed.set()

        with trio.move_on_after(FORWARD_BUDGET):
            async with trio.open_nursery() as nursery:
                for upstream in upstreams:
                    failed = trio.Event()
                    nursery.start_soon(attempt, upstream, failed)
                    with trio.move_on_after(UPSTREAM_HEAD_START):
                        await failed.wait()
        return reply

    def _upstreams(self) -> tuple[Nameserver, ...]:
        if self._fixed_upstreams is not None:
            return self._fixed_upstreams
        # A stat per forward is cheap next to the network round trip, and it lets
        # a DHCP or VPN change of the host's resolvers take effect at once.
        try:
            info = os.stat(self._resolv_conf)
            stamp = (info.st_mtime_ns, info.st_ino, info.st_size)
            if stamp != self._resolv_stamp:
                with open(self._resolv_conf, encoding="utf-8", errors="replace") as file:
                    self._host_upstreams = nameservers_of_resolv_conf(file.read())
                self._resolv_stamp = stamp
        except OSError:  # no resolv.conf (or replaced right now): no upstream, SERVFAIL
            self._resolv_stamp, self._host_upstreams = None, ()
        return self._host_upstreams


def nameservers_of_resolv_conf(text: str) -> tuple[Nameserver, ...]:
    """The `nameserver` lines of a resolv.conf, in order; unreadable ones are skipped."""
    found: list[Nameserver] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                found.append((parse_nameserver(words[1].split("%", 1)[0])[0], DNS_PORT))
            except StackError:
                continue
    return tuple(found)


async def _send_udp(sock: trio.socket.SocketType, wire: bytes, client: tuple[str, int]) -> None:
    # The client went away or is filtered: UDP has no one to tell.
    with contextlib.suppress(OSError):
        await sock.sendto(wire, client)


async def _ask_udp(upstream: Nameserver, query: bytes) -> bytes | None:
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        # Connected, so the kernel only passes replies from the upstream, and a
        # refusal (ICMP port unreachable) arrives as ConnectionRefusedError.
        await sock.connect(upstream)
        await sock.send(query)
        while True:
            reply = await sock.recv(_MAX_MESSAGE)
            if _answers(reply, query):
                return reply


async def _ask_tcp(upstream: Nameserver, query: bytes) -> bytes | None:
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect(upstream)
    except BaseException:
        sock.close()
        raise
    async with trio.SocketStream(sock) as stream:
        await stream.send_all(len(query).to_bytes(2, "big") + query)
        reply = await _MessageReader(stream).next_message()
    return reply if reply is not None and _answers(reply, query) else None


def _answers(reply: bytes, query: bytes) -> bool:
    return len(reply) >= 12 and reply[:2] == query[:2] and bool(reply[2] & 0x80)


class _MessageReader:
    """Length-prefixed DNS messages from a stream (RFC 1035 section 4.2.2)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next_message(self) -> bytes | None:
        """The next message, or None when the stream ends (mid-message included)."""
        if not await self._fill(2):
            return None
        size = int.from_bytes(self._buffer[:2], "big")
        if not await self._fill(2 + size):
            return None
        message = bytes(self._buffer[2:2 + size])
        del self._buffer[:2 + size]
        return message

    async def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            chunk = await self._stream.receive_some(_MAX_MESSAGE)
            if not chunk:
                return False
            self._buffer += chunk
        return True
