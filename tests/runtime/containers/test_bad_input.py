"""A mistake in a service ends in one clear error and leaves nothing behind.

Every case here declares a named volume too, so "nothing behind" can be seen:
no container folder (and so nothing a cgroup could be made for: only a start
makes one), no volume, no half-made host directory. A mistake only a start can
find fails that start, leaves the container created, and its cgroup removed.
"""

from __future__ import annotations

import os
import re

import pytest
from support.containers import ServiceRunner

from orchestrator.runtime.containers.cgroups import Cgroup
from orchestrator.runtime.containers.runtime import ContainerError
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.trio

STACK = """
services:
  app:
    image: busybox
    command: ["true"]
    volumes: [data:/data]
{settings}
volumes:
  data: {{}}
configs:
  conf: {{content: x}}
"""


def stack_with(settings: str) -> str:
    lines = [f"    {line}" for line in settings.strip().splitlines()]
    return STACK.format(settings="\n".join(lines))


def assert_nothing_left(runner: ServiceRunner) -> None:
    assert runner.runtime.list() == []
    leftovers = os.listdir(runner.runtime.root) if runner.runtime.root.exists() else []
    assert [name for name in leftovers if not name.startswith("keeper.")] == []
    assert runner.volumes.list() == []


def assert_one_line_about(error: StackError, where: str, words: str) -> None:
    """One line: maybe the file position, then the key path, then what is wrong."""
    message = str(error)
    assert "\n" not in message
    assert re.match(rf"^(\S+:\d+:\d+: )?{re.escape(where)}: ", message), message
    assert words in message, message


@pytest.mark.parametrize(
    ("settings", "where", "words"),
    [
        pytest.param(
            "user: nosuchuser", "services.app.user",
            "unable to find user nosuchuser", id="unknown-user",
        ),
        pytest.param(
            "user: root:nosuchgroup", "services.app.user",
            "unable to find group nosuchgroup", id="unknown-group",
        ),
        pytest.param(
            "sysctls: {kernel.panic: 1}", "services.app.sysctls.kernel.panic",
            "sysctl 'kernel.panic' is not allowed", id="host-sysctl",
        ),
        pytest.param(
            "network_mode: host\nsysctls: {net.ipv4.ip_forward: 1}",
            "services.app.sysctls.net.ipv4.ip_forward",
            "cannot be set with network_mode: host", id="net-sysctl-on-host-network",
        ),
        pytest.param(
            "cap_add: [NOT_A_CAP]", "services.app.cap_add[0]",
            "unknown capability 'NOT_A_CAP'", id="capability",
        ),
        pytest.param(
            "ulimits: {nofiles: 10}", "services.app.ulimits.nofiles",
            "invalid ulimit type 'nofiles'", id="ulimit-name",
        ),
        pytest.param(
            "ulimits: {nofile: {soft: 20, hard: 10}}", "services.app.ulimits.nofile",
            "soft limit 20 is above hard limit 10", id="ulimit-order",
        ),
        pytest.param(
            "mem_limit: 4m", "services.app.mem_limit",
            "below the minimum of 6MB", id="tiny-memory",
        ),
        pytest.param(
            f"cpus: {(os.cpu_count() or 1) + 1}", "services.app.cpus",
            "is out of range", id="too-many-cpus",
        ),
        pytest.param(
            "tmpfs: [run]", "services.app.tmpfs[0]",
            "'run' must be an absolute path", id="relative-tmpfs",
        ),
        pytest.param(
            "tmpfs: [/data]", "services.app.volumes[0]",
            "/data is already mounted by services.app.tmpfs[0]", id="tmpfs-over-volume",
        ),
        pytest.param(
            "configs: [{source: conf, target: /data}]", "services.app.configs[0]",
            "/data is already mounted by services.app.volumes[0]", id="config-over-volume",
        ),
        pytest.param(
            "secrets: [nowhere]", "services.app.secrets[0]",
            'undefined secret "nowhere"', id="undefined-secret",
        ),
        pytest.param(
            "volumes_from: ['container:nosuch']", "services.app.volumes_from[0]",
            "no such container: nosuch", id="volumes-from-missing",
        ),
        pytest.param(
            "volumes_from: ['container:nosuch:rx']", "services.app.volumes_from[0]",
            "invalid volumes_from mode 'rx'", id="volumes-from-mode",
        ),
    ],
)
async def test_invalid_setting_is_one_error_naming_it_and_leaves_nothing(
    runner: ServiceRunner, settings: str, where: str, words: str
):
    with pytest.raises(StackError) as caught:
        runner.create(stack_with(settings))
    assert_one_line_about(caught.value, where, words)
    assert_nothing_left(runner)


