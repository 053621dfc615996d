"""Image configs: the run settings a container starts with, read from Docker and
OCI configs alike, and written back so that they read the same."""

import json

import pytest

from orchestrator.runtime.images.image_config import (
    Healthcheck,
    HistoryEntry,
    ImageConfig,
    build_config,
    check_config_matches,
    parse_image_config,
)
from orchestrator.runtime.images.manifest import Descriptor, build_manifest, parse_manifest
from orchestrator.runtime.images.platform import Platform
from orchestrator.spec.errors import StackError

DIFF_1 = "sha256:" + "1" * 64
DIFF_2 = "sha256:" + "2" * 64

# Shaped like `docker image inspect`'s source for a typical service image.
DOCKER_CONFIG = {
    "architecture": "arm64",
    "variant": "v8",
    "os": "linux",
    "created": "2024-05-01T10:00:00.123456789Z",
    "author": "ops@example.com",
    "config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "REDIS_VERSION=7.2.4"],
        "Entrypoint": ["docker-entrypoint.sh"],
        "Cmd": ["redis-server"],
        "WorkingDir": "/data",
        "User": "redis:redis",
        "ExposedPorts": {"6379/tcp": {}, "16379/tcp": {}},
        "Volumes": {"/data": {}},
        "Healthcheck": {
            "Test": ["CMD-SHELL", "redis-cli ping || exit 1"],
            "Interval": 30_000_000_000,
            "Timeout": 5_000_000_000,
            "StartPeriod": 10_000_000_000,
            "Retries": 3,
        },
        "StopSignal": "SIGTERM",
        "Labels": {"org.opencontainers.image.version": "7.2.4"},
        "ArgsEscaped": True,
        "OnBuild": None,
    },
    "container_config": {"Hostname": "abc"},
    "docker_version": "24.0.7",
    "rootfs": {"type": "layers", "diff_ids": [DIFF_1, DIFF_2]},
    "history": [
        {"created": "2024-05-01T09:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:… in /"},
        {
            "created": "2024-05-01T09:00:01Z",
            "created_by": 'CMD ["redis-server"]',
            "empty_layer": True,
        },
        {
            "created": "2024-05-01T09:00:02Z",
            "created_by": "RUN apt-get install redis",
            "comment": "buildkit.dockerfile.v0",
        },
    ],
}


def encode(document) -> bytes:
    return json.dumps(document).encode()


def test_docker_config_gives_every_run_setting():
    config = parse_image_config(encode(DOCKER_CONFIG))
    assert config.platform == Platform("linux", "arm64", "v8")
    assert config.env == ("PATH=/usr/local/bin:/usr/bin:/bin", "REDIS_VERSION=7.2.4")
    assert config.entrypoint == ("docker-entrypoint.sh",)
    assert config.cmd == ("redis-server",)
    assert config.working_dir == "/data"
    assert config.user == "redis:redis"
    assert config.exposed_ports == ("16379/tcp", "6379/tcp")
    assert config.volumes == ("/data",)
    assert config.healthcheck == Healthcheck(
        ("CMD-SHELL", "redis-cli ping || exit 1"),
        30_000_000_000,
        5_000_000_000,
        10_000_000_000,
        0,
        3,
    )
    assert config.stop_signal == "SIGTERM"
    assert dict(config.labels) == {"org.opencontainers.image.version": "7.2.4"}
    assert config.diff_ids == (DIFF_1, DIFF_2)
    assert config.created == "2024-05-01T10:00:00.123456789Z"
    assert config.author == "ops@example.com"
    assert [h.empty_layer for h in config.history] == [False, True, False]
    assert config.history[2].comment == "buildkit.dockerfile.v0"
    assert config.raw["docker_version"] == "24.0.7"


def test_minimal_oci_config_has_empty_run_settings():
    config = parse_image_config(
        encode(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        )
    )
    assert config == ImageConfig("linux", "amd64", raw=config.raw)
    assert config.entrypoint is None and config.cmd is None
    assert config.healthcheck is None


def test_null_fields_read_as_unset_and_empty_entrypoint_stays_empty():
    document = json.loads(encode(DOCKER_CONFIG))
    document["config"] = {"Env": None, "Entrypoint": [], "Cmd": None, "Labels": None}
    config = parse_image_config(encode(document))
    assert config.env == ()
    assert config.entrypoint == ()
    assert config.cmd is None
    assert dict(config.labels) == {}


