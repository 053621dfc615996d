"""`stack config`, `stack graph` and `stack version` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.stack_cli import STACK_COMMAND

WEB_AND_DB = """\
services:
  web:
    image: nginx:${TAG:-1.25}
    ports: ["8080:80"]
    depends_on: [db]
    volumes: [data:/data]
    logging: {driver: json-file}
  db:
    image: postgres
    profiles: [full]
  tools:
    build: ./tools
    profiles: [dev]
volumes:
  data: {}
"""


def run(cwd: Path, *args: str, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    environ.update(env or {})
    return subprocess.run([*STACK_COMMAND, *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, env=environ, timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "shop"
    directory.mkdir()
    (directory / "compose.yaml").write_text(WEB_AND_DB)
    return directory


def test_config_prints_the_normalized_stack_as_json(project: Path) -> None:
    result = run(project, "--profile", "full", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert model["name"] == "shop"
    web = model["services"]["web"]
    assert web["image"] == "nginx:1.25"
    assert web["ports"] == [
        {"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}
    ]
    assert web["depends_on"] == {"db": {"condition": "service_started", "required": True}}
    assert model["volumes"]["data"]["name"] == "shop_data"


def test_config_yaml_is_the_default_and_interpolates_from_the_environment(project: Path) -> None:
    result = run(project, "--profile", "full", "config", env={"TAG": "1.27"})
    assert result.returncode == 0, result.stderr
    assert "image: nginx:1.27" in result.stdout
    assert run(project, "--profile", "full", "config", "--no-interpolate").stdout.count(
        "nginx:${TAG:-1.25}"
    ) == 1


def test_config_lists_services_volumes_images_and_profiles(project: Path) -> None:
    assert run(project, "--profile", "full", "config", "--services").stdout.split() == [
        "db", "web"
    ]
    assert run(project, "--profile", "full", "config", "--volumes").stdout.split() == ["data"]
    images = run(project, "--profile", "*", "config", "--images").stdout.split()
    assert sorted(images) == ["nginx:1.25", "postgres", "shop-tools"]
    assert run(project, "--profile", "full", "config", "--profiles").stdout.split() == [
        "dev", "full"
    ]


def test_config_quiet_prints_nothing_and_succeeds(project: Path) -> None:
    result = run(project, "--profile", "full", "config", "-q")
    assert (result.returncode, result.stdout) == (0, "")


def test_keys_the_engine_does_not_implement_yet_are_listed_not_refused(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: nginx\n    blkio_config: {weight: 300}\n"
    )
    result = run(tmp_path, "config")
    assert result.returncode == 0
    assert "not implemented by the engine yet: services.web.blkio_config" in result.stderr


def test_invalid_stack_is_one_line_with_file_line_column_and_key(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    imgae: nginx\n")
    result = run(tmp_path, "config")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'error: compose.yaml:3:5: services.web.imgae: unknown key "imgae" (did you mean "image"?)'
    ]


def test_dependency_cycle_is_printed(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n"
        "  a: {image: x, depends_on: [b]}\n"
        "  b: {image: x, depends_on: [c]}\n"
        "  c: {image: x, depends_on: [a]}\n"
    )
    result = run(tmp_path, "config")
    assert result.returncode == 1
    assert "a -> b -> c -> a" in result.stderr


def test_missing_required_variable_names_it_and_its_message(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: ${IMAGE:?set IMAGE to the image to run}\n"
    )
    result = run(tmp_path, "config")
    assert result.returncode == 1
    assert "IMAGE" in result.stderr and "set IMAGE to the image to run" in result.stderr
    assert "services.web.image" in result.stderr


def test_stdin_is_read_with_dash(tmp_path: Path) -> None:
    result = run(tmp_path, "-f", "-", "config", "--services",
                 stdin="services:\n  one: {image: x}\n")
    assert (result.returncode, result.stdout) == (0, "one\n")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run(tmp_path, "config", "--format", "toml").returncode == 2
    assert run(tmp_path, "frobnicate").returncode == 2


def test_graph_draws_dependencies_as_dot_and_mermaid(project: Path) -> None:
    dot = run(project, "--profile", "full", "graph", "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith("digraph") and '"web" -> "db"' in dot.stdout
    mermaid = run(project, "--profile", "full", "graph", "--format", "mermaid")
    assert mermaid.stdout.startswith("flowchart") and "web" in mermaid.stdout


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    from orchestrator import __version__

    assert run(tmp_path, "version").stdout == f"stack version {__version__}\n"
    assert run(tmp_path, "version", "--short").stdout == f"{__version__}\n"


def test_the_default_stack_is_valid() -> None:
    hello = Path(__file__).resolve().parents[2] / "stacks" / "hello"
    result = run(hello, "config", "--services")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["web", "writer"]


def _modules_after(args: list[str], cwd: Path) -> set[str]:
    code = (
        "import sys\n"
        "from orchestrator.cli.main import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                            text=True, timeout=60)
    return set(result.stderr.split())


def test_commands_import_only_what_they_need(project: Path) -> None:
    heavy = {"jsonschema", "networkx", "trio", "pyroute2", "dataclasses", "difflib"}
    version = _modules_after(["version"], project)
    assert "yaml" not in version and not heavy & version
    config = _modules_after(["--profile", "full", "config"], project)
    assert "yaml" in config and not heavy & config
