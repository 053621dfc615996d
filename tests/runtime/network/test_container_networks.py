"""Services reach each other by name on the networks they share, and only there."""

from __future__ import annotations

import time

import pytest
import trio
from support.containers import ServiceRunner

pytestmark = pytest.mark.trio

WEB = """
    services:
      web:
        image: busybox
        command: >-
          sh -c 'mkdir -p /www && echo hello-from-web > /www/index.html &&
          httpd -f -p 8080 -h /www'
"""


async def wait_running(runner: ServiceRunner, container_id: str) -> None:
    with trio.fail_after(5):
        while runner.runtime.get(container_id).state.status != "running":
            await trio.sleep(0.01)


async def test_services_on_one_network_talk_tcp_by_name(netrunner: ServiceRunner):
    stack = WEB + """
      client:
        image: busybox
        command: >-
          sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do
          wget -qO- http://web:8080/ && exit 0; sleep 0.2; done; exit 1'
    """
    await netrunner.start(stack, "web")
    ran = await netrunner.run(stack, "client")
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout == "hello-from-web\n"


async def test_services_talk_udp_by_name(netrunner: ServiceRunner):
    stack = """
    services:
      echo:
        x-stack: {rootfs: /}
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
      client:
        x-stack: {rootfs: /}
        command:
          - python3
          - -c
          - |
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.3)
            for attempt in range(20):
                s.sendto(b"ping", ("echo", 9999))
                try:
                    print(s.recvfrom(100)[0].decode())
                    break
                except TimeoutError:
                    continue
    """
    await netrunner.start(stack, "echo")
    ran = await netrunner.run(stack, "client")
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout == "echo:ping\n"


async def test_service_on_another_network_neither_resolves_nor_reaches(netrunner: ServiceRunner):
    stack = """
    services:
      web:
        image: busybox
        networks: [front]
        command: sh -c 'mkdir -p /www && echo hi > /www/index.html && httpd -f -p 8080 -h /www'
      outsider:
        image: busybox
        networks: [back]
        command: >-
          sh -c 'nslookup web || echo no-name;
          wget -qO- -T 2 http://$$WEB_ADDRESS:8080/ || echo no-route'
        environment: {WEB_ADDRESS: "${WEB_ADDRESS:-}"}
    networks:
      front: {}
      back: {}
    """
    web = await netrunner.start(stack, "web")
    await wait_running(netrunner, web.id)
    web_address = netrunner.networks.get(f"{netrunner.project}_front").endpoints[web.id].address
    ran = await netrunner.run(stack.replace("${WEB_ADDRESS:-}", web_address), "outsider")
    assert "no-name" in ran.stdout
    assert "no-route" in ran.stdout
    assert "hi" not in ran.stdout.split()


async def test_alias_and_three_replicas_resolve(netrunner: ServiceRunner):
    stack = """
    services:
      web:
        image: busybox
        command: sleep 60
        networks:
          default: {aliases: [www.internal]}
      client:
        image: busybox
        command: sh -c 'nslookup web; nslookup www.internal'
    """
    replicas = [await netrunner.start(stack, "web", number=n) for n in (1, 2, 3)]
    addresses = {
        netrunner.networks.get(f"{netrunner.project}_default").endpoints[c.id].address
        for c in replicas
    }
    ran = await netrunner.run(stack, "client")
    assert ran.exit_code == 0, ran.stderr
    found = {word for word in ran.stdout.split() if word.count(".") == 3 and word[0].isdigit()}
    assert addresses <= found


async def test_unknown_name_fails_fast(netrunner: ServiceRunner):
    stack = """
    services:
      client:
        image: busybox
        command: sh -c 'nslookup nosuch.example; echo done'
    """
    began = time.monotonic()
    ran = await netrunner.run(stack, "client")
    assert time.monotonic() - began < 3
    assert "done" in ran.stdout
    assert "nosuch.example" not in [w for w in ran.stdout.split() if w[0].isdigit()]


async def test_two_stacks_with_the_same_service_names_do_not_see_each_other(
    netrunner: ServiceRunner, container_root, tmp_path
):
    stack = WEB + """
      client:
        image: busybox
        command: sh -c 'nslookup web | grep -A1 "Name:" | grep Address'
    """
    first = await netrunner.start(stack, "web")
    other = ServiceRunner(container_root, tmp_path / "other", project=netrunner.project + "b",
                          networks=netrunner.networks)
    (tmp_path / "other").mkdir()
    try:
        second = await other.start(stack, "web")
        ran = await other.run(stack, "client")
        mine = other.networks.get(f"{other.project}_default").endpoints[second.id].address
        theirs = netrunner.networks.get(
            f"{netrunner.project}_default").endpoints[first.id].address
        assert mine in ran.stdout
        assert theirs not in ran.stdout
    finally:
        await other.remove_all()


async def test_network_mode_service_shares_the_other_containers_network(
    netrunner: ServiceRunner,
):
    stack = WEB + """
      sidecar:
        image: busybox
        network_mode: service:web
        command: >-
          sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do
          wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.2; done; exit 1'
    """
    web = await netrunner.start(stack, "web")
    ran = await netrunner.run(stack, "sidecar")
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout == "hello-from-web\n"  # the web server's loopback is the sidecar's
    sidecar = [c for c in netrunner.runtime.list() if c.metadata["service"] == "sidecar"][0]
    assert sidecar.spec.namespaces.net == f"container:{web.id}"


async def test_static_address_and_priority_order_the_interfaces(netrunner: ServiceRunner):
    stack = """
    services:
      app:
        image: busybox
        networks:
          back: {priority: 1}
          front: {ipv4_address: 10.216.5.77, priority: 10}
        command: sh -c 'ip -4 -o addr show eth0; ip route show default'
    networks:
      front:
        ipam: {config: [{subnet: 10.216.5.0/24}]}
      back:
        ipam: {config: [{subnet: 10.216.6.0/24}]}
    """
    ran = await netrunner.run(stack, "app")
    assert ran.exit_code == 0, ran.stderr
    assert "10.216.5.77/24" in ran.stdout  # eth0 is the highest-priority network
    assert "default via 10.216.5.1" in ran.stdout


async def test_link_alias_resolves_for_the_linking_service(netrunner: ServiceRunner):
    stack = WEB + """
      client:
        image: busybox
        links: ["web:site"]
        command: >-
          sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do
          wget -qO- http://site:8080/ && exit 0; sleep 0.2; done; exit 1'
    """
    await netrunner.start(stack, "web")
    ran = await netrunner.run(stack, "client")
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout == "hello-from-web\n"
