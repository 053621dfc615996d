"""Where `stack cp` puts what it copies out of a container, as docker cp does."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from orchestrator.cli.copy_command import _endpoint, _landing, _unpacking
from orchestrator.spec.errors import StackError


@pytest.mark.parametrize(("argument", "parsed"), [
    ("web:/etc/hosts", ("web", "/etc/hosts")),
    ("proj-web-1:/x", ("proj-web-1", "/x")),
    ("web:", ("web", "/")),
    ("./a:b", (None, "./a:b")),
    ("/abs/path", (None, "/abs/path")),
    ("-", (None, "-")),
    ("plain", (None, "plain")),
])
def test_an_argument_names_a_container_path_or_a_host_path(argument: str,
                                                           parsed: tuple) -> None:
    assert _endpoint(argument) == parsed


def test_into_an_existing_directory_keeps_the_name(tmp_path: Path) -> None:
    assert _landing("/etc/hosts", "other", str(tmp_path), contents=False) == (str(tmp_path),
                                                                             None)


def test_to_a_new_name_renames(tmp_path: Path) -> None:
    target = tmp_path / "new.txt"
    assert _landing("/etc/hosts", "other", str(target), contents=False) == (str(tmp_path),
                                                                           "new.txt")


def test_contents_make_the_destination_directory(tmp_path: Path) -> None:
    target = tmp_path / "made"
    assert _landing("/data/.", "directory", str(target), contents=True) == (str(target), None)
    assert target.is_dir()


def test_impossible_destinations_are_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StackError, match="cannot copy a directory"):
        _landing("/data", "directory", str(tmp_path / "file"), contents=False)
    with pytest.raises(StackError, match="does not exist"):
        _landing("/etc/hosts", "other", str(tmp_path / "missing") + "/", contents=False)
    with pytest.raises(StackError, match="does not exist"):
        _landing("/etc/hosts", "other", str(tmp_path / "no" / "where"), contents=False)


def _archive(*members: tarfile.TarInfo) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        for member in members:
            archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    data.seek(0)
    return data


def _entry(name: str, **fields: object) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(member, key, value)
    return member


def test_the_top_entry_is_renamed_and_owned_by_whoever_copies(tmp_path: Path) -> None:
    data = _archive(_entry("./dir", type=tarfile.DIRTYPE, mode=0o755),
                    _entry("./dir/f", size=1, uid=4321, gid=4321),
                    _entry("./dir/hard", type=tarfile.LNKTYPE, linkname="./dir/f"))
    with tarfile.open(fileobj=data, mode="r|") as archive:
        archive.extractall(tmp_path, filter=_unpacking("renamed", keep_owner=False))
    assert (tmp_path / "renamed" / "f").read_bytes() == b"x"
    assert os.stat(tmp_path / "renamed" / "f").st_uid == os.getuid()
    assert os.stat(tmp_path / "renamed" / "hard").st_ino == os.stat(
        tmp_path / "renamed" / "f").st_ino


def test_nothing_lands_outside_the_destination(tmp_path: Path) -> None:
    outside, destination = tmp_path / "outside", tmp_path / "destination"
    outside.mkdir()
    destination.mkdir()
    data = _archive(_entry("./link", type=tarfile.SYMTYPE, linkname=str(outside)),
                    _entry("./link/planted", size=1))
    with tarfile.open(fileobj=data, mode="r|") as archive, pytest.raises(tarfile.TarError):
        archive.extractall(destination, filter=_unpacking(None, keep_owner=False))
    assert list(outside.iterdir()) == []
