"""Make the relative paths of one canonical stack file absolute.

Only the keys compose treats as host paths are touched: bind-mount sources
(never a named volume's name), build contexts (never a URL or another
service), secrets' and configs' files, env files, label files, `extends.file`,
watched paths, ssh key files, and a local volume's bind `device`. `~` means
$HOME, as in compose: `~/x` and even `~x` are joined under it.

Runs after `transform.canonical`, so every value is already in long form.
Note that compose resolves the paths of every `-f` file against the project
directory, not against the directory of the file that wrote them: the loader
chooses `base_dir` accordingly.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from typing import Any

from .shortsyntax import clean_path

_REMOTE_CONTEXT = ("https://", "http://", "git://", "ssh://", "github.com/", "git@")
_WINDOWS_ABSOLUTE = re.compile(r"^([A-Za-z]:[\\/]|\\\\)")


def resolve_paths(data: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """`data` with its relative host paths joined to `base_dir` (in place)."""
    for service in (data.get("services") or {}).values():
        if isinstance(service, dict):
            _service(service, base_dir)
    for kind in ("secrets", "configs"):
        for body in (data.get(kind) or {}).values():
            if isinstance(body, dict) and isinstance(body.get("file"), str):
                body["file"] = host_path(body["file"], base_dir)
    for body in (data.get("volumes") or {}).values():
        if isinstance(body, dict) and body.get("driver") == "local":
            options = body.get("driver_opts")
            if isinstance(options, dict) and options.get("o") == "bind" and "device" in options:
                options["device"] = host_path(str(options["device"]), base_dir)
    return data


def _service(service: dict[str, Any], base_dir: str) -> None:
    build = service.get("build")
    if isinstance(build, dict):
        if isinstance(build.get("context"), str):
            build["context"] = context_path(build["context"], base_dir)
        contexts = build.get("additional_contexts")
        if isinstance(contexts, dict):
            for name, value in contexts.items():
                if isinstance(value, str):
                    contexts[name] = context_path(value, base_dir)
        if isinstance(build.get("ssh"), list):
            build["ssh"] = [_ssh_key(entry, base_dir) for entry in build["ssh"]]
    for entry in service.get("env_file") or []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            entry["path"] = absolute_path(entry["path"], base_dir)
    if isinstance(service.get("label_file"), list):
        service["label_file"] = [absolute_path(p, base_dir) for p in service["label_file"]]
    extends = service.get("extends")
    file = extends.get("file") if isinstance(extends, dict) else None
    if isinstance(file, str) and not _is_remote(file):
        extends["file"] = absolute_path(file, base_dir)
    develop = service.get("develop")
    if isinstance(develop, dict):
        for trigger in develop.get("watch") or []:
            if isinstance(trigger, dict) and isinstance(trigger.get("path"), str):
                trigger["path"] = _through_symlink(absolute_path(trigger["path"], base_dir))
    for volume in service.get("volumes") or []:
        bind = isinstance(volume, dict) and volume.get("type") == "bind"
        if bind and isinstance(volume.get("source"), str):
            volume["source"] = host_path(volume["source"], base_dir)


# The HOME of the environment a stack is loaded for, when that is not this
# process's own (the engine loads stacks on behalf of CLIs); per thread/task.
LOADING_HOME: ContextVar[str | None] = ContextVar("loading_home", default=None)


def expand_user(path: str) -> str:
    """`~` and `~x` under $HOME, as compose does; unchanged without HOME."""
    if path.startswith("~"):
        home = LOADING_HOME.get() or os.environ.get("HOME")
        if home:
            return clean_path(f"{home}/{path[1:]}")
    return path


def absolute_path(path: str, base_dir: str) -> str:
    """An absolute path stays as written; a relative one is joined and cleaned."""
    path = expand_user(path)
    if not path or path.startswith("/"):
        return path
    return clean_path(f"{base_dir}/{path}")


def host_path(path: str, base_dir: str) -> str:
    """Like `absolute_path`, but a Windows path (`C:\\x`, `\\\\host`) is also absolute."""
    path = expand_user(path)
    if path.startswith("/") or _WINDOWS_ABSOLUTE.match(path):
        return path
    return clean_path(f"{base_dir}/{path}")


def context_path(path: str, base_dir: str) -> str:
    """A build context: URLs, `service:x` and `docker-image://` stay as they are."""
    if "://" in path or path.startswith("service:") or path.startswith(_REMOTE_CONTEXT):
        return path
    return absolute_path(path, base_dir)


def _ssh_key(entry: Any, base_dir: str) -> Any:
    if not isinstance(entry, str):
        return entry
    key, sep, key_path = entry.partition("=")
    return f"{key}={host_path(key_path, base_dir)}" if sep else entry


def _is_remote(path: str) -> bool:
    return "://" in path or path.startswith("git@")


def _through_symlink(path: str) -> str:
    """The first symlinked component of `path` replaced by its target, as compose does."""
    current = ""
    for part in path.split("/"):
        if not part:
            continue
        current = f"{current}/{part}"
        if os.path.islink(current):
            return path.replace(current, os.path.realpath(current), 1)
    return path
