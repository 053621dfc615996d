"""`user:` and `group_add` resolved in the container's own /etc/passwd and /etc/group,
read from overlay-format layer dirs (topmost first), with Docker's rules and errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orchestrator.runtime.containers.userdb import (
    ResolvedUser,
    find_container_file,
    resolve_user,
)
from orchestrator.spec.errors import StackError

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment line is not an account
app:x:1000:1000:App,,,:/home/app:/bin/sh
broken:x:notanumber:1::/:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:root,app
audio:x:29:app
app:x:1000:
staff:x:50:
"""
WHITEOUT = object()  # an overlay whiteout: a 0/0 character device
OPAQUE = object()  # an overlay opaque directory


def make_layer(root: Path, entries: dict[str, object]) -> str:
    """A layer dir in overlay format: text files, whiteouts, opaque dirs, symlinks."""
    root.mkdir(parents=True)
    for name, content in entries.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is WHITEOUT:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        elif content is OPAQUE:
            path.mkdir(exist_ok=True)
            os.setxattr(path, "trusted.overlay.opaque", b"y")
        elif isinstance(content, tuple):  # ("symlink", target)
            path.symlink_to(content[1])
        else:
            path.write_text(str(content))
    return str(root)


@pytest.fixture
def image(tmp_path: Path) -> list[str]:
    return [make_layer(tmp_path / "base", {"etc/passwd": PASSWD, "etc/group": GROUP})]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", ResolvedUser(0, 0, (10,), "/root")),
        ("root", ResolvedUser(0, 0, (10,), "/root")),
        ("app", ResolvedUser(1000, 1000, (10, 29), "/home/app")),
        ("1000", ResolvedUser(1000, 1000, (10, 29), "/home/app")),
        ("daemon", ResolvedUser(1, 1, (), "/usr/sbin")),
        ("4242", ResolvedUser(4242, 0, (), "/")),
        ("4242:4343", ResolvedUser(4242, 4343, (), "/")),
        ("app:staff", ResolvedUser(1000, 50, (), "/home/app")),
        ("app:50", ResolvedUser(1000, 50, (), "/home/app")),
        ("1000:wheel", ResolvedUser(1000, 10, (), "/home/app")),
        ("4242:wheel", ResolvedUser(4242, 10, (), "/")),
        (":50", ResolvedUser(0, 50, (), "/root")),
    ],
)
def test_user_spec_resolves_as_docker_does(
    image: list[str], spec: str, expected: ResolvedUser
) -> None:
    assert resolve_user(spec, [], image) == expected


def test_unknown_user_is_one_clear_error(image: list[str]) -> None:
    with pytest.raises(StackError) as caught:
        resolve_user("postgres", [], image)
    assert caught.value.message == (
        "unable to find user postgres: no matching entries in passwd file"
    )
    assert caught.value.path == ("user",)


def test_unknown_group_name_is_an_error(image: list[str]) -> None:
    with pytest.raises(StackError, match="unable to find group video: no matching entries"):
        resolve_user("app:video", [], image)


@pytest.mark.parametrize("spec", ["-1", "2147483648", "app:-5"])
def test_ids_outside_the_kernel_range_are_refused(image: list[str], spec: str) -> None:
    with pytest.raises(StackError, match="out of range"):
        resolve_user(spec, [], image)


def test_group_add_follows_supplementary_groups_names_and_numbers(image: list[str]) -> None:
    user = resolve_user("app", ["staff", "4000", 29, "wheel"], image)
    assert user.additional_gids == (10, 29, 50, 4000)


def test_group_add_applies_with_an_explicit_group_too(image: list[str]) -> None:
    assert resolve_user("4242:4343", ["audio"], image).additional_gids == (29,)


def test_group_add_unknown_name_points_at_its_entry(image: list[str]) -> None:
    with pytest.raises(StackError) as caught:
        resolve_user("app", ["staff", "video"], image)
    assert caught.value.path == ("group_add", 1)
    assert "unable to find group video" in caught.value.message


def test_image_without_passwd_runs_numeric_users_and_refuses_names(tmp_path: Path) -> None:
    bare = [make_layer(tmp_path / "bare", {"bin/sh": "x"})]
    assert resolve_user("", [], bare) == ResolvedUser(0, 0, (), "/")
    assert resolve_user("123:456", ["7"], bare) == ResolvedUser(123, 456, (7,), "/")
    with pytest.raises(StackError, match="unable to find user app"):
        resolve_user("app", [], bare)


def test_upper_layer_passwd_replaces_the_lower_one(tmp_path: Path, image: list[str]) -> None:
    upper = make_layer(
        tmp_path / "upper", {"etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:2000:2000::/srv:/x\n"}
    )
    assert resolve_user("app", [], [upper, *image]).uid == 2000
    assert resolve_user("app", [], image).uid == 1000


def test_whiteout_in_upper_layer_hides_the_lower_passwd(tmp_path: Path, image: list[str]) -> None:
    upper = make_layer(tmp_path / "upper", {"etc/passwd": WHITEOUT})
    layers = [upper, *image]
    assert find_container_file(layers, "/etc/passwd") is None
    with pytest.raises(StackError, match="unable to find user app"):
        resolve_user("app", [], layers)
    # /etc/group is still the lower layer's: only passwd was deleted.
    assert resolve_user("4242:staff", [], layers).gid == 50


def test_whiteout_of_a_parent_directory_hides_everything_below(
    tmp_path: Path, image: list[str]
) -> None:
    upper = make_layer(tmp_path / "upper", {"etc": WHITEOUT})
    assert find_container_file([upper, *image], "/etc/group") is None


def test_opaque_directory_hides_lower_files_but_keeps_its_own(
    tmp_path: Path, image: list[str]
) -> None:
    upper = make_layer(tmp_path / "upper", {"etc": OPAQUE, "etc/group": "mine:x:77:app\n"})
    layers = [upper, *image]
    assert find_container_file(layers, "etc/passwd") is None
    assert find_container_file(layers, "/etc/group") == Path(upper) / "etc" / "group"


def test_directory_merges_with_lower_layers_when_not_opaque(
    tmp_path: Path, image: list[str]
) -> None:
    upper = make_layer(tmp_path / "upper", {"etc/hostname": "x\n"})
    assert find_container_file([upper, *image], "/etc/passwd") == Path(image[0]) / "etc/passwd"


def test_upper_file_hides_a_lower_directory_of_the_same_name(
    tmp_path: Path, image: list[str]
) -> None:
    upper = make_layer(tmp_path / "upper", {"etc": "not a directory"})
    assert find_container_file([upper, *image], "/etc/passwd") is None


def test_symlinks_are_followed_inside_the_container_not_the_host(tmp_path: Path) -> None:
    lower = make_layer(tmp_path / "lower", {"usr/share/base-passwd": PASSWD})
    upper = make_layer(
        tmp_path / "upper",
        {
            "etc/passwd": ("symlink", "../usr/share/base-passwd"),
            "etc/group": ("symlink", "/usr/share/group"),  # absolute: inside, not the host's
        },
    )
    layers = [upper, lower]
    assert find_container_file(layers, "/etc/passwd") == Path(lower) / "usr/share/base-passwd"
    assert find_container_file(layers, "/etc/group") is None
    assert resolve_user("app", [], layers) == ResolvedUser(1000, 1000, (), "/home/app")


def test_symlink_loop_finds_nothing(tmp_path: Path) -> None:
    layer = make_layer(
        tmp_path / "loop", {"etc/passwd": ("symlink", "group"), "etc/group": ("symlink", "passwd")}
    )
    assert find_container_file([layer], "/etc/passwd") is None
