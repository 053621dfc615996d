"""Merge stack files the way Docker Compose does: later files override earlier ones.

Mappings merge key by key and scalars are replaced, but many service fields
have their own rule, and the rule is what users rely on: `command` is replaced
whole, `environment` and `labels` merge per key, `ports` are appended and then
made unique by host ip + published port + target + protocol, `volumes` by
mount target, `secrets` by the path they land at, and so on (see `_RULES` and
`_UNIQUE`). A null in the later file keeps the earlier value, except where the
field is replaced whole (`command: null` clears the command).

Compose's YAML tags steer the merge: a key tagged `!reset` disappears from the
result (the earlier files' value is dropped and the tagged value ignored), a
key tagged `!override` takes the later value as is, without merging.

The inputs are in long syntax (the canonical stage ran on each file), so list
items are compared in that form. The same rules merge a service over the one it
`extends`, which is why `Merger` is shared with extends.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import Path, SourceMap, StackError, format_path

RESET = "reset"


def merge_documents(
    base: dict[str, Any],
    override: dict[str, Any],
    override_tags: dict[Path, str],
    base_source: SourceMap,
    override_source: SourceMap,
) -> dict[str, Any]:
    """`override` merged over `base`; returns `base`, changed in place.

    `override` is left untouched and shares nothing with the result, so a
    cached document can be merged again. `base_source` is updated in place:
    every key the override contributes points at the override's line, list
    items at their position in the merged list. Start from `{}` and an empty
    SourceMap for the first file: that also drops its `!reset` keys and
    removes duplicate list items, as compose does for a single file.
    """
    resets = clear_tagged(base, override_tags)
    merger = Merger(override_source, base_source, resets)
    return merger.merge_mapping(base, override, (), ())


def clear_tagged(target: Any, tags: dict[Path, str], prefix: Path = ()) -> set[Path]:
    """Delete from `target` every key that `tags` marks `!reset` or `!override`.

    `target` holds the earlier value at the tagged paths (with `prefix`
    stripped from each tag path first); returns the `!reset` paths, whose
    later value must be skipped too. Compose matches tag paths against mapping
    keys only, so a tag on a list item removes nothing from earlier files.
    """
    resets: set[Path] = set()
    n = len(prefix)
    for path, tag in tags.items():
        if tag == RESET:
            resets.add(path)
        if path[:n] != prefix or len(path) == n:
            continue
        node = target
        for part in path[n:-1]:
            node = node.get(part) if isinstance(node, dict) and isinstance(part, str) else None
        last = path[-1]
        if isinstance(node, dict) and isinstance(last, str):
            node.pop(last, None)
    return resets


def copy_data(value: Any) -> Any:
    """A deep copy of plain YAML data (dicts, lists, scalars)."""
    if isinstance(value, dict):
        return {key: copy_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_data(item) for item in value]
    return value


class Merger:
    """Merges one value over another, recording where each merged key came from.

    `src` holds the later value's locations, `dst` receives them at the
    merged paths. Paths come in pairs: `op` is where a node sits in the later
    document, `mp` where it lands in the result; the merge rule is chosen by
    `mp`, which always starts at the document root (`services.<name>...`).
    """

    __slots__ = ("src", "dst", "resets")

    def __init__(self, src: SourceMap, dst: SourceMap, resets: set[Path]) -> None:
        self.src = src
        self.dst = dst
        self.resets = resets

    def merge(self, base: Any, over: Any, mp: Path, op: Path) -> Any:
        rule = _rule_for(mp)
        if rule is not None:
            return rule(self, base, over, mp, op)
        if over is None:
            return base
        if isinstance(base, dict):
            if not isinstance(over, dict):
                raise self._mismatch(base, over, op)
            return self.merge_mapping(base, over, mp, op)
        if isinstance(base, list):
            if not isinstance(over, list):
                raise self._mismatch(base, over, op)
            return self.append(base, over, mp, op)
        return self.take(over, mp, op)

    def merge_mapping(self, base: dict, over: dict, mp: Path, op: Path) -> dict:
        resets = self.resets
        for key, value in over.items():
            key_op = (*op, key)
            if resets and key_op in resets:
                continue
            key_mp = (*mp, key)
            if key in base:
                self._locate(key_mp, key_op)
                base[key] = self.merge(base[key], value, key_mp, key_op)
            else:
                base[key] = self.take(value, key_mp, key_op)
        if not mp:
            _enforce_unicity(base)
        return base

    def append(self, base: list, over: list, mp: Path, op: Path) -> list:
        resets = self.resets
        for index, item in enumerate(over):
            item_op = (*op, index)
            if resets and item_op in resets:
                continue
            base.append(self.take(item, (*mp, len(base)), item_op))
        return base

    def take(self, value: Any, mp: Path, op: Path) -> Any:
        """A copy of the later `value`, its locations recorded under `mp`."""
        self._locate(mp, op)
        resets = self.resets
        if isinstance(value, dict):
            copied: dict[str, Any] = {}
            for key, item in value.items():
                item_op = (*op, key)
                if resets and item_op in resets:
                    continue
                copied[key] = self.take(item, (*mp, key), item_op)
            return copied
        if isinstance(value, list):
            items: list[Any] = []
            for index, item in enumerate(value):
                item_op = (*op, index)
                if resets and item_op in resets:
                    continue
                items.append(self.take(item, (*mp, len(items)), item_op))
            return items
        return value

    def _locate(self, mp: Path, op: Path) -> None:
        location = self.src.get(op)
        if location is not None:
            self.dst.add(mp, location)

    def _mismatch(self, base: Any, over: Any, op: Path) -> StackError:
        return self.src.error(
            op,
            f"cannot merge a {_kind(over)} over the {_kind(base)} of an earlier file",
            hint=f"write {format_path(op)} as a {_kind(base)}, or tag it !override",
        )


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return "single value"


# --- per-field merge rules -------------------------------------------------------------

Rule = Callable[[Merger, Any, Any, Path, Path], Any]


def _replace(m: Merger, base: Any, over: Any, mp: Path, op: Path) -> Any:
    """Fields compose replaces whole, null included (`command: null` clears it)."""
    return m.take(over, mp, op)


def _replace_unless_null(m: Merger, base: Any, over: Any, mp: Path, op: Path) -> Any:
    return base if over is None else m.take(over, mp, op)


def _key_values(m: Merger, base: Any, over: Any, mp: Path, op: Path) -> Any:
    """environment, labels, build args...: per key, and a later null does win."""
    if over is None:
        return base
    if isinstance(base, dict) and isinstance(over, dict):
        for key, value in over.items():
            key_op = (*op, key)
            if m.resets and key_op in m.resets:
                continue
            base[key] = m.take(value, (*mp, key), key_op)
        return base
    return _sequence(m, base, over, mp, op)


def _sequence(m: Merger, base: Any, over: Any, mp: Path, op: Path) -> Any:
    """dns, tmpfs, env_file...: a single string counts as a one-item list."""
    if over is None:
        return base
    if isinstance(base, str):
        base = [base]
    if isinstance(over, str):
        over = [over]
    if not isinstance(base, list) or not isinstance(over, list):
        raise m._mismatch(base, over, op)
    return m.append(base, over, mp, op)


def _extra_hosts(m: Merger, base: Any, over: Any, mp: Path, op: Path) -> Any:
    """Appended, leaving out entries the earlier file already has, grouped by host."""
    if over is None:
        return base
    if isinstance(base, dict) and isinstance(over, dict):
        for host, addresses in over.items():
            known = base.get(host)
            known = [] if known is None else known if isinstance(known, list) else [known]
            new = addresses if isinstance(addresses, list) else [addresses]
            base[host] = known + [a for a in new if a not in known]
            m._locate((*mp, host), (*op, host))
        return base
    base = _as_list(base)
    known = set(base)
    for index, entry in enumerate(_as_list(over)):
        item_op = (*op, index)
        if entry not in known and not (m.resets and item_op in m.resets):
            base.append(m.take(entry, (*mp, len(base)), item_op))
    base.sort(key=_host_name)
    return base


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _host_name(entry: Any) -> str:
    text = str(entry)
    return text.split("=", 1)[0] if "=" in text else text.split(":", 1)[0]


def _logging(m: Merger, base: Any, over: Any, mp: Path, op: Path) -> Any:
    """Options merge only while both files name the same driver, or one names none."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return _replace_unless_null(m, base, over, mp, op)
    if "driver" in base and "driver" in over and base["driver"] != over["driver"]:
        return m.take(over, mp, op)
    return m.merge_mapping(base, over, mp, op)


