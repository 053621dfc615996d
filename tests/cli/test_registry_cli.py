"""Registry commands as a user runs them: login, logout, image pull/push, stack pull."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import RegistryServer, run_registry
from support.stack_cli import STACK_COMMAND


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with run_registry(tmp_path, htpasswd={"alice": "wonderland"}) as server:
        yield server


def stack(config_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_CONFIG": str(config_dir)}
    return subprocess.run([*STACK_COMMAND, *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_login_saves_credentials_docker_can_read_and_logout_removes_them(
    private_registry: RegistryServer, tmp_path: Path
) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "", "other": 1}))
    login = stack(config, "login", private_registry.host, "-u", "alice", "--password-stdin",
                  stdin="wonderland\n")
    assert login.returncode == 0, login.stderr
    assert login.stdout == "Login Succeeded\n"
    saved = json.loads((config / "config.json").read_text())
    assert saved["other"] == 1
    assert saved["auths"][private_registry.host]["auth"] == "YWxpY2U6d29uZGVybGFuZA=="
    assert (config / "config.json").stat().st_mode & 0o077 == 0

    logout = stack(config, "logout", private_registry.host)
    assert logout.stdout == f"Removing login credentials for {private_registry.host}\n"
    assert private_registry.host not in json.loads((config / "config.json").read_text())["auths"]


def test_login_with_a_wrong_password_is_one_line_and_saves_nothing(
    private_registry: RegistryServer, tmp_path: Path
) -> None:
    config = tmp_path / "docker"
    login = stack(config, "login", private_registry.host, "-u", "alice", "-p", "nope")
    assert login.returncode == 1
    lines = login.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: authentication failed")
    assert "nope" not in login.stderr
    assert not (config / "config.json").exists()


def test_push_then_pull_into_another_store_keeps_the_digest(tmp_path: Path) -> None:
    from support.images import busybox_image, write_docker_archive_oci

    image = busybox_image(["busybox:latest"])
    archive = write_docker_archive_oci(tmp_path / "bb.tar", [image])
    with run_registry(tmp_path) as registry:
        name = f"{registry.host}/tools/busybox:1"
        first = {"STACK_ROOT": str(tmp_path / "a")}
        assert run(first, "image", "load", "-i", str(archive)).returncode == 0
        assert run(first, "image", "tag", "busybox", name).returncode == 0
        pushed = run(first, "image", "push", "-q", name)
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout == f"{name}: digest: {image.manifest_digest}\n"

        second = {"STACK_ROOT": str(tmp_path / "b")}
        pulled = run(second, "image", "pull", name)
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout.splitlines() == [f"Digest: {image.manifest_digest}", name]
        assert "Pull complete" in pulled.stderr  # progress, on stderr when not a terminal
        inspected = json.loads(run(second, "image", "inspect", name).stdout)[0]
        assert inspected["ManifestDigest"] == image.manifest_digest


def test_stack_pull_follows_each_services_pull_policy(tmp_path: Path) -> None:
    from support.images import busybox_image, write_docker_archive_oci

    archive = write_docker_archive_oci(tmp_path / "bb.tar", [busybox_image(["busybox:latest"])])
    with run_registry(tmp_path) as registry:
        source = {"STACK_ROOT": str(tmp_path / "src")}
        run(source, "image", "load", "-i", str(archive))
        for tag in ("always", "missing", "never"):
            run(source, "image", "tag", "busybox", f"{registry.host}/t/bb:{tag}")
            assert run(source, "image", "push", "-q", f"{registry.host}/t/bb:{tag}").returncode == 0
        project = tmp_path / "project"
        project.mkdir()
        (project / "compose.yaml").write_text(
            "services:\n"
            f"  a: {{image: {registry.host}/t/bb:always, pull_policy: always}}\n"
            f"  b: {{image: {registry.host}/t/bb:missing}}\n"
            f"  c: {{image: {registry.host}/t/bb:never, pull_policy: never}}\n"
        )
        target = {"STACK_ROOT": str(tmp_path / "dst")}
        pulled = run(target, "pull", "-q", cwd=project)
        assert pulled.returncode == 0, pulled.stderr
        listed = run(target, "image", "ls").stdout
        assert "always" in listed and "missing" in listed and "never" not in listed


def run(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*STACK_COMMAND, *args], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_pull_save_load_push_pull_round_trip_keeps_every_digest(tmp_path: Path) -> None:
    from support.images import multilayer_image, write_oci_layout

    image = multilayer_image()
    layout = write_oci_layout(tmp_path / "layout", [image])
    with run_registry(tmp_path) as registry:
        origin = f"{registry.host}/origin/multi:v1"
        seed = {"STACK_ROOT": str(tmp_path / "seed")}
        run(seed, "image", "load", "-i", str(layout))
        run(seed, "image", "tag", image.references[0], origin)
        assert run(seed, "image", "push", "-q", origin).returncode == 0

        first = {"STACK_ROOT": str(tmp_path / "first")}
        assert run(first, "image", "pull", "-q", origin).returncode == 0
        archive = tmp_path / "saved.tar"
        assert run(first, "image", "save", "-o", str(archive), origin).returncode == 0

        second = {"STACK_ROOT": str(tmp_path / "second")}
        assert run(second, "image", "load", "-i", str(archive)).returncode == 0
        copy = f"{registry.host}/copy/multi:v1"
        run(second, "image", "tag", origin, copy)
        assert run(second, "image", "push", "-q", copy).returncode == 0

        third = {"STACK_ROOT": str(tmp_path / "third")}
        assert run(third, "image", "pull", "-q", copy).returncode == 0

        seen = [
            json.loads(run(env, "image", "inspect", name).stdout)[0]
            for env, name in ((first, origin), (second, origin), (third, copy))
        ]
        for inspected in seen:
            assert inspected["ManifestDigest"] == image.manifest_digest
            assert inspected["Id"] == image.config_digest
            assert inspected["RootFS"]["Layers"] == image.diff_ids
            assert [layer["digest"] for layer in inspected["Manifest"]["layers"]] == [
                layer.digest for layer in image.layers
            ]
