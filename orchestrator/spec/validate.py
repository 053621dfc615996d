"""Checks on the whole normalized model that a JSON schema cannot express.

The schema sees one value at a time; these checks need two places at once: a
reference and what it refers to, two services claiming one container name,
a dependency chain that comes back on itself. They run on the final model
(after merge, normalize and the profile filter), so a reference is judged
against what will actually run, and they accept and reject exactly what
`docker compose config` does. Only the wording is ours: every error names
the file, line, key path and the thing that is wrong, once.

Checks run in a fixed order (top-level secrets, then services by name, each
in compose's order of checks, then cycles, then container names) so the same
file always reports the same first error, where compose's map iteration
would pick one at random.

Host-port conflicts are not checked here but in `host_ports`: compose
accepts two services publishing one host port, so `stack config` must too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .errors import Path, SourceMap, format_path
from .graph import build_graph, service_refs

_SERVICE_PREFIX = "service:"
_HEALTHCHECK_STARTS = ("CMD", "CMD-SHELL", "NONE")
_WATCH_WITHOUT_TARGET = ("rebuild", "restart")


def validate_model(
    model: dict[str, Any],
    source: SourceMap,
    *,
    disabled: Mapping[str, Any] | None = None,
) -> None:
    """Raise a `StackError` for the first semantic mistake in `model`.

    `disabled` holds the services the profile filter removed (name -> their
    definition): an optional dependency (`required: false`) on one of those
    is allowed, as in compose; on a service that does not exist at all, it
    is an error like any other.
    """
    disabled = disabled or {}
    services: dict[str, Any] = model.get("services") or {}
    _check_top_level_secrets(model, source)
    for name in sorted(services):
        _check_service(name, services[name], model, source, disabled)
    _check_cycles(model, source)
    _check_container_names(services, source)


# --- per service, in compose's order -------------------------------------------------------


def _check_service(
    name: str,
    service: dict[str, Any],
    model: dict[str, Any],
    source: SourceMap,
    disabled: Mapping[str, Any],
) -> None:
    at: Path = ("services", name)
    services = model.get("services") or {}
    _check_runnable(name, service, services, source)
    if service.get("network_mode") and service.get("networks"):
        raise source.error(
            (*at, "networks"),
            "network_mode and networks cannot be used together",
            "a service that shares another network stack joins no networks of its own",
        )
    for network in service.get("networks") or {}:
        _require(model, "networks", network, (*at, "networks", network), name, source)
    _check_healthcheck(service, at, source)
    _check_service_refs(name, service, services, source, disabled)
    for i, volume in enumerate(service.get("volumes") or []):
        # Only named volumes refer to the top level; binds and anonymous volumes stand alone.
        if volume.get("type") == "volume" and volume.get("source"):
            path = (*at, "volumes", i)
            _require(
                model,
                "volumes",
                volume["source"],
                path,
                name,
                source,
                f"or write ./{volume['source']} for a bind mount of a directory",
            )
    for i, secret in enumerate((service.get("build") or {}).get("secrets") or []):
        _require(
            model,
            "secrets",
            secret.get("source"),
            (*at, "build", "secrets", i),
            name,
            source,
            what="build secret",
        )
    for i, config in enumerate(service.get("configs") or []):
        _require(model, "configs", config.get("source"), (*at, "configs", i), name, source)
    for i, model_name in _model_refs(service.get("models")):
        _require(model, "models", model_name, (*at, "models", i), name, source)
    for i, secret in enumerate(service.get("secrets") or []):
        _require(model, "secrets", secret.get("source"), (*at, "secrets", i), name, source)
    _check_scale(name, service, source)
    _check_resources(service, at, source)
    _check_watch(service, at, source)
    _check_mount_targets(service, at, source)


def _check_runnable(
    name: str, service: dict[str, Any], services: dict[str, Any], source: SourceMap
) -> None:
    """A service needs something to run: an image, a build, a provider or a host rootfs."""
    at: Path = ("services", name)
    build = service.get("build")
    extension = service.get("x-stack")
    rootfs = extension.get("rootfs") if isinstance(extension, dict) else None
    if not (service.get("image") or build is not None or service.get("provider") or rootfs):
        raise source.error(
            at,
            f'service "{name}" has no image, build or x-stack.rootfs',
            "set image: to run a published image, build: to build one, "
            "or x-stack: {rootfs: /} to run on the host's own files",
        )
    if build is None:
        return
    if build.get("dockerfile") and build.get("dockerfile_inline"):
        raise source.error(
            (*at, "build", "dockerfile_inline"),
            "build.dockerfile and build.dockerfile_inline cannot be used together",
        )
    for context, value in (build.get("additional_contexts") or {}).items():
        if not (isinstance(value, str) and value.startswith(_SERVICE_PREFIX)):
            continue
        target = value[len(_SERVICE_PREFIX) :]
        path = (*at, "build", "additional_contexts", context)
        if target not in services:
            raise source.error(
                path,
                f'build context "{context}" refers to undefined service "{target}"',
                _did_you_mean(target, services),
            )
        if services[target].get("build") is None:
            raise source.error(
                path,
                f'build context "{context}" refers to service "{target}", '
                "which has no build section to build from",
            )
    platforms = build.get("platforms") or []
    platform = service.get("platform")
    if platforms and platform and platform not in platforms:
        raise source.error(
            (*at, "platform"),
            f'platform "{platform}" is not one of build.platforms ({", ".join(platforms)})',
        )


def _check_healthcheck(service: dict[str, Any], at: Path, source: SourceMap) -> None:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test and test[0] not in _HEALTHCHECK_STARTS:
        raise source.error(
            (*at, "healthcheck", "test"),
            f'healthcheck.test must start with "CMD", "CMD-SHELL" or "NONE", not "{test[0]}"',
            'write ["CMD-SHELL", "your command"] to run it through a shell',
        )


def _check_service_refs(
    name: str,
    service: dict[str, Any],
    services: dict[str, Any],
    source: SourceMap,
    disabled: Mapping[str, Any],
) -> None:
    """Every service named by depends_on, links, volumes_from or `service:x` must exist.

    Normalize has already copied links, volumes_from and `service:x` into
    depends_on (as compose does); the error points at the key the user wrote.
    """
    at: Path = ("services", name)
    explicit = {ref.target for ref in service_refs(service) if ref.kind != "depends_on"}
    for ref in service_refs(service):
        if ref.target in services:
            continue
        path = (*at, *ref.path)
        if ref.kind == "depends_on":
            if ref.target in explicit and path not in source:
                continue  # added by normalize for a link or the like: reported there
            if ref.target in disabled and not ref.required:
                continue
        if ref.target in disabled:
            profiles = (disabled[ref.target] or {}).get("profiles") or []
            raise source.error(
                path,
                f'service "{name}" needs service "{ref.target}", '
                f"which runs only with profile {' or '.join(profiles)}",
                f"enable it with --profile {profiles[0] if profiles else ref.target}"
                + (", or set required: false" if ref.kind == "depends_on" else ""),
            )
        raise source.error(
            path,
            f'service "{name}" {_REF_VERBS[ref.kind]} undefined service "{ref.target}"',
            _did_you_mean(ref.target, services),
        )


_REF_VERBS = {
    "depends_on": "depends on",
    "links": "links to",
    "volumes_from": "takes volumes from",
    "network_mode": "shares the network stack of",
    "ipc": "shares the IPC namespace of",
    "pid": "shares the PID namespace of",
    "uts": "shares the UTS namespace of",
}


def replica_count(service: dict[str, Any]) -> int:
    """How many containers a service runs, as compose counts them (scale wins)."""
    if service.get("scale") is not None:
        return int(service["scale"])
    replicas = (service.get("deploy") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def _check_scale(name: str, service: dict[str, Any], source: SourceMap) -> None:
    at: Path = ("services", name)
    scale = service.get("scale")
    replicas = (service.get("deploy") or {}).get("replicas")
    if scale is not None and replicas is not None and scale != replicas:
        raise source.error(
            (*at, "scale"),
            f"scale ({scale}) and deploy.replicas ({replicas}) disagree",
            "set only one of them",
        )
    if scale is not None and scale < 0:
        raise source.error((*at, "scale"), f"scale must be 0 or more, not {scale}")
    if replicas is not None and replicas < 0:
        raise source.error(
            (*at, "deploy", "replicas"), f"deploy.replicas must be 0 or more, not {replicas}"
        )
    container_name = service.get("container_name")
    if container_name and replica_count(service) > 1:
        key = "scale" if scale is not None else "deploy.replicas"
        raise source.error(
            (*at, "container_name"),
            f'container_name "{container_name}" cannot be used with {key} {replica_count(service)}',
            "container names are unique; drop container_name to let stack number them",
        )


# service key, deploy.resources section and key, compared as numbers
_RESOURCE_PAIRS = (
    ("cpus", "limits", "cpus"),
    ("mem_limit", "limits", "memory"),
    ("mem_reservation", "reservations", "memory"),
    ("pids_limit", "limits", "pids"),
)


def _check_resources(service: dict[str, Any], at: Path, source: SourceMap) -> None:
    """A service-level limit and its deploy.resources twin must agree when both are set.

    As in compose, once the deploy section exists, a missing twin counts as 0
    and so disagrees with any non-zero service-level value.
    """
    resources = (service.get("deploy") or {}).get("resources") or {}
    for key, section, twin in _RESOURCE_PAIRS:
        value = _number(service.get(key))
        if not value or section not in resources:
            continue
        twin_value = (resources[section] or {}).get(twin)
        if value != _number(twin_value):
            raise source.error(
                (*at, key),
                f"{key} ({service[key]}) and deploy.resources.{section}.{twin} "
                f"({'unset' if twin_value is None else twin_value}) disagree",
                "set only one of them",
            )


def _number(value: Any) -> float:
    """Limits arrive as int, float or a string of bytes ("1073741824"); compare as numbers."""
    if value is None or isinstance(value, bool):
        return 0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0


def _check_watch(service: dict[str, Any], at: Path, source: SourceMap) -> None:
    for i, watch in enumerate((service.get("develop") or {}).get("watch") or []):
        action = watch.get("action")
        if not watch.get("target") and action not in _WATCH_WITHOUT_TARGET:
            raise source.error(
                (*at, "develop", "watch", i),
                f'watch action "{action}" needs a target',
                "target is the path inside the container that receives the files",
            )


def _check_mount_targets(service: dict[str, Any], at: Path, source: SourceMap) -> None:
    """No two tmpfs or volumes may mount on the same container path."""
    mounted: dict[str, Path] = {}
    mounts: list[tuple[str, Path]] = [
        (str(entry).split(":", 1)[0], (*at, "tmpfs", i))
        for i, entry in enumerate(_as_list(service.get("tmpfs")))
    ]
    mounts += [
        (volume.get("target", ""), (*at, "volumes", i))
        for i, volume in enumerate(service.get("volumes") or [])
    ]
    for target, path in mounts:
        if target in mounted:
            raise source.error(
                path,
                f"{target} is already mounted by {format_path(mounted[target])}",
                "each container path takes one mount",
            )
        mounted[target] = path


# --- project-wide checks -------------------------------------------------------------------


def _check_top_level_secrets(model: dict[str, Any], source: SourceMap) -> None:
    for name, secret in sorted((model.get("secrets") or {}).items()):
        secret = secret or {}
        if secret.get("external") or secret.get("file") or secret.get("environment"):
            continue
        raise source.error(
            ("secrets", name),
            f'secret "{name}" has neither file nor environment',
            "set file: to read it from a file, environment: to read it from a variable, "
            "or external: true if it already exists",
        )


def _check_cycles(model: dict[str, Any], source: SourceMap) -> None:
    graph = build_graph(model)
    cycle = graph.find_cycle()
    if cycle is None:
        return
    # Point at what the user wrote: normalize copies links and the like into depends_on.
    edges = graph.edges_between(cycle[0], cycle[1])
    written = [e for e in edges if ("services", cycle[0], *e.path) in source]
    implied = [e for e in edges if e.kind != "depends_on"]
    first = (written or implied or edges)[0]
    raise source.error(
        ("services", cycle[0], *first.path),
        "dependency cycle detected: " + " -> ".join(cycle),
        "a service cannot wait, directly or through others, for itself",
    )


def _check_container_names(services: dict[str, Any], source: SourceMap) -> None:
    owners: dict[str, str] = {}
    for name in sorted(services):
        container_name = services[name].get("container_name")
        if not container_name:
            continue
        if container_name in owners:
            raise source.error(
                ("services", name, "container_name"),
                f'container name "{container_name}" is already used by service '
                f'"{owners[container_name]}"',
                "container names are unique on a host",
            )
        owners[container_name] = name


# --- helpers -------------------------------------------------------------------------------


def _require(
    model: dict[str, Any],
    section: str,
    name: Any,
    path: Path,
    service: str,
    source: SourceMap,
    hint: str | None = None,
    *,
    what: str | None = None,
) -> None:
    """`name` must be declared in the top-level `section` (networks, volumes, ...)."""
    declared = model.get(section) or {}
    if name in declared:
        return
    what = what or section[:-1]
    suggestion = _did_you_mean(name, declared)
    raise source.error(
        path,
        f'service "{service}" refers to undefined {what} "{name}"',
        suggestion or hint or f"declare it under the top-level {section}: key",
    )


def _model_refs(models: Any) -> Iterator[tuple[str | int, str]]:
    """A service's models come as a mapping (normalized) or a list of names."""
    if isinstance(models, dict):
        yield from ((name, name) for name in models)
    elif isinstance(models, list):
        yield from enumerate(models)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _did_you_mean(name: Any, candidates: Any) -> str | None:
    import difflib  # only when there is an error to explain

    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1)
    return f'did you mean "{close[0]}"?' if close else None
