"""Who a container runs as: `user:` and `group_add` resolved in the container's own files.

Docker looks names up in the *container's* `/etc/passwd` and `/etc/group`,
never the host's, so `user: postgres` means whatever uid the image gave
postgres. We read those files straight from the image's unpacked layers
(overlay format, topmost first), honouring whiteouts and opaque directories,
before anything is mounted. The rules follow Docker's (runc's user lookup)
exactly, errors included, because users search for its error messages.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.spec.errors import Path as ErrorPath
from orchestrator.spec.errors import StackError

MAX_ID = (1 << 31) - 1
_USER: ErrorPath = ("user",)  # errors carry the service key they are about
_MAX_SYMLINKS = 40  # as the kernel's path walk


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str  # the user's home from passwd, "/" when the user has no entry


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


def resolve_user(
    spec: str, group_add: Iterable[str | int], lowers: Sequence[str | Path]
) -> ResolvedUser:
    """`user:` ("name", "uid", "name:group", "uid:gid", "" for root) and `group_add`.

    A numeric uid needs no passwd entry (its gid is then 0 unless given); a
    name must have one. Without an explicit group, the user's supplementary
    groups come from /etc/group; `group_add` entries are appended, names
    looked up in /etc/group and numbers taken as they are.
    """
    passwd_text = read_container_file(lowers, "/etc/passwd")
    group_text = read_container_file(lowers, "/etc/group")
    accounts = _parse_passwd(passwd_text)
    groups = _parse_group(group_text)

    user_arg, _, group_arg = spec.partition(":")
    group_arg = group_arg.split(":", 1)[0]
    uid_arg = _as_int(user_arg)
    gid_arg = _as_int(group_arg)

    uid, gid, home = 0, 0, "/"
    if user_arg == "":
        matches = [a for a in accounts if a.uid == 0]
    elif uid_arg is not None:
        matches = [a for a in accounts if a.uid == uid_arg]
    else:
        matches = [a for a in accounts if a.name == user_arg]
    matched_name = ""
    if matches:
        account = matches[0]  # the first entry wins, as in every libc
        matched_name, uid, gid, home = account.name, account.uid, account.gid, account.home
    elif user_arg:
        if uid_arg is None:
            raise StackError(
                f"unable to find user {user_arg}: no matching entries in passwd file",
                path=_USER,
                hint="use a user the image's /etc/passwd lists, or a numeric uid",
            )
        uid = _in_range(uid_arg, "uid", _USER)

    supplementary: list[int] = []
    if group_arg:
        if gid_arg is None:
            found = [g for g in groups if g.name == group_arg]
        else:
            found = [g for g in groups if g.gid == gid_arg]
        if found:
            gid = found[0].gid
        elif gid_arg is None:
            raise StackError(
                f"unable to find group {group_arg}: no matching entries in group file",
                path=_USER,
                hint="use a group the image's /etc/group lists, or a numeric gid",
            )
        else:
            gid = _in_range(gid_arg, "gid", _USER)
    elif matched_name:
        supplementary = [g.gid for g in groups if matched_name in g.members]

    return ResolvedUser(
        uid=uid,
        gid=gid,
        additional_gids=_unique([*supplementary, *_additional_groups(group_add, groups)]),
        home=home or "/",
    )


def _additional_groups(group_add: Iterable[str | int], groups: list[_Group]) -> list[int]:
    gids = []
    for index, entry in enumerate(group_add):
        text = str(entry)
        found = [g for g in groups if g.name == text or str(g.gid) == text]
        if found:
            gids.append(found[0].gid)
            continue
        number = _as_int(text)
        if number is None:
            raise StackError(
                f"unable to find group {text}: no matching entries in group file",
                path=("group_add", index),
                hint="use a group the image's /etc/group lists, or a numeric gid",
            )
        gids.append(_in_range(number, "gid", ("group_add", index)))
    return gids


def read_container_file(lowers: Sequence[str | Path], path: str) -> str | None:
    """The text of `path` as the container will see it, or None when it has none."""
    found = find_container_file(lowers, path)
    if found is None:
        return None
    try:
        return found.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def find_container_file(lowers: Sequence[str | Path], path: str) -> Path | None:
    """Where the file at `path` (inside) lives in the layer dirs (topmost first).

    Walks the path one component at a time the way overlayfs merges: a
    directory merges with the lower layers' directories of the same name
    until one is opaque; anything else in an upper layer — a file or a
    whiteout — hides what is below. Symlinks are followed inside the
    container's tree, never out to the host's.
    """
    parts = _components(path)
    for _ in range(_MAX_SYMLINKS):
        outcome = _walk([Path(layer) for layer in lowers], parts)
        if outcome is None or isinstance(outcome, Path):
            return outcome
        parts = outcome  # a symlink: walk again from the root along its target
    return None


def _walk(layers: list[Path], parts: list[str]) -> Path | list[str] | None:
    """A file's path, the components to walk instead (a symlink), or None."""
    directories = layers
    for index, name in enumerate(parts):
        merged: list[Path] = []
        for directory in directories:
            entry = directory / name
            try:
                info = os.lstat(entry)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                merged.append(entry)
                if _is_opaque(entry):
                    break
                continue
            if merged:
                break  # a non-directory below a directory is hidden by it
            last = index == len(parts) - 1
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(entry)
                base = "" if target.startswith("/") else "/".join(parts[:index])
                return _components(posixpath.join("/", base, target)) + parts[index + 1 :]
            # A whiteout (a 0/0 character device) is not a regular file: like
            # any non-directory, it hides the lower layers, so the file is gone.
            return entry if last and stat.S_ISREG(info.st_mode) else None
        if not merged:
            return None
        directories = merged
    return None  # the path names a directory


