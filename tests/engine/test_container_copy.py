"""The tar commands `stack cp` runs in a container."""

from __future__ import annotations

import pytest

from orchestrator.engine.container_copy import tar_create_argv, tar_extract_argv


@pytest.mark.parametrize(("path", "tail"), [
    ("/etc/hostname", ["-C", "/etc", "./hostname"]),
    ("/data/", ["-C", "/", "./data"]),
    ("/-odd", ["-C", "/", "./-odd"]),  # never read as an option
    ("/data/.", ["-C", "/data", "."]),  # the contents
    ("/", ["-C", "/", "."]),
])
def test_an_archive_holds_the_path_under_its_own_name_or_its_contents(path: str,
                                                                      tail: list[str]) -> None:
    assert tar_create_argv(path, follow_links=False) == ["tar", "-c", "-f", "-", *tail]


def test_following_links_asks_tar_to_dereference() -> None:
    assert "-h" in tar_create_argv("/x", follow_links=True)


def test_unpacked_files_belong_to_root_unless_owners_are_kept() -> None:
    assert tar_extract_argv("/dst", keep_owner=False) == ["tar", "-x", "-f", "-", "-o", "-C",
                                                          "/dst"]
    assert "--numeric-owner" in tar_extract_argv("/dst", keep_owner=True)
