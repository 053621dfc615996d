"""What a process inside a container sees: its own PID 1, hostname, capabilities, mounts."""

from __future__ import annotations

import pytest
from support.containers import ServiceRunner

pytestmark = pytest.mark.trio

DOCKER_DEFAULT_CAPS = "00000000a80425fb"


async def test_the_command_is_pid_1_and_host_processes_are_invisible(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            command: sh -c 'echo pid=$$$$; ls /proc | grep -c "^[0-9]"'
    """)
    assert ran.exit_code == 0
    lines = ran.stdout.split()
    assert lines[0] == "pid=1"
    assert int(lines[1]) <= 3  # sh, ls, grep: nothing of the host


async def test_hostname_and_etc_hosts_name_the_container(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            hostname: web01
            extra_hosts: ["db.internal=10.1.2.3"]
            command: sh -c 'hostname; cat /etc/hostname; cat /etc/hosts; echo HOSTNAME=$$HOSTNAME'
    """)
    assert ran.exit_code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "web01"
    assert lines[1] == "web01"
    assert any(line.split() == ["127.0.0.1", "localhost"] for line in lines)
    assert any(line.split() == ["10.1.2.3", "db.internal"] for line in lines)
    assert "HOSTNAME=web01" in lines


async def test_default_hostname_is_the_short_container_id(runner: ServiceRunner):
    container = runner.create("""
        services:
          app: {image: busybox, command: hostname}
    """)
    await runner.runtime.start(container.id)
    await runner.runtime.wait(container.id)
    assert runner.output(container.id)[0].strip() == container.id[:12]


async def test_effective_capabilities_are_dockers_default_set(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, command: grep -E '^Cap(Eff|Bnd|Prm)' /proc/self/status}
    """)
    values = dict(line.split(":\t") for line in ran.stdout.splitlines())
    assert values == {"CapEff": DOCKER_DEFAULT_CAPS, "CapPrm": DOCKER_DEFAULT_CAPS,
                      "CapBnd": DOCKER_DEFAULT_CAPS}


async def test_cap_add_and_cap_drop_change_the_set(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            cap_add: [NET_ADMIN]
            cap_drop: [CHOWN, KILL]
            command: grep CapEff /proc/self/status
    """)
    mask = int(ran.stdout.split()[1], 16)
    assert mask & (1 << 12)  # CAP_NET_ADMIN
    assert not mask & (1 << 0)  # CAP_CHOWN
    assert not mask & (1 << 5)  # CAP_KILL
    assert mask & (1 << 1)  # CAP_DAC_OVERRIDE kept


async def test_non_root_user_has_no_effective_capabilities(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, user: nobody, command: sh -c 'id; grep CapEff /proc/self/status'}
    """)
    assert "uid=65534(nobody) gid=65534(nobody)" in ran.stdout
    assert "CapEff:\t0000000000000000" in ran.stdout


async def test_read_only_root_refuses_writes_but_tmpfs_accepts_them(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            read_only: true
            tmpfs: [/scratch]
            command: sh -c 'touch /etc/x && echo wrote-etc; touch /scratch/x && echo wrote-tmp'
    """)
    assert "wrote-etc" not in ran.stdout
    assert "Read-only file system" in ran.stderr
    assert "wrote-tmp" in ran.stdout


async def test_root_is_writable_by_default_and_private_to_the_container(runner: ServiceRunner):
    first = await runner.run("""
        services:
          app: {image: busybox, command: sh -c 'echo mine > /etc/motd && cat /etc/motd'}
    """)
    second = await runner.run("""
        services:
          other: {image: busybox, command: sh -c 'cat /etc/motd || echo absent'}
    """)
    assert first.stdout == "mine\n"
    assert "absent" in second.stdout


async def test_mount_inside_fails_without_privileged(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app: {image: busybox, command: mount -t tmpfs none /tmp}
    """)
    assert ran.exit_code != 0
    assert "denied" in ran.stderr.lower() or "not permitted" in ran.stderr.lower()


async def test_privileged_may_mount(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            privileged: true
            command: sh -c 'mount -t tmpfs none /tmp && echo mounted'
    """)
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout == "mounted\n"


async def test_masked_paths_read_empty_and_proc_sys_is_read_only(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            command: >-
              sh -c 'wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l;
              echo 1 > /proc/sys/kernel/domainname || echo refused'
    """)
    assert ran.stdout.split() == ["0", "0", "0", "refused"]


async def test_minimal_dev_has_only_the_usual_devices(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            shm_size: 8m
            command: sh -c 'ls /dev; df -k /dev/shm | tail -1; echo x > /dev/null && echo null-ok'
    """)
    names = set(ran.stdout.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue"} <= names
    assert "sda" not in names and "vda" not in names
    assert "8192" in ran.stdout
    assert "null-ok" in ran.stdout


async def test_device_made_with_mknod_cannot_be_opened(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            command: sh -c 'mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem && echo read-host-memory'
    """)
    assert "read-host-memory" not in ran.stdout
    assert "Permission denied" in ran.stderr or "not permitted" in ran.stderr


async def test_no_new_privileges_is_set_when_asked(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            security_opt: [no-new-privileges:true]
            command: grep NoNewPrivs /proc/self/status
    """)
    assert ran.stdout.split() == ["NoNewPrivs:", "1"]


async def test_sysctls_and_ulimits_apply(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            sysctls: {net.ipv4.ip_forward: 1, kernel.shmmax: 65536}
            ulimits: {nofile: {soft: 1024, hard: 2048}}
            command: >-
              sh -c 'cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax;
              ulimit -n; ulimit -Hn'
    """)
    assert ran.stdout.split() == ["1", "65536", "1024", "2048"]


async def test_init_runs_a_reaping_pid_1_that_is_not_python(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            init: true
            command: sh -c 'cat /proc/1/comm; echo me=$$$$'
    """)
    assert ran.exit_code == 0, ran.stderr
    first, second = ran.stdout.split()
    assert first.startswith("tini") or first == "init"
    assert second != "me=1"


async def test_working_dir_and_environment_follow_compose(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            image: busybox
            working_dir: /srv/app
            environment: {GREETING: hello, EMPTY: ""}
            command: sh -c 'pwd; echo $$GREETING; env | grep -c ^EMPTY=; echo $$PATH'
    """)
    assert ran.stdout.split() == [
        "/srv/app", "hello", "1", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]