def _components(path: str) -> list[str]:
    return [part for part in posixpath.normpath("/" + path).split("/") if part]


def _is_opaque(directory: Path) -> bool:
    try:
        return os.getxattr(directory, "trusted.overlay.opaque") == b"y"
    except OSError as error:
        # No such xattr, a filesystem without xattrs, or not root (trusted.*
        # is root-only): in every case nothing marks the directory opaque.
        if error.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM, errno.EACCES):
            return False
        raise


def _parse_passwd(text: str | None) -> list[_Account]:
    """`name:password:uid:gid:gecos:home:shell` lines; malformed ones are skipped."""
    accounts = []
    for fields in _entries(text):
        if len(fields) < 4:
            continue
        uid, gid = _as_int(fields[2]), _as_int(fields[3])
        if uid is None or gid is None:
            continue
        accounts.append(_Account(fields[0], uid, gid, fields[5] if len(fields) > 5 else ""))
    return accounts


def _parse_group(text: str | None) -> list[_Group]:
    """`name:password:gid:member,member` lines; malformed ones are skipped."""
    groups = []
    for fields in _entries(text):
        gid = _as_int(fields[2]) if len(fields) > 2 else None
        if gid is None:
            continue
        members = fields[3].split(",") if len(fields) > 3 else []
        groups.append(_Group(fields[0], gid, tuple(m.strip() for m in members if m.strip())))
    return groups


def _entries(text: str | None) -> Iterable[list[str]]:
    for line in (text or "").splitlines():
        line = line.strip()
        # NIS compat lines (`+user`, `-user`) name no local account.
        if line and not line.startswith(("#", "+", "-")):
            yield line.split(":")


def _as_int(text: str) -> int | None:
    text = text.strip()
    digits = text[1:] if text.startswith(("+", "-")) else text
    return int(text) if digits.isdigit() and digits.isascii() else None


def _in_range(number: int, what: str, path: ErrorPath) -> int:
    if not 0 <= number <= MAX_ID:
        raise StackError(f"{what} {number} is out of range", path=path, hint=f"use 0 to {MAX_ID}")
    return number


def _unique(numbers: Iterable[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(numbers))