async def test_long_bind_without_create_host_path_needs_an_existing_source(
    runner: ServiceRunner,
):
    with pytest.raises(StackError) as caught:
        runner.create("""
            services:
              app:
                image: busybox
                volumes:
                  - data:/data
                  - {type: bind, source: ./missing, target: /in}
            volumes:
              data: {}
        """)
    missing = runner.project_dir / "missing"
    assert str(caught.value) == (
        f"services.app.volumes[1]: bind source path does not exist: {missing} "
        "(create it, or set bind.create_host_path: true)"
    )
    assert not missing.exists()
    assert_nothing_left(runner)


async def test_missing_external_volume_is_refused_not_created(runner: ServiceRunner):
    with pytest.raises(StackError) as caught:
        runner.create("""
            services:
              app:
                image: busybox
                volumes: [data:/data, outside:/outside]
            volumes:
              data: {}
              outside: {external: true, name: stack-test-outside}
        """)
    assert_one_line_about(
        caught.value, "services.app.volumes", "external volume 'stack-test-outside' not found"
    )
    assert_nothing_left(runner)


async def test_unsupported_volume_driver_is_refused_before_anything_is_made(
    runner: ServiceRunner,
):
    with pytest.raises(StackError) as caught:
        runner.create("""
            services:
              app:
                image: busybox
                volumes: [data:/data, nfs:/nfs]
            volumes:
              data: {}
              nfs: {driver_opts: {type: nfs, o: "addr=10.0.0.1", device: ":/export"}}
        """)
    assert_one_line_about(caught.value, "volumes.nfs", "driver option type=nfs is not supported")
    assert_nothing_left(runner)


async def test_a_relative_volume_device_is_refused_before_anything_is_made(
    runner: ServiceRunner,
):
    """Without `driver: local` compose leaves a bind device as written; it must be absolute."""
    with pytest.raises(StackError) as caught:
        runner.create("""
            services:
              app:
                image: busybox
                volumes: [data:/data, here:/here]
            volumes:
              data: {}
              here: {driver_opts: {type: none, o: bind, device: ./here}}
        """)
    assert_one_line_about(caught.value, "volumes.here", "device=./here must be an absolute path")
    assert_nothing_left(runner)


async def test_a_taken_container_name_leaves_no_new_volume(runner: ServiceRunner):
    runner.create("""
        services:
          first: {image: busybox, container_name: taken}
    """)
    with pytest.raises(StackError, match='the container name "taken" is already in use'):
        runner.create("""
            services:
              second:
                image: busybox
                container_name: taken
                volumes: [data:/data]
            volumes:
              data: {}
        """)
    assert [c.name for c in runner.runtime.list()] == ["taken"]
    assert runner.volumes.list() == []


async def test_missing_command_fails_at_start_with_dockers_words(runner: ServiceRunner):
    container = runner.create("""
        services:
          app: {image: busybox, command: nosuch}
    """)
    with pytest.raises(ContainerError) as caught:
        await runner.runtime.start(container.id)
    assert str(caught.value) == (
        f'cannot start container {container.name}: '
        'exec: "nosuch": executable file not found in $PATH'
    )
    state = runner.runtime.get(container.id).state
    assert state.status != "running" and state.pid == 0
    assert Cgroup.open(container.id) is None
    await runner.runtime.remove(container.id)
    assert_nothing_left(runner)


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("/no/such/file", 'exec: "/no/such/file": stat /no/such/file: no such file or directory'),
        ("/etc", 'exec: "/etc": is a directory'),
        ("/etc/passwd", 'exec: "/etc/passwd": permission denied'),
    ],
)
async def test_unrunnable_paths_fail_at_start_with_dockers_words(
    runner: ServiceRunner, command: str, words: str
):
    container = runner.create(f"""
        services:
          app: {{image: busybox, command: {command}}}
    """)
    with pytest.raises(ContainerError, match=words):
        await runner.runtime.start(container.id)


async def test_a_failed_start_can_be_retried_once_fixed(runner: ServiceRunner):
    """A bind source removed after create fails the start alone; the container stays."""
    source = runner.project_dir / "gone"
    source.mkdir()
    container = runner.create("""
        services:
          app:
            image: busybox
            volumes: [{type: bind, source: ./gone, target: /gone}]
            command: ls /gone
    """)
    source.rmdir()
    with pytest.raises(ContainerError, match="gone"):
        await runner.runtime.start(container.id)
    assert Cgroup.open(container.id) is None
    source.mkdir()
    await runner.runtime.start(container.id)
    assert (await runner.runtime.wait(container.id)).exit_code == 0