def broken(path, value):
    document = json.loads(encode(DOCKER_CONFIG))
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return encode(document)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"{", "image config is not valid JSON"),
        (b"42", "image config must be a JSON object"),
        (broken(("rootfs",), None), 'rootfs.type must be "layers"'),
        (broken(("rootfs", "type"), "tarball"), 'rootfs.type must be "layers"'),
        (broken(("rootfs", "diff_ids"), "sha256:x"), "rootfs.diff_ids must be a list of strings"),
        (broken(("rootfs", "diff_ids"), [DIFF_1, "sha256:x"]), "rootfs.diff_ids[1]"),
        (broken(("os",), None), "os must be a string"),
        (broken(("architecture",), 64), "architecture must be a string"),
        (broken(("config",), []), "config must be an object"),
        (broken(("config", "Env"), "A=1"), "config.Env must be a list of strings"),
        (broken(("config", "Cmd"), "redis-server"), "config.Cmd must be a list of strings"),
        (broken(("config", "Entrypoint"), [1]), "config.Entrypoint must be a list of strings"),
        (broken(("config", "ExposedPorts"), ["80/tcp"]), "config.ExposedPorts must be an object"),
        (broken(("config", "Labels"), {"a": 1}), "config.Labels values must be strings"),
        (broken(("config", "Healthcheck", "Interval"), "30s"), "config.Healthcheck.Interval"),
        (broken(("config", "User"), 1000), "config.User must be a string"),
        (broken(("history",), {}), "history must be a list"),
        (broken(("history",), ["x"]), "history[0] must be an object"),
    ],
)
def test_bad_config_is_one_clear_error_naming_the_field(data, says):
    with pytest.raises(StackError) as caught:
        parse_image_config(data, where="image redis:7")
    assert str(caught.value).startswith("image redis:7: ")
    assert says in str(caught.value)


def test_built_config_reads_back_the_same():
    data = build_config(
        [DIFF_1, DIFF_2],
        platform="linux/arm64",
        created="2024-05-01T10:00:00Z",
        author="ops@example.com",
        env=["PATH=/bin"],
        entrypoint=["/bin/sh", "-c"],
        cmd=["echo hi"],
        working_dir="/srv",
        user="1000:1000",
        exposed_ports=["80/tcp"],
        volumes=["/srv/data"],
        healthcheck=Healthcheck(("CMD", "true"), interval=1_000_000_000, retries=2),
        stop_signal="SIGQUIT",
        labels={"a": "1"},
        history=[HistoryEntry(created="2024-05-01T10:00:00Z", comment="Imported from -")],
    )
    config = parse_image_config(data)
    assert config.platform == Platform("linux", "arm64", "v8")
    assert config.env == ("PATH=/bin",)
    assert config.entrypoint == ("/bin/sh", "-c")
    assert config.cmd == ("echo hi",)
    assert (config.working_dir, config.user, config.stop_signal) == ("/srv", "1000:1000", "SIGQUIT")
    assert config.exposed_ports == ("80/tcp",)
    assert config.volumes == ("/srv/data",)
    assert config.healthcheck == Healthcheck(("CMD", "true"), 1_000_000_000, 0, 0, 0, 2)
    assert dict(config.labels) == {"a": "1"}
    assert config.diff_ids == (DIFF_1, DIFF_2)
    assert config.history == (HistoryEntry("2024-05-01T10:00:00Z", "", "", "Imported from -"),)


def test_built_config_is_byte_stable_and_leaves_out_empty_fields():
    data = build_config([DIFF_1])
    assert data == build_config([DIFF_1])
    assert json.loads(data) == {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [DIFF_1]},
    }


def test_build_config_refuses_a_bad_diff_id():
    with pytest.raises(StackError):
        build_config(["sha256:short"])


def test_layer_count_must_agree_between_manifest_and_config():
    config = parse_image_config(build_config([DIFF_1, DIFF_2]))
    layer = Descriptor("application/vnd.oci.image.layer.v1.tar", DIFF_1, 10)
    two = parse_manifest(build_manifest(DIFF_1, 10, [layer, layer]))
    one = parse_manifest(build_manifest(DIFF_1, 10, [layer]))
    check_config_matches(two, config)
    with pytest.raises(StackError, match="1 layers but the config lists 2 diff_ids"):
        check_config_matches(one, config)
