"""A service of the normalized model plus its image become a launch spec with
compose's and Docker's rules; every mistake is one error naming the service key."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtime.containers import defaults
from orchestrator.runtime.containers.launchspec import LaunchSpec, Mount
from orchestrator.runtime.containers.service_spec import ContainerPlan, build_launch_spec
from orchestrator.runtime.images.image_config import ImageConfig
from orchestrator.spec.discovery import ProjectOptions
from orchestrator.spec.errors import StackError
from orchestrator.spec.loader import load_stack

CONTAINER_ID = "0123456789abcdef" * 4
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nwheel:x:10:app\napp:x:1000:\n"
IMAGE = ImageConfig(
    os="linux",
    architecture="amd64",
    env=("PATH=/usr/bin:/bin", "LANG=C.UTF-8"),
    cmd=("redis-server",),
    entrypoint=("docker-entrypoint.sh",),
    working_dir="/data",
    labels={"org.opencontainers.image.version": "7", "maintainer": "image"},
)
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    """What build_launch_spec needs besides the service: a layer with passwd, a state root."""
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc/passwd").write_text(PASSWD)
    (layer / "etc/group").write_text(GROUP)
    host_etc = tmp_path / "host-etc"
    host_etc.mkdir()
    (host_etc / "resolv.conf").write_text(
        "# managed\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\n"
        "options edns0\n"
    )
    (host_etc / "hosts").write_text("127.0.0.1\tlocalhost\n10.0.0.5\tbuildhost\n")
    return {
        "container_id": CONTAINER_ID,
        "container_name": "shop-web-1",
        "project": "shop",
        "project_dir": str(tmp_path / "project"),
        "service_name": "web",
        "number": 1,
        "lowers": [str(layer)],
        "state_root": tmp_path / "state",
        "volume_path": lambda name: tmp_path / "state/volumes" / name / "_data",
        "host_etc": host_etc,
    }


def build(env: dict[str, Any], image: ImageConfig | None = IMAGE, **service: Any) -> ContainerPlan:
    settings = {"image": "redis:7", "command": None, "entrypoint": None, **service}
    model = settings.pop("project_model", None)
    environment = settings.pop("project_environment", None)
    names = ("anonymous_volumes", "addresses")
    extra = {key: settings.pop(key) for key in names if key in settings}
    return build_launch_spec(
        settings, image, project_model=model, project_environment=environment, **extra, **env
    )


def error_of(env: dict[str, Any], image: ImageConfig | None = IMAGE, **service: Any) -> str:
    with pytest.raises(StackError) as caught:
        build(env, image, **service)
    return str(caught.value)


def environment(plan: ContainerPlan) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in plan.spec.process.env)


def mount_at(plan: ContainerPlan, target: str) -> Mount:
    (mount,) = [m for m in plan.spec.mounts if m.target == target]
    return mount


def written(plan: ContainerPlan, path: str) -> bytes:
    (file,) = [f for f in plan.files if f.path == path]
    return file.content


# ---- command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entrypoint", "command", "argv"),
    [
        (None, None, ("docker-entrypoint.sh", "redis-server")),
        (
            None,
            ["redis-server", "--port", "7000"],
            ("docker-entrypoint.sh", "redis-server", "--port", "7000"),
        ),
        (["sh", "-c"], None, ("sh", "-c")),
        (["sh", "-c"], ["echo hi"], ("sh", "-c", "echo hi")),
        ([], None, ("redis-server",)),
        ([], ["echo"], ("echo",)),
        (None, [], ("docker-entrypoint.sh", "redis-server")),
        ([], [], ("redis-server",)),
    ],
)
def test_entrypoint_and_command_merge_with_the_image_as_docker_does(
    env: dict[str, Any],
    entrypoint: list[str] | None,
    command: list[str] | None,
    argv: tuple[str, ...],
) -> None:
    plan = build(env, entrypoint=entrypoint, command=command)
    assert plan.spec.process.argv == argv


def test_entrypoint_override_drops_image_cmd(env: dict[str, Any]) -> None:
    assert build(env, entrypoint=["/bin/app"]).spec.process.argv == ("/bin/app",)


def test_nothing_to_run_is_one_clear_error(env: dict[str, Any]) -> None:
    bare = ImageConfig(os="linux", architecture="amd64")
    assert error_of(env, bare, command=[]) == (
        "services.web: no command specified "
        "(set command: or entrypoint:, or use an image with a CMD)"
    )


# ---- environment, user, working dir ----------------------------------------------------------


def test_environment_layers_image_then_service_with_docker_defaults(env: dict[str, Any]) -> None:
    plan = build(env, environment={"LANG": "de_DE.UTF-8", "MODE": "prod"})
    assert plan.spec.process.env == (
        "PATH=/usr/bin:/bin",
        f"HOSTNAME={CONTAINER_ID[:12]}",
        "LANG=de_DE.UTF-8",
        "MODE=prod",
        "HOME=/root",
    )


def test_null_environment_value_unsets_the_image_variable(env: dict[str, Any]) -> None:
    plan = build(env, environment={"LANG": None, "UNSET": None})
    assert "LANG" not in environment(plan)
    assert "UNSET" not in environment(plan)


def test_default_path_when_neither_image_nor_service_sets_it(env: dict[str, Any]) -> None:
    plan = build(env, ImageConfig(os="linux", architecture="amd64", cmd=("sh",)))
    assert environment(plan)["PATH"] == defaults.DEFAULT_PATH


@pytest.mark.parametrize(
    ("service", "home"),
    [
        ({}, "/root"),
        ({"user": "app"}, "/home/app"),
        ({"user": "4242"}, "/"),
        ({"user": "app", "environment": {"HOME": "/srv"}}, "/srv"),
    ],
)
def test_home_comes_from_passwd_unless_set(
    env: dict[str, Any], service: dict[str, Any], home: str
) -> None:
    assert environment(build(env, **service))["HOME"] == home


def test_tty_sets_term_as_docker_does(env: dict[str, Any]) -> None:
    plan = build(env, tty=True, stdin_open=True)
    assert environment(plan)["TERM"] == "xterm"
    assert plan.spec.process.tty and plan.spec.process.stdin_open


def test_user_and_group_add_resolve_in_the_image(env: dict[str, Any]) -> None:
    process = build(env, user="app", group_add=["root", "44"]).spec.process
    assert (process.uid, process.gid, process.additional_gids) == (1000, 1000, (10, 0, 44))


def test_image_user_applies_when_the_service_sets_none(env: dict[str, Any]) -> None:
    image = ImageConfig(os="linux", architecture="amd64", cmd=("sh",), user="app")
    assert build(env, image).spec.process.uid == 1000
    assert build(env, image, user="0").spec.process.uid == 0


def test_unknown_user_is_one_clear_error(env: dict[str, Any]) -> None:
    assert error_of(env, user="postgres").startswith(
        "services.web.user: unable to find user postgres: no matching entries in passwd file"
    )


def test_unknown_group_add_names_its_entry(env: dict[str, Any]) -> None:
    assert error_of(env, group_add=["wheel", "video"]).startswith(
        "services.web.group_add[1]: unable to find group video"
    )


@pytest.mark.parametrize(
    ("service", "image_dir", "cwd"),
    [({}, "/data", "/data"), ({"working_dir": "/app/"}, "/data", "/app"), ({}, "", "/")],
)
def test_working_dir_is_the_services_then_the_images_then_root(
    env: dict[str, Any], service: dict[str, Any], image_dir: str, cwd: str
) -> None:
    image = ImageConfig(os="linux", architecture="amd64", cmd=("sh",), working_dir=image_dir)
    assert build(env, image, **service).spec.process.cwd == cwd


def test_relative_working_dir_is_refused(env: dict[str, Any]) -> None:
    assert error_of(env, working_dir="app").startswith(
        "services.web.working_dir: the working directory 'app' is invalid"
    )


# ---- names, labels, stop -----------------------------------------------------------------


def test_hostname_defaults_to_the_short_container_id(env: dict[str, Any]) -> None:
    plan = build(env)
    assert plan.spec.hostname == CONTAINER_ID[:12]
    assert written(plan, "hostname") == f"{CONTAINER_ID[:12]}\n".encode()
    assert environment(plan)["HOSTNAME"] == CONTAINER_ID[:12]


def test_hostname_and_domainname_from_the_service(env: dict[str, Any]) -> None:
    plan = build(env, hostname="cache", domainname="shop.internal", addresses=["172.20.0.3"])
    assert (plan.spec.hostname, plan.spec.domainname) == ("cache", "shop.internal")
    assert written(plan, "hosts").endswith(b"172.20.0.3\tcache.shop.internal cache\n")


def test_labels_put_the_image_then_the_service_then_compose(env: dict[str, Any]) -> None:
    plan = build_launch_spec(
        {"image": "redis:7", "labels": {"maintainer": "team", "tier": "cache"}},
        IMAGE,
        config_hash="abc123",
        **env,
    )
    assert dict(plan.spec.labels) == {
        "org.opencontainers.image.version": "7",
        "maintainer": "team",
        "tier": "cache",
        "com.docker.compose.project": "shop",
        "com.docker.compose.service": "web",
        "com.docker.compose.container-number": "1",
        "com.docker.compose.oneoff": "False",
        "com.docker.compose.project.working_dir": env["project_dir"],
        "com.docker.compose.config-hash": "abc123",
    }


@pytest.mark.parametrize(
    ("service", "image_signal", "signal", "grace"),
    [
        ({}, "", "SIGTERM", 10.0),
        ({}, "SIGQUIT", "SIGQUIT", 10.0),
        ({"stop_signal": "SIGINT", "stop_grace_period": "1m30s"}, "SIGQUIT", "SIGINT", 90.0),
        ({"stop_grace_period": "1.5s"}, "", "SIGTERM", 1.5),
    ],
)
def test_stop_signal_and_grace_period(
    env: dict[str, Any], service: dict[str, Any], image_signal: str, signal: str, grace: float
) -> None:
    image = ImageConfig(os="linux", architecture="amd64", cmd=("sh",), stop_signal=image_signal)
    spec = build(env, image, **service).spec
    assert (spec.stop_signal, spec.stop_grace_period) == (signal, grace)


def test_invalid_stop_signal_names_the_key(env: dict[str, Any]) -> None:
    assert error_of(env, stop_signal="SIGNOPE").startswith(
        "services.web.stop_signal: invalid stop signal 'SIGNOPE'"
    )


# ---- capabilities and security ---------------------------------------------------------------


def test_default_capabilities_are_dockers_mask() -> None:
    caps = defaults.capability_set([], [], privileged=False)
    assert defaults.capability_mask(caps) == 0xA80425FB
    assert len(defaults.CAPABILITIES) == 41
    assert defaults.CAPABILITY_BITS["CAP_CHECKPOINT_RESTORE"] == 40


@pytest.mark.parametrize(
    ("cap_add", "cap_drop", "privileged", "added", "removed"),
    [
        (["NET_ADMIN"], [], False, {"CAP_NET_ADMIN"}, set()),
        (
            ["cap_sys_ptrace"],
            ["mknod", "NET_RAW"],
            False,
            {"CAP_SYS_PTRACE"},
            {"CAP_MKNOD", "CAP_NET_RAW"},
        ),
        (["NET_ADMIN"], ["NET_ADMIN"], False, {"CAP_NET_ADMIN"}, set()),
    ],
)
def test_cap_add_and_cap_drop_adjust_the_default_set(
    cap_add: list[str], cap_drop: list[str], privileged: bool, added: set[str], removed: set[str]
) -> None:
    caps = set(defaults.capability_set(cap_add, cap_drop, privileged))
    assert caps == (set(defaults.DEFAULT_CAPABILITIES) | added) - removed


def test_all_in_cap_add_or_cap_drop() -> None:
    assert defaults.capability_set(["ALL"], ["sys_admin"], False) == tuple(
        c for c in defaults.CAPABILITIES if c != "CAP_SYS_ADMIN"
    )
    assert defaults.capability_set(["CHOWN"], ["all"], False) == ("CAP_CHOWN",)
    assert defaults.capability_set([], ["ALL"], False) == ()


def test_unknown_capability_names_its_entry(env: dict[str, Any]) -> None:
    assert error_of(env, cap_add=["NET_ADMIN", "FLY"]).startswith(
        "services.web.cap_add[1]: unknown capability 'FLY'"
    )


def test_privileged_gets_every_capability_and_no_masked_paths(env: dict[str, Any]) -> None:
    spec = build(env, privileged=True).spec
    assert spec.process.capabilities == defaults.CAPABILITIES
    assert (spec.masked_paths, spec.readonly_paths) == ((), ())


def test_unprivileged_gets_dockers_masked_and_read_only_paths(env: dict[str, Any]) -> None:
    spec = build(env).spec
    assert "/proc/kcore" in spec.masked_paths and "/sys/firmware" in spec.masked_paths
    assert "/proc/sys" in spec.readonly_paths and "/proc/sysrq-trigger" in spec.readonly_paths


@pytest.mark.parametrize(
    ("options", "enabled"),
    [
        ([], False),
        (["no-new-privileges"], True),
        (["no-new-privileges:true"], True),
        (["no-new-privileges=true"], True),
        (["no-new-privileges:false"], False),
        (["seccomp:unconfined", "no-new-privileges"], True),
    ],
)
def test_security_opt_no_new_privileges(
    env: dict[str, Any], options: list[str], enabled: bool
) -> None:
    assert build(env, security_opt=options).spec.process.no_new_privileges is enabled


def test_other_security_opt_is_not_supported(env: dict[str, Any]) -> None:
    assert error_of(env, security_opt=["apparmor=custom"]).startswith(
        "services.web.security_opt[0]: security_opt 'apparmor=custom' is not supported"
    )


@pytest.mark.parametrize(
    ("sysctls", "network_mode", "ipc", "outcome"),
    [
        ({"net.core.somaxconn": "1024"}, None, None, "ok"),
        ({"kernel.shmmax": "100", "fs.mqueue.msg_max": "20"}, None, None, "ok"),
        (["net.ipv4.tcp_syncookies=0"], None, None, "ok"),
        (
            {"net.core.somaxconn": "1024"},
            "host",
            None,
            "services.web.sysctls.net.core.somaxconn: sysctl 'net.core.somaxconn' cannot be set "
            "with network_mode: host",
        ),
        ({"kernel.sem": "1 2 3 4"}, None, "host", "cannot be set with ipc: host"),
        (
            {"vm.swappiness": "10"},
            None,
            None,
            "services.web.sysctls.vm.swappiness: sysctl 'vm.swappiness' is not allowed",
        ),
        ({"kernel.hostname": "x"}, None, None, "is not allowed"),
    ],
)
def test_only_namespaced_sysctls_are_allowed(
    env: dict[str, Any], sysctls: Any, network_mode: str | None, ipc: str | None, outcome: str
) -> None:
    service = {"sysctls": sysctls, "network_mode": network_mode, "ipc": ipc}
    if outcome == "ok":
        chosen = dict(build(env, **service).spec.sysctls)
        given = sysctls if isinstance(sysctls, dict) else dict([sysctls[0].split("=")])
        assert given.items() <= chosen.items()
    else:
        assert outcome in error_of(env, **service)


def test_unprivileged_ports_and_ping_as_docker_sets_them(env: dict[str, Any]) -> None:
    assert dict(build(env).spec.sysctls) == dict(defaults.DEFAULT_NET_SYSCTLS)
    own = build(env, sysctls={"net.ipv4.ip_unprivileged_port_start": "1024"}).spec.sysctls
    assert dict(own)["net.ipv4.ip_unprivileged_port_start"] == "1024"
    assert build(env, network_mode="host").spec.sysctls == ()


def test_ulimits_single_number_and_soft_hard(env: dict[str, Any]) -> None:
    rlimits = build(env, ulimits={"nofile": {"soft": 1024, "hard": 4096}, "nproc": 512})
    assert [(r.name, r.soft, r.hard) for r in rlimits.spec.process.rlimits] == [
        ("nofile", 1024, 4096),
        ("nproc", 512, 512),
    ]


@pytest.mark.parametrize(
    ("ulimits", "message"),
    [
        ({"nofile": {"soft": 4096, "hard": 1024}}, "soft limit 4096 is above hard limit 1024"),
        ({"files": 10}, "services.web.ulimits.files: invalid ulimit type 'files'"),
    ],
)
def test_bad_ulimits_are_refused(env: dict[str, Any], ulimits: dict, message: str) -> None:
    assert message in error_of(env, ulimits=ulimits)


# ---- resources ------------------------------------------------------------------------------


def test_resource_keys_become_cgroup_limits(env: dict[str, Any]) -> None:
    resources = build(
        env,
        mem_limit="536870912",
        memswap_limit="1073741824",
        mem_reservation="104857600",
        cpus=0.5,
        cpu_shares=512,
        cpuset="0",
        pids_limit=100,
        shm_size="134217728",
    ).spec
    assert resources.shm_size == 134217728
    limits = resources.resources
    assert (limits.memory, limits.memory_swap, limits.memory_reservation) == (
        536870912,
        1073741824,
        104857600,
    )
    assert (limits.cpus, limits.cpu_shares, limits.cpuset_cpus, limits.pids_limit) == (
        0.5,
        512,
        "0",
        100,
    )


def test_deploy_resources_are_the_same_limits(env: dict[str, Any]) -> None:
    deploy = {
        "resources": {
            "limits": {"cpus": 0.25, "memory": "52428800", "pids": 20},
            "reservations": {"memory": "20971520"},
        }
    }
    limits = build(env, deploy=deploy).spec.resources
    assert (limits.cpus, limits.memory, limits.pids_limit, limits.memory_reservation) == (
        0.25,
        52428800,
        20,
        20971520,
    )


def test_no_limits_by_default(env: dict[str, Any]) -> None:
    spec = build(env).spec
    assert spec.resources.memory is None and spec.resources.pids_limit is None
    assert spec.shm_size == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"mem_limit": "1048576"}, "services.web.mem_limit: memory limit 1048576 is below"),
        ({"mem_limit": "67108864", "memswap_limit": "33554432"}, "memswap_limit 33554432 is below"),
        ({"memswap_limit": "67108864"}, "memswap_limit needs mem_limit too"),
        ({"mem_limit": "67108864", "mem_reservation": "134217728"}, "is above mem_limit"),
        ({"cpus": 100000}, "services.web.cpus: cpus 100000 is out of range"),
        ({"cpuset": "0-"}, "invalid cpuset '0-'"),
    ],
)
def test_impossible_limits_are_refused(
    env: dict[str, Any], service: dict[str, Any], message: str
) -> None:
    assert message in error_of(env, **service)


def test_unlimited_swap_and_pids(env: dict[str, Any]) -> None:
    limits = build(env, mem_limit="67108864", memswap_limit="-1", pids_limit=-1).spec.resources
    assert (limits.memory_swap, limits.pids_limit) == (-1, None)


# ---- mounts -----------------------------------------------------------------------------------


def test_short_tmpfs_is_noexec_nosuid_nodev_with_its_options(env: dict[str, Any]) -> None:
    plan = build(env, tmpfs=["/run", "/tmp:size=64m,mode=1777,exec"])
    run, tmp = mount_at(plan, "/run"), mount_at(plan, "/tmp")
    assert (run.kind, run.noexec, run.nosuid, run.nodev, run.data) == (
        "tmpfs",
        True,
        True,
        True,
        "",
    )
    assert (tmp.noexec, tmp.data) == (False, "size=64m,mode=1777")


def test_long_tmpfs_size_and_mode(env: dict[str, Any]) -> None:
    volume = {"type": "tmpfs", "target": "/cache", "tmpfs": {"size": "1048576", "mode": 0o700}}
    mount = mount_at(build(env, volumes=[volume]), "/cache")
    assert (mount.kind, mount.data, mount.noexec) == ("tmpfs", "size=1048576,mode=700", True)


def test_bad_tmpfs_option_names_the_entry(env: dict[str, Any]) -> None:
    assert error_of(env, tmpfs=["/run", "/tmp:bogus"]).startswith(
        "services.web.tmpfs[1]: unknown tmpfs option 'bogus'"
    )


def test_short_bind_creates_a_missing_host_directory(env: dict[str, Any], tmp_path: Path) -> None:
    source = str(tmp_path / "missing")
    volume = {
        "type": "bind",
        "source": source,
        "target": "/data",
        "read_only": True,
        "bind": {"create_host_path": True},
    }
    mount = mount_at(build(env, volumes=[volume]), "/data")
    assert (mount.kind, mount.source, mount.read_only, mount.create_source) == (
        "bind",
        source,
        True,
        True,
    )


def test_long_bind_with_missing_source_is_an_error(env: dict[str, Any], tmp_path: Path) -> None:
    volume = {"type": "bind", "source": str(tmp_path / "nope"), "target": "/data"}
    assert error_of(env, volumes=[volume]).startswith(
        f"services.web.volumes[0]: bind source path does not exist: {tmp_path / 'nope'}"
    )


def test_bind_propagation_and_file_source(env: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "app.conf"
    config.write_text("x")
    volumes = [
        {
            "type": "bind",
            "source": str(tmp_path),
            "target": "/src",
            "bind": {"propagation": "rslave"},
        },
        {"type": "bind", "source": str(config), "target": "/etc/app.conf"},
    ]
    plan = build(env, volumes=volumes)
    assert mount_at(plan, "/src").propagation == "rslave"
    assert mount_at(plan, "/etc/app.conf").create == "file"


def test_named_volume_binds_its_data_with_copy_up(env: dict[str, Any]) -> None:
    model = {"volumes": {"db": {"name": "shop_db"}}}
    volumes = [
        {"type": "volume", "source": "db", "target": "/var/lib/db", "volume": {}},
        {
            "type": "volume",
            "source": "db",
            "target": "/seed",
            "read_only": True,
            "volume": {"nocopy": True},
        },
    ]
    plan = build(env, volumes=volumes, project_model=model)
    data = str(env["volume_path"]("shop_db"))
    db, seed = mount_at(plan, "/var/lib/db"), mount_at(plan, "/seed")
    assert (db.source, db.copy_up, db.read_only) == (data, True, False)
    assert (seed.source, seed.copy_up, seed.read_only) == (data, False, True)
    assert [(v.name, v.anonymous) for v in plan.volumes] == [("shop_db", False)] * 2


def test_undeclared_named_volume_is_an_error(env: dict[str, Any]) -> None:
    volume = {"type": "volume", "source": "db", "target": "/db"}
    assert error_of(env, volumes=[volume]).startswith(
        "services.web.volumes[0]: undefined volume 'db'"
    )


def test_anonymous_volumes_get_random_names_and_image_volumes_too(env: dict[str, Any]) -> None:
    image = ImageConfig(os="linux", architecture="amd64", cmd=("sh",), volumes=("/data", "/logs"))
    plan = build(env, image, volumes=[{"type": "volume", "target": "/data"}])
    assert [v.target for v in plan.volumes] == ["/data", "/logs"]
    assert all(v.anonymous and HEX64.match(v.name) for v in plan.volumes)
    assert plan.volumes[0].name != plan.volumes[1].name
    assert mount_at(plan, "/logs").copy_up


def test_image_volume_covered_by_a_service_mount_gets_no_anonymous_volume(
    env: dict[str, Any], tmp_path: Path
) -> None:
    image = ImageConfig(os="linux", architecture="amd64", cmd=("sh",), volumes=("/data",))
    volume = {"type": "bind", "source": str(tmp_path), "target": "/data/"}
    plan = build(env, image, volumes=[volume])
    assert plan.volumes == [] and mount_at(plan, "/data").source == str(tmp_path)


def test_anonymous_volumes_of_a_replaced_container_are_kept(env: dict[str, Any]) -> None:
    image = ImageConfig(os="linux", architecture="amd64", cmd=("sh",), volumes=("/data",))
    plan = build(env, image, anonymous_volumes={"/data": "f" * 64})
    assert mount_at(plan, "/data").source == str(env["volume_path"]("f" * 64))


def test_two_mounts_on_one_path_are_refused(env: dict[str, Any]) -> None:
    volume = {"type": "tmpfs", "target": "/run"}
    assert error_of(env, tmpfs=["/run"], volumes=[volume]) == (
        "services.web.volumes[0]: /run is already mounted by services.web.tmpfs[0] "
        "(each container path takes one mount)"
    )


def test_mounts_are_ordered_parents_first(env: dict[str, Any]) -> None:
    plan = build(env, tmpfs=["/srv/app/cache", "/srv"])
    assert [m.target for m in plan.spec.mounts] == ["/srv", "/srv/app/cache"]


# ---- configs and secrets ----------------------------------------------------------------------


def test_secret_default_target_is_run_secrets(env: dict[str, Any], tmp_path: Path) -> None:
    model = {"secrets": {"db_password": {"name": "shop_db_password", "content": "hunter2"}}}
    plan = build(env, secrets=[{"source": "db_password"}], project_model=model)
    mount = mount_at(plan, "/run/secrets/db_password")
    (file,) = [f for f in plan.files if f.path.startswith("files/")]
    assert (file.content, file.mode, file.uid, file.gid) == (b"hunter2", 0o444, 0, 0)
    container_dir = env["state_root"] / "containers" / CONTAINER_ID
    assert (mount.source, mount.read_only) == (str(container_dir / file.path), True)


def test_relative_secret_target_goes_under_run_secrets(env: dict[str, Any]) -> None:
    model = {"secrets": {"token": {"environment": "API_TOKEN"}}}
    plan = build(
        env,
        secrets=[{"source": "token", "target": "api/token", "uid": "1000", "mode": "0400"}],
        project_model=model,
        project_environment={"API_TOKEN": "s3cret"},
    )
    mount_at(plan, "/run/secrets/api/token")
    (file,) = [f for f in plan.files if f.path.startswith("files/")]
    assert (file.content, file.mode, file.uid) == (b"s3cret", 0o400, 1000)


def test_secret_from_an_unset_variable_is_an_error(env: dict[str, Any]) -> None:
    model = {"secrets": {"token": {"environment": "API_TOKEN"}}}
    assert error_of(env, secrets=[{"source": "token"}], project_model=model).startswith(
        "services.web.secrets[0]: environment variable API_TOKEN required by secret token"
    )


def test_config_default_target_is_its_name_at_the_root(env: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "nginx.conf"
    source.write_text("events {}\n")
    model = {"configs": {"nginx": {"file": str(source)}, "motd": {"content": "hi"}}}
    plan = build(
        env,
        configs=[{"source": "nginx"}, {"source": "motd", "target": "etc/motd"}],
        project_model=model,
    )
    nginx = mount_at(plan, "/nginx")
    assert (nginx.source, nginx.read_only, nginx.create) == (str(source), True, "file")
    assert mount_at(plan, "/etc/motd").source.endswith("files/configs/1-motd")


def test_config_file_with_an_owner_is_copied_so_the_owner_applies(
    env: dict[str, Any], tmp_path: Path
) -> None:
    source = tmp_path / "app.ini"
    source.write_text("[app]\n")
    model = {"configs": {"app": {"file": str(source)}}}
    plan = build(
        env,
        configs=[{"source": "app", "target": "/etc/app.ini", "gid": "1000", "mode": "0440"}],
        project_model=model,
    )
    (file,) = [f for f in plan.files if f.path.startswith("files/")]
    assert (file.content, file.mode, file.gid) == (b"[app]\n", 0o440, 1000)


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"external": True}, "external configs are not supported"),
        ({"file": "/nonexistent/x.conf"}, "file /nonexistent/x.conf does not exist"),
    ],
)
def test_configs_that_cannot_be_mounted_are_refused(
    env: dict[str, Any], definition: dict, message: str
) -> None:
    model = {"configs": {"app": definition}}
    assert message in error_of(env, configs=[{"source": "app"}], project_model=model)


# ---- namespaces, root, /etc files --------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "net", "ipc", "pid", "uts"),
    [
        ({}, "new", "new", "new", "new"),
        ({"network_mode": "none"}, "new", "new", "new", "new"),
        ({"network_mode": "host"}, "host", "new", "new", "host"),
        ({"network_mode": "host", "hostname": "mine"}, "host", "new", "new", "new"),
        ({"network_mode": "host", "domainname": "corp"}, "host", "new", "new", "new"),
        ({"uts": "host"}, "new", "new", "new", "host"),
        ({"ipc": "host", "pid": "host"}, "new", "host", "host", "new"),
        ({"ipc": "shareable"}, "new", "new", "new", "new"),
    ],
)
def test_namespace_modes(
    env: dict[str, Any], service: dict[str, Any], net: str, ipc: str, pid: str, uts: str
) -> None:
    namespaces = build(env, **service).spec.namespaces
    assert (namespaces.net, namespaces.ipc, namespaces.pid, namespaces.uts) == (net, ipc, pid, uts)


def test_host_network_uses_the_hosts_name_and_files(env: dict[str, Any]) -> None:
    plan = build(env, network_mode="host", extra_hosts=["db=10.0.0.9"])
    assert plan.spec.hostname == socket.gethostname()
    assert written(plan, "hosts") == b"127.0.0.1\tlocalhost\n10.0.0.5\tbuildhost\n10.0.0.9\tdb\n"
    assert written(plan, "resolv.conf").startswith(b"nameserver 127.0.0.53\n")


def test_sharing_another_services_namespace_is_not_supported_yet(env: dict[str, Any]) -> None:
    assert error_of(env, network_mode="service:db") == (
        "services.web.network_mode: network_mode 'service:db' is not supported yet"
    )


def test_hosts_file_has_docker_lines_then_extra_hosts_then_our_own(env: dict[str, Any]) -> None:
    plan = build(
        env, hostname="web", extra_hosts=["db=10.0.0.9", "v6=::1"], addresses=["172.20.0.2"]
    )
    assert written(plan, "hosts").decode() == (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "ff00::0\tip6-mcastprefix\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
        "10.0.0.9\tdb\n"
        "::1\tv6\n"
        "172.20.0.2\tweb\n"
    )


def test_host_gateway_is_not_supported_yet(env: dict[str, Any]) -> None:
    assert "services.web.extra_hosts[0]: host-gateway is not supported yet" in error_of(
        env, extra_hosts=["host.docker.internal=host-gateway"]
    )


def test_resolv_conf_drops_loopback_servers_and_takes_the_services_dns(
    env: dict[str, Any],
) -> None:
    assert written(build(env), "resolv.conf") == (
        b"nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n"
    )
    own = build(env, dns=["1.1.1.1"], dns_search=["shop.internal"], dns_opt=["ndots:2"])
    assert written(own, "resolv.conf") == (
        b"nameserver 1.1.1.1\nsearch shop.internal\noptions ndots:2\n"
    )


def test_image_layers_are_the_root_and_read_only_applies(env: dict[str, Any]) -> None:
    rootfs = build(env, read_only=True).spec.rootfs
    assert (rootfs.lowers, rootfs.read_only, rootfs.masked) == (tuple(env["lowers"]), True, ())


def test_host_rootfs_masks_secrets_and_our_state(env: dict[str, Any]) -> None:
    plan = build(env, None, command=["true"], **{"x-stack": {"rootfs": "/"}})
    assert plan.spec.rootfs.lowers == ("/",)
    assert plan.spec.rootfs.masked == (
        str(env["state_root"]),
        "/root",
        "/home",
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/ssh",
        "/run",
    )


def test_host_rootfs_that_is_not_a_directory_is_refused(env: dict[str, Any]) -> None:
    assert error_of(env, None, command=["true"], **{"x-stack": {"rootfs": "/nonexistent"}}) == (
        "services.web.x-stack.rootfs: rootfs /nonexistent is not a directory"
    )


# ---- the whole path: a stack file through the loader --------------------------------------------


def test_a_loaded_stack_file_builds_a_spec_that_survives_json(
    env: dict[str, Any], tmp_path: Path
) -> None:
    project = Path(env["project_dir"])
    project.mkdir()
    (project / "site.conf").write_text("listen 80;\n")
    (project / "compose.yaml").write_text(
        "services:\n"
        "  web:\n"
        "    image: redis:7\n"
        "    entrypoint: sh -c\n"
        "    command: ['echo hi']\n"
        "    user: app\n"
        "    environment: [MODE=prod, FROM_SHELL]\n"
        "    volumes: [./html:/usr/share/html:ro, cache:/cache, /scratch]\n"
        "    tmpfs: /tmp\n"
        "    configs: [site]\n"
        "    secrets: [token]\n"
        "    mem_limit: 64m\n"
        "    stop_grace_period: 90s\n"
        "    ulimits: {nofile: 2048}\n"
        "    cap_drop: [NET_RAW]\n"
        "volumes: {cache: {}}\n"
        "configs: {site: {file: ./site.conf}}\n"
        "secrets: {token: {environment: TOKEN}}\n"
    )
    stack = load_stack(
        ProjectOptions(cwd=str(project), environ={"TOKEN": "t0ken"}, project_name="shop")
    )
    plan = build_launch_spec(
        stack.model["services"]["web"],
        IMAGE,
        project_model=stack.model,
        project_environment={"TOKEN": "t0ken"},
        **env,
    )
    spec = plan.spec
    assert spec.process.argv == ("sh", "-c", "echo hi")
    assert spec.process.uid == 1000 and "FROM_SHELL" not in environment(plan)
    assert spec.stop_grace_period == 90.0 and spec.resources.memory == 64 * 1024 * 1024
    assert mount_at(plan, "/usr/share/html").create_source
    assert mount_at(plan, "/cache").source == str(env["volume_path"]("shop_cache"))
    assert mount_at(plan, "/site").source == str(project / "site.conf")
    assert written(plan, "files/secrets/0-token") == b"t0ken"
    assert "CAP_NET_RAW" not in spec.process.capabilities
    assert LaunchSpec.from_json(spec.to_json()) == spec
