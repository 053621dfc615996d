"""Finding the files, the project directory, its name, environment and profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.spec.discovery import (
    ProjectOptions,
    normalize_project_name,
    project_name_for,
    resolve_project,
)
from orchestrator.spec.errors import StackError, Warnings

SERVICE = "services:\n  a:\n    image: x\n"


def resolve(cwd: Path, environ: dict[str, str] | None = None, **options):
    return resolve_project(
        ProjectOptions(cwd=str(cwd), environ=environ or {}, **options), Warnings()
    )


def test_default_file_is_found_in_a_parent_directory(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SERVICE)
    deeper = tmp_path / "a" / "b"
    deeper.mkdir(parents=True)
    project = resolve(deeper)
    assert project.files == [str(tmp_path / "compose.yaml")]
    assert project.directory == str(tmp_path)


def test_compose_yaml_wins_over_docker_compose_yml_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SERVICE)
    (tmp_path / "docker-compose.yml").write_text(SERVICE)
    warnings = Warnings()
    project = resolve_project(ProjectOptions(cwd=str(tmp_path), environ={}), warnings)
    assert project.files == [str(tmp_path / "compose.yaml")]
    assert "using compose.yaml" in warnings.messages[0]


def test_override_file_is_merged_after_the_default_file(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(SERVICE)
    (tmp_path / "docker-compose.override.yml").write_text(SERVICE)
    project = resolve(tmp_path)
    assert project.files == [
        str(tmp_path / "docker-compose.yml"),
        str(tmp_path / "docker-compose.override.yml"),
    ]


def test_override_file_is_not_added_to_explicit_files(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SERVICE)
    (tmp_path / "compose.override.yaml").write_text(SERVICE)
    project = resolve(tmp_path, files=["compose.yaml"])
    assert project.files == [str(tmp_path / "compose.yaml")]


def test_compose_file_variable_lists_files_with_the_path_separator(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(SERVICE)
    (tmp_path / "two.yaml").write_text(SERVICE)
    project = resolve(tmp_path, environ={"COMPOSE_FILE": f"one.yaml{os.pathsep}two.yaml"})
    assert project.files == [str(tmp_path / "one.yaml"), str(tmp_path / "two.yaml")]


def test_compose_file_can_come_from_the_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(SERVICE)
    (tmp_path / ".env").write_text("COMPOSE_FILE=one.yaml\n")
    assert resolve(tmp_path).files == [str(tmp_path / "one.yaml")]


def test_missing_stack_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no stack file found"):
        resolve(tmp_path)
    with pytest.raises(StackError, match="stack file not found"):
        resolve(tmp_path, files=["nope.yaml"])


def test_process_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SERVICE)
    (tmp_path / ".env").write_text("TAG=from-file\nONLY=file\n")
    project = resolve(tmp_path, environ={"TAG": "from-env"})
    assert project.environment["TAG"] == "from-env"
    assert project.environment["ONLY"] == "file"


def test_env_file_option_replaces_dotenv(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SERVICE)
    (tmp_path / ".env").write_text("A=dotenv\n")
    (tmp_path / "one.env").write_text("A=one\nB=one\n")
    (tmp_path / "two.env").write_text("B=two\n")
    project = resolve(tmp_path, env_files=["one.env", "two.env"])
    assert project.environment == {"A": "one", "B": "two"}


def test_project_name_precedence(tmp_path: Path) -> None:
    directory = tmp_path / "My Proj.X_1"
    directory.mkdir()
    (directory / "compose.yaml").write_text(SERVICE)
    assert project_name_for(resolve(directory), None) == "myprojx_1"
    assert project_name_for(resolve(directory), "Declared Name") == "declaredname"
    assert project_name_for(resolve(directory), "") == "myprojx_1"
    env = {"COMPOSE_PROJECT_NAME": "fromenv"}
    assert project_name_for(resolve(directory, environ=env), "declared") == "fromenv"
    assert project_name_for(resolve(directory, project_name="cli"), "declared") == "cli"


def test_invalid_explicit_project_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SERVICE)
    with pytest.raises(StackError, match="invalid project name 'Bad Name'"):
        resolve(tmp_path, project_name="Bad Name")


def test_profiles_come_from_compose_profiles_when_none_are_given(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(SERVICE)
    assert resolve(tmp_path, environ={"COMPOSE_PROFILES": "a, b"}).profiles == ["a", "b"]
    assert resolve(tmp_path, environ={"COMPOSE_PROFILES": "a"}, profiles=["c"]).profiles == ["c"]


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [("_-x", "x"), ("My.App", "myapp"), ("a_b-c", "a_b-c"), ("ÄÖ", "")],
)
def test_project_names_are_normalized_like_compose(raw: str, normalized: str) -> None:
    assert normalize_project_name(raw) == normalized
