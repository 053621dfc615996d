"""A service's configs and secrets: each a read-only file at its target in the container.

Compose's top-level `configs:` and `secrets:` declare where the content comes
from (a host file, an environment variable, inline text); a service's
reference says where it goes and with which owner and mode. Kept apart from
volumes because the rules differ: text is written by the runtime first (a
`FileToWrite`), and a relative target has a default folder per kind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestrator.runtime.containers.launchspec import Mount
from orchestrator.runtime.containers.mount_plan import (
    FileToWrite,
    MountContext,
    MountPlan,
    mount_target,
    non_negative_integer,
)
from orchestrator.runtime.containers.service_keys import ServiceKeys

FILE_DEFAULTS = {"configs": "/", "secrets": "/run/secrets/"}  # where a relative target goes


def config_or_secret(
    keys: ServiceKeys, kind: str, index: int, reference: Any, context: MountContext, plan: MountPlan
) -> Mount:
    """One config or secret: a bind of its file, or a file written from its text.

    As compose does, a `file:` source is bound as it is (later edits show);
    text from `content:` or `environment:` is written with uid, gid and mode.
    Unlike compose, which ignores them there, uid/gid/mode on a file source
    are honoured by writing a copy.
    """
    where = (kind, index)
    singular = kind[:-1]
    if isinstance(reference, str):
        reference = {"source": reference}
    source = reference.get("source") if isinstance(reference, dict) else None
    declared = (context.project_model.get(kind) or {}).get(source) if source else None
    if not isinstance(declared, dict):
        raise keys.error(
            where, f"undefined {singular} {source!r}", f"declare it under the top-level {kind}:"
        )
    if declared.get("external"):
        raise keys.error(
            where,
            f"external {kind} are not supported ({source})",
            "give it a file:, environment: or content:",
        )
    for option in ("driver", "template_driver"):
        if declared.get(option):
            raise keys.error(where, f"{kind}.{source}.{option} is not supported")
    target = reference.get("target") or source
    if not target.startswith("/"):
        target = FILE_DEFAULTS[kind] + target
    target = mount_target(keys, (*where, "target"), target)
    owner_given = any(reference.get(key) is not None for key in ("uid", "gid", "mode"))
    uid = non_negative_integer(keys, (*where, "uid"), reference.get("uid") or 0)
    gid = non_negative_integer(keys, (*where, "gid"), reference.get("gid") or 0)
    mode = _file_mode(keys, (*where, "mode"), reference.get("mode"))

    if declared.get("environment"):
        variable = declared["environment"]
        if variable not in context.project_environment:
            raise keys.error(
                where,
                f"environment variable {variable} required by {singular} {source} is not set",
                f"set {variable}, or use a file:",
            )
        content = context.project_environment[variable].encode()
    elif declared.get("file"):
        host_file = str(declared["file"])
        if not os.path.exists(host_file):
            raise keys.error(where, f"{singular} {source}: file {host_file} does not exist")
        if not owner_given or not os.path.isfile(host_file):
            create = "dir" if os.path.isdir(host_file) else "file"
            return Mount(
                target, source=host_file, read_only=True, create=create, origin=singular
            )
        content = Path(host_file).read_bytes()
    else:
        content = str(declared.get("content") or "").encode()
    relative = f"files/{kind}/{index}-{source}"
    plan.files.append(FileToWrite(relative, content, mode, uid, gid))
    return Mount(
        target, source=str(context.container_dir / relative), read_only=True, create="file",
        origin=singular,
    )


def _file_mode(keys: ServiceKeys, where: tuple[str | int, ...], mode: Any) -> int:
    if mode is None:
        return 0o444
    try:
        number = int(mode, 8) if isinstance(mode, str) else int(mode)
    except ValueError:
        raise keys.error(where, f"invalid file mode {mode!r}", "write it in octal: 0440") from None
    if not 0 <= number <= 0o7777:
        raise keys.error(where, f"invalid file mode {mode!r}", "write it in octal: 0440")
    return number
