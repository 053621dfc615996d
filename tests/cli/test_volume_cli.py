"""`stack volume ls|inspect|create|rm|prune` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.stack_cli import STACK_COMMAND

from orchestrator.cli.main import main


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STACK_ROOT", str(tmp_path / "state"))
    return tmp_path / "state"


def stack(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["volume", *args])
    out, err = capsys.readouterr()
    return code, out, err


def use_volume(root: Path, container: str, volume: str) -> None:
    """A container of the runtime that mounts `volume` (its recorded launch spec)."""
    folder = root / "containers" / f"id-{container}"
    folder.mkdir(parents=True)
    source = root / "volumes" / volume / "_data"
    mounts = [{"kind": "bind", "source": str(source), "target": "/data"}]
    config = {"name": container, "spec": {"mounts": mounts}}
    (folder / "config.json").write_text(json.dumps(config))


def test_created_volume_is_listed_and_inspected_like_docker(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack(capsys, "create", "--label", "team=db", "--label", "tier", "pgdata") == (
        0, "pgdata\n", "")
    assert stack(capsys, "ls")[1] == "DRIVER    VOLUME NAME\nlocal     pgdata\n"
    assert stack(capsys, "ls", "-q")[1] == "pgdata\n"
    row = json.loads(stack(capsys, "ls", "--format", "json")[1])
    assert (row["Name"], row["Driver"], row["Labels"]) == ("pgdata", "local", "team=db,tier=")

    code, out, _ = stack(capsys, "inspect", "pgdata")
    assert code == 0
    shown = json.loads(out)
    assert out.startswith('[\n    {\n        "CreatedAt"')
    assert shown == [{
        "CreatedAt": shown[0]["CreatedAt"],
        "Driver": "local",
        "Labels": {"team": "db", "tier": ""},
        "Mountpoint": str(root / "volumes" / "pgdata" / "_data"),
        "Name": "pgdata",
        "Options": {},
        "Scope": "local",
    }]


def test_create_without_a_name_makes_an_anonymous_volume(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = stack(capsys, "create")
    name = out.strip()
    assert code == 0 and len(name) == 64
    shown = json.loads(stack(capsys, "inspect", name)[1])[0]
    assert shown["Labels"] == {"com.docker.volume.anonymous": ""}


def test_create_with_bind_options_and_unsupported_drivers(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = tmp_path / "srv"
    device.mkdir()
    code, _, _ = stack(capsys, "create", "--opt", "type=none", "--opt", "o=bind",
                       "--opt", f"device={device}", "hostdata")
    assert code == 0
    assert json.loads(stack(capsys, "inspect", "hostdata")[1])[0]["Options"]["device"] == str(
        device)
    assert stack(capsys, "create", "--driver", "nfs", "x1") == (
        1, "", "error: volume driver nfs is not supported (only the 'local' driver exists)\n")
    code, _, err = stack(capsys, "create", "bad name")
    assert code == 1 and err.startswith("error: invalid volume name 'bad name'")


def test_ls_filters_by_label_name_and_dangling(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, label in (("web-cache", "app=web"), ("db-data", "app=db"), ("db-logs", "app=db")):
        stack(capsys, "create", "--label", label, name)
    use_volume(root, "shop-db-1", "db-data")
    assert stack(capsys, "ls", "-q", "--filter", "label=app=db")[1] == "db-data\ndb-logs\n"
    assert stack(capsys, "ls", "-q", "--filter", "label=app")[1].count("\n") == 3
    assert stack(capsys, "ls", "-q", "--filter", "name=db-")[1] == "db-data\ndb-logs\n"
    assert stack(capsys, "ls", "-q", "--filter", "dangling=true")[1] == "db-logs\nweb-cache\n"
    assert stack(capsys, "ls", "-q", "--filter", "dangling=false")[1] == "db-data\n"
    code, _, err = stack(capsys, "ls", "--filter", "colour=red")
    assert code == 1 and err.startswith("error: invalid filter 'colour'")
    code, _, err = stack(capsys, "ls", "--filter", "dangling")
    assert code == 1 and "bad format of filter" in err


def test_rm_removes_what_it_can_and_names_what_it_cannot(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("old", "busy"):
        stack(capsys, "create", name)
    use_volume(root, "shop-web-1", "busy")
    code, out, err = stack(capsys, "rm", "old", "busy", "ghost")
    assert (code, out) == (1, "old\n")
    assert err.splitlines() == [
        "error: remove busy: volume is in use - [shop-web-1] (remove those containers first)",
        "error: no such volume: ghost",
    ]
    assert stack(capsys, "rm", "-f", "ghost") == (0, "ghost\n", "")
    assert stack(capsys, "ls", "-q")[1] == "busy\n"


def test_prune_reports_deleted_volumes_and_reclaimed_space(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack(capsys, "create", "named")
    anonymous = stack(capsys, "create")[1].strip()
    (root / "volumes" / anonymous / "_data" / "f").write_bytes(b"x" * 2048)
    assert stack(capsys, "prune", "-f") == (
        0, f"Deleted Volumes:\n{anonymous}\n\nTotal reclaimed space: 2.05kB\n", "")
    assert stack(capsys, "prune", "-f") == (0, "Total reclaimed space: 0B\n", "")
    use_volume(root, "keeper-1", "named")
    assert stack(capsys, "prune", "--all", "--force")[1] == "Total reclaimed space: 0B\n"
    stack(capsys, "create", "--label", "keep", "kept")
    stack(capsys, "create", "spare")
    assert stack(capsys, "prune", "-a", "-f", "--filter", "label!=keep")[1].startswith(
        "Deleted Volumes:\nspare\n\n")
    assert stack(capsys, "ls", "-q")[1] == "kept\nnamed\n"


def test_inspect_of_a_missing_volume_fails_after_showing_the_others(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack(capsys, "create", "there")
    code, out, err = stack(capsys, "inspect", "there", "ghost")
    assert code == 1 and [v["Name"] for v in json.loads(out)] == ["there"]
    assert err == "error: no such volume: ghost\n"


def test_volume_commands_run_as_a_program(tmp_path: Path) -> None:
    env = {**os.environ, "STACK_ROOT": str(tmp_path)}
    command = [*STACK_COMMAND, "volume"]
    created = subprocess.run([*command, "create", "data"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert (created.returncode, created.stdout) == (0, "data\n")
    listed = subprocess.run([*command, "ls", "-q"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert listed.stdout == "data\n"
    usage = subprocess.run([*command, "frobnicate"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2