def _ipam_config(m: Merger, base: Any, over: Any, mp: Path, op: Path) -> Any:
    """Pools merge by subnet, following compose's algorithm to the letter.

    Each earlier pool meets each later pool: a later pool with a subnet not
    yet in the result is added as is; otherwise the later pool is merged over
    the earlier one and replaces the result's pool with the merged subnet.
    This loses earlier pools when a later file brings a new subnet and the
    earlier file had two or more (compose does the same; users see it).
    """
    if not isinstance(base, list) or not isinstance(over, list):
        return _replace_unless_null(m, base, over, mp, op)
    pools: list[Any] = []

    def position(subnet: Any) -> int:
        for index, pool in enumerate(pools):
            if pool.get("subnet") == subnet:
                return index
        return -1

    for earlier in base:
        for index, later in enumerate(over):
            if not isinstance(earlier, dict) or not isinstance(later, dict):
                continue
            subnet = later.get("subnet")
            if subnet != earlier.get("subnet") and position(subnet) < 0:
                pools.append(m.take(later, (*mp, len(pools)), (*op, index)))
                continue
            merged = m.merge_mapping(earlier, later, (*mp, len(pools)), (*op, index))
            found = position(merged.get("subnet"))
            if found >= 0:
                pools[found] = merged
            else:
                pools.append(merged)
    return pools


