"""`exec` into a running container: its namespaces, root and cgroup, with overrides and TTYs."""

from __future__ import annotations

import os

import pytest
import trio
from support.containers import ServiceRunner

from orchestrator.runtime.containers.cgroups import Cgroup
from orchestrator.runtime.containers.runtime import Container, ContainerError

pytestmark = pytest.mark.trio

SERVICE = """
    services:
      app:
        image: busybox
        hostname: box
        working_dir: /srv
        environment: {BASE: from-service}
        command: sh -c 'echo made-by-main > /srv/marker; exec sleep 30'
"""


async def started(runner: ServiceRunner, yaml: str = SERVICE) -> Container:
    container = await runner.start(yaml)
    marker = runner.runtime.root / container.id / "upper" / "srv" / "marker"
    with trio.fail_after(5):
        while not marker.exists():
            await trio.sleep(0.01)
    return container


async def test_exec_sees_the_containers_files_hostname_and_processes(runner: ServiceRunner):
    container = await started(runner)
    code, stdout, stderr = await runner.exec(
        container,
        ["sh", "-c", "cat /srv/marker; hostname; echo pid=$$; cat /proc/1/cmdline; echo;"
         " ls /proc | grep -c '^[0-9]'"],
    )
    assert code == 0, stderr
    marker, hostname, pid, init, count = stdout.splitlines()
    assert marker == "made-by-main"
    assert hostname == "box"
    assert pid != "pid=1"
    assert init == "sleep\x0030\x00"
    assert int(count) <= 4  # sleep, sh, ls, grep: the container's own processes only


async def test_exec_joins_every_namespace_of_the_container(runner: ServiceRunner):
    container = await started(runner)
    code, stdout, stderr = await runner.exec(container, [
        "sh", "-c",
        'for n in cgroup ipc mnt net pid uts; do'
        ' [ "$(readlink /proc/self/ns/$n)" = "$(readlink /proc/1/ns/$n)" ] && echo same-$n;'
        " done",
    ])  # fmt: skip
    assert code == 0, stderr
    assert stdout.split() == [f"same-{n}" for n in ("cgroup", "ipc", "mnt", "net", "pid", "uts")]


async def test_exec_runs_in_the_containers_cgroup(runner: ServiceRunner):
    container = await started(runner)
    cgroup = Cgroup.open(container.id)
    assert cgroup is not None
    found: list[bool] = []

    async def look() -> None:
        with trio.fail_after(5):
            while True:
                for pid in cgroup.pids():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as file:
                            if file.read() == b"sleep\x000.7\x00":
                                found.append(True)
                                return
                    except OSError:
                        continue
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(look)
        code, _, stderr = await runner.exec(container, ["sleep", "0.7"])
    assert code == 0, stderr
    assert found == [True]


async def test_exec_inherits_env_and_working_dir_and_returns_the_exit_code(
    runner: ServiceRunner,
):
    container = await started(runner)
    code, stdout, _ = await runner.exec(container, ["sh", "-c", "pwd; echo $BASE; id -u; exit 4"])
    assert code == 4
    assert stdout.split() == ["/srv", "from-service", "0"]


async def test_exec_overrides_env_working_dir_and_user(runner: ServiceRunner):
    container = await started(runner)
    code, stdout, stderr = await runner.exec(
        container, ["sh", "-c", "pwd; echo $BASE $EXTRA; id"],
        env=["EXTRA=added", "BASE=replaced"], cwd="/tmp", user=(65534, 65534),
    )
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "/tmp"
    assert lines[1] == "replaced added"
    assert lines[2].startswith("uid=65534(nobody) gid=65534(nobody)")


async def test_exec_gets_only_the_three_standard_descriptors(runner: ServiceRunner):
    container = await started(runner)
    # `:` after ls keeps sh from replacing itself by ls, so $$ is the exec'd shell.
    code, stdout, _ = await runner.exec(container, ["sh", "-c", "ls /proc/$$/fd; :"])
    assert (code, stdout.split()) == (0, ["0", "1", "2"])


async def test_exec_of_a_missing_binary_fails_like_docker(runner: ServiceRunner):
    container = await started(runner)
    missing = r'exec: "nosuch": executable file not found in \$PATH'
    with pytest.raises(ContainerError, match=missing):
        await runner.exec(container, ["nosuch"])
    # The container is unharmed and later execs work.
    code, stdout, _ = await runner.exec(container, ["echo", "still here"])
    assert (code, stdout) == (0, "still here\n")


async def test_exec_in_a_stopped_container_is_refused(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, command: "true"}
    """)
    assert ran.exit_code == 0
    container = runner.runtime.get(runner.created[-1])
    with pytest.raises(ContainerError, match="is not running"):
        await runner.exec(container, ["true"])


async def test_exec_with_a_tty_runs_on_a_terminal(runner: ServiceRunner):
    container = await started(runner)
    process = runner.runtime.exec_process(
        runner.runtime.get(container.id),
        ["sh", "-c", "test -t 0 && test -t 1 && echo on-a-terminal"], tty=True,
    )
    master, slave = os.openpty()
    try:
        code = await runner.runtime.exec(container.id, process, (slave, slave, slave))
        os.close(slave)
        slave = -1
        output = _read_pty(master)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert code == 0, output
    assert "on-a-terminal\r\n" in output  # the terminal turned \n into \r\n


async def test_exec_without_a_tty_is_not_on_a_terminal(runner: ServiceRunner):
    container = await started(runner)
    code, stdout, _ = await runner.exec(
        container, ["sh", "-c", "test -t 1 && echo terminal || echo pipe"]
    )
    assert (code, stdout) == (0, "pipe\n")


def _read_pty(master: int) -> str:
    """What the terminal received; EIO ends it once every slave end is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
