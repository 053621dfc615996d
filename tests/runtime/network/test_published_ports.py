"""Published ports answer on the host; internal networks reach nothing outside."""

from __future__ import annotations

import socket

import pytest
import trio
from support.containers import ServiceRunner
from support.host_network import HTTP_SERVICE, fetch, free_port, host_address

from orchestrator.runtime.containers.state import container_ids
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.trio

UDP_ECHO = """
    services:
      echo:
        x-stack: {rootfs: /}
        ports: ["PORT:9999/udp"]
        command:
          - python3
          - -c
          - |
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", 9999))
            while True:
                data, peer = s.recvfrom(100)
                s.sendto(b"echo:" + data, peer)
"""


async def test_published_tcp_port_answers_on_loopback_and_host_address(
    netrunner: ServiceRunner,
):
    port = free_port()
    await netrunner.start(HTTP_SERVICE.format(ports=f"{port}:8080"), "web")
    assert await fetch(f"http://127.0.0.1:{port}/") == "published\n"
    assert await fetch(f"http://{host_address()}:{port}/") == "published\n"


async def test_ephemeral_host_port_is_chosen_and_reported(netrunner: ServiceRunner):
    web = await netrunner.start(HTTP_SERVICE.format(ports="8080"), "web")
    endpoint = netrunner.networks.get(f"{netrunner.project}_default").endpoints[web.id]
    [published] = endpoint.ports
    assert published["container_port"] == 8080
    assert 32768 <= published["host_port"] <= 60999
    assert await fetch(f"http://127.0.0.1:{published['host_port']}/") == "published\n"


async def test_published_udp_port_answers(netrunner: ServiceRunner):
    port = free_port()
    await netrunner.start(UDP_ECHO.replace("PORT", str(port)), "echo")
    for address in ("127.0.0.1", host_address()):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(0.3)
            for _ in range(30):
                client.sendto(b"hi", (address, port))
                try:
                    assert client.recvfrom(100)[0] == b"echo:hi"
                    break
                except TimeoutError:
                    await trio.sleep(0.05)
            else:
                pytest.fail(f"no UDP answer on {address}:{port}")


async def test_container_reaches_a_published_port_through_the_host_address(
    netrunner: ServiceRunner,
):
    port = free_port()
    stack = HTTP_SERVICE.format(ports=f"{port}:8080") + f"""
      client:
        image: busybox
        command: >-
          sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do
          wget -qO- http://{host_address()}:{port}/ && exit 0; sleep 0.2; done; exit 1'
    """
    await netrunner.start(stack, "web")
    ran = await netrunner.run(stack, "client")
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout == "published\n"


async def test_port_taken_by_another_process_is_one_error_and_creates_nothing(
    netrunner: ServiceRunner,
):
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        before = container_ids(netrunner.runtime.root)
        with pytest.raises(StackError) as raised:
            await netrunner.start(HTTP_SERVICE.format(ports=f"{port}:8080"), "web")
    message = str(raised.value)
    assert f"tcp port {port} is already in use by python" in message
    assert "\n" not in message
    assert container_ids(netrunner.runtime.root) == before
    assert all(not n.endpoints for n in netrunner.networks.list())


async def test_port_published_twice_by_us_is_refused(netrunner: ServiceRunner):
    port = free_port()
    await netrunner.start(HTTP_SERVICE.format(ports=f"{port}:8080"), "web", number=1)
    with pytest.raises(StackError, match=f"already in use by container {netrunner.project}-web-1"):
        await netrunner.start(HTTP_SERVICE.format(ports=f"{port}:8080"), "web", number=2)


async def test_internal_network_cannot_reach_a_listener_outside(netrunner: ServiceRunner):
    listener = trio.socket.socket()
    await listener.bind((host_address(), 0))
    listener.listen()
    port = listener.getsockname()[1]

    async def greet() -> None:  # say hello and hang up, so a client that got in ends
        while True:
            connection, _ = await listener.accept()
            with connection:
                await connection.send(b"hello\n")

    target = f"{host_address()} {port}"
    stack = f"""
    services:
      inside:
        image: busybox
        networks: [sealed]
        command: sh -c 'nc -w 2 {target} </dev/null || echo blocked'
      outside:
        image: busybox
        command: sh -c 'nc -w 2 {target} </dev/null || echo blocked'
    networks:
      sealed: {{internal: true}}
    """
    with listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(greet)
            inside = await netrunner.run(stack, "inside")
            outside = await netrunner.run(stack, "outside")
            nursery.cancel_scope.cancel()
    assert inside.stdout.strip() == "blocked"
    assert outside.stdout.strip() == "hello"
