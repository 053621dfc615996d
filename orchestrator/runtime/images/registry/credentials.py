"""Registry credentials in Docker's `config.json`, so `docker login` and `stack login` agree.

We read and write the same file Docker does (`$DOCKER_CONFIG/config.json`, else
`~/.docker/config.json`), only its `auths` section, and leave every other key
(credsStore, proxies, plugins' settings...) exactly as it was. Docker Hub is
stored under its historical key `https://index.docker.io/v1/`; any key naming
a Hub host, with or without scheme and path, means `docker.io` when reading.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.spec.errors import StackError

DOCKER_HUB = "docker.io"
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@dataclass(frozen=True)
class Credentials:
    """A username and password (or a personal access token used as one)."""

    username: str
    password: str = field(repr=False)

    def basic_authorization(self) -> str:
        """The `Authorization` header value for HTTP Basic."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def registry_of_config_key(key: str) -> str:
    """`https://index.docker.io/v1/` -> `docker.io`; `http://host:5000/x` -> `host:5000`."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].lower()
    return DOCKER_HUB if text in _HUB_HOSTS else text


def config_key_for(registry: str) -> str:
    """The key under which `docker login` would store this registry."""
    registry = registry_of_config_key(registry)
    return DOCKER_HUB_CONFIG_KEY if registry == DOCKER_HUB else registry


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (as Docker resolves it)."""
    env = os.environ if environ is None else environ
    directory = env.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise StackError(f"cannot read {path}: {error.strerror}") from error
    try:
        document = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise StackError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg}); fix or remove the file"
        ) from error
    if not isinstance(document, dict):
        raise StackError(f"{path}: expected a JSON object; fix or remove the file")
    return document


def _decode(path: Path, key: str, entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            username, sep, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise StackError(
                f"{path}: auths.{key}.auth is not base64 of 'user:password'; "
                f"run `stack login {registry_of_config_key(key)}` again"
            ) from error
        if sep:
            return Credentials(username, password)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password)
    return None


def load_credentials(registry: str, path: Path | None = None) -> Credentials | None:
    """The stored credentials for `registry` (e.g. `docker.io`, `localhost:5000`), if any.

    Entries managed by a credential helper (`credsStore`/`credHelpers`) hold no
    secret in the file and are not read: such a registry is used anonymously.
    """
    path = path or docker_config_path()
    wanted = registry_of_config_key(registry)
    auths = _read(path).get("auths")
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if registry_of_config_key(key) == wanted:
            found = _decode(path, key, entry)
            if found is not None:
                return found
    return None


def _write_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write, fsync, rename: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".config.json.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent="\t")
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def save_credentials(registry: str, credentials: Credentials, path: Path | None = None) -> Path:
    """Store credentials for `stack login`; returns the file written."""
    path = path or docker_config_path()
    document = _read(path)
    auths = document.get("auths")
    if not isinstance(auths, dict):
        auths = document["auths"] = {}
    wanted = registry_of_config_key(registry)
    for key in [k for k in auths if registry_of_config_key(k) == wanted]:
        del auths[key]
    raw = f"{credentials.username}:{credentials.password}".encode()
    auths[config_key_for(registry)] = {"auth": base64.b64encode(raw).decode("ascii")}
    _write_atomic(path, document)
    return path


def remove_credentials(registry: str, path: Path | None = None) -> bool:
    """Forget a registry for `stack logout`; False when nothing was stored for it."""
    path = path or docker_config_path()
    document = _read(path)
    auths = document.get("auths")
    if not isinstance(auths, dict):
        return False
    wanted = registry_of_config_key(registry)
    keys = [k for k in auths if registry_of_config_key(k) == wanted]
    if not keys:
        return False
    for key in keys:
        del auths[key]
    _write_atomic(path, document)
    return True