_KEY_VALUE_FIELDS = ("annotations", "environment", "labels", "sysctls")
_RULES: dict[Path, Rule] = {
    ("services", "*", "command"): _replace,
    ("services", "*", "entrypoint"): _replace,
    ("services", "*", "healthcheck", "test"): _replace,
    ("services", "*", "ulimits", "*"): _replace_unless_null,
    ("services", "*", "logging"): _logging,
    ("services", "*", "extra_hosts"): _extra_hosts,
    ("services", "*", "build", "extra_hosts"): _extra_hosts,
    ("services", "*", "build", "args"): _key_values,
    ("services", "*", "build", "labels"): _key_values,
    ("services", "*", "build", "additional_contexts"): _key_values,
    ("services", "*", "deploy", "labels"): _key_values,
    ("networks", "*", "labels"): _key_values,
    ("networks", "*", "ipam", "config"): _ipam_config,
    ("volumes", "*", "labels"): _key_values,
    **{("services", "*", name): _key_values for name in _KEY_VALUE_FIELDS},
    **{
        ("services", "*", name): _sequence
        for name in ("dns", "dns_opt", "dns_search", "env_file", "label_file", "tmpfs")
    },
}


def _rule_for(mp: Path) -> Rule | None:
    if len(mp) < 3:
        return None
    pattern = (mp[0], "*", *mp[2:])
    rule = _RULES.get(pattern)
    if rule is None and len(mp) == 4:
        rule = _RULES.get((*pattern[:3], "*"))
    return rule


# --- list items made unique after a merge ---------------------------------------------
# Compose keeps one item per identity: a later item with the same identity
# replaces the earlier one in its position.

def _by_key_value(item: Any) -> Any:
    return str(item).split("=", 1)[0] if isinstance(item, str) else repr(item)


def _by_port(item: Any) -> Any:
    if not isinstance(item, dict):
        return str(item)
    published = item.get("published")
    return (
        item.get("host_ip", "0.0.0.0"),
        None if published is None else str(published),
        str(item.get("target")),
        item.get("protocol", "tcp"),
    )


def _by_target(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("target")
    return str(item)


def _by_device(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("target")
    parts = str(item).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _by_mount(directory: str) -> Callable[[Any], Any]:
    def identity(item: Any) -> Any:
        if isinstance(item, dict):
            if item.get("target") is not None:
                return item["target"]
            return f"{directory}/{item.get('source')}"
        return f"{directory}/{item}"

    return identity


def _by_env_file(item: Any) -> Any:
    return item.get("path") if isinstance(item, dict) else item


_UNIQUE: dict[str, Callable[[Any], Any]] = {
    "ports": _by_port,
    "volumes": _by_target,
    "devices": _by_device,
    "secrets": _by_mount("/run/secrets"),
    "configs": _by_mount(""),
    "env_file": _by_env_file,
    "expose": str,
    **{
        name: _by_key_value
        for name in ("cap_add", "cap_drop", "dns", "dns_opt", "dns_search", "links",
                     "profiles", "tmpfs")
    },
}


def _unique(items: list, identity: Callable[[Any], Any]) -> list:
    if len(items) < 2:
        return items
    kept: list[Any] = []
    position: dict[Any, int] = {}
    for item in items:
        key = identity(item)
        try:
            index = position.get(key)
        except TypeError:  # an unhashable identity: only in files not yet validated
            key = repr(key)
            index = position.get(key)
        if index is None:
            position[key] = len(kept)
            kept.append(item)
        else:
            kept[index] = item
    return kept


def _enforce_unicity(document: dict[str, Any]) -> None:
    """Drop list items that a later item with the same identity redefines."""
    services = document.get("services")
    if not isinstance(services, dict):
        return
    for service in services.values():
        if isinstance(service, dict):
            unique_service_lists(service)


def unique_service_lists(service: dict[str, Any]) -> None:
    """Make the identity-keyed lists of one service unique, in place."""
    for name, identity in _UNIQUE.items():
        items = service.get(name)
        if isinstance(items, list) and len(items) > 1:
            service[name] = _unique(items, identity)
    networks = service.get("networks")
    if isinstance(networks, dict):
        for attachment in networks.values():
            if isinstance(attachment, dict):
                for name in ("aliases", "link_local_ips"):
                    items = attachment.get(name)
                    if isinstance(items, list) and len(items) > 1:
                        attachment[name] = _unique(items, _by_key_value)
    build = service.get("build")
    if isinstance(build, dict) and isinstance(build.get("tags"), list):
        build["tags"] = _unique(build["tags"], _by_key_value)
