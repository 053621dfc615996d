"""Load a state root's nftables table, remove it, and keep its bridges working beside Docker.

Everything here runs the `nft` and `iptables` tools and blocks for a few
milliseconds: call it through `trio.to_thread.run_sync` from the engine.

Each state root has its own table, `stack_<owner id>` (`owner.py`); nothing
here touches another root's. Replacing a table: `apply_ruleset` sends nft
one batch,

    table ip T          (declare it: a no-op when it exists, so the next line
    delete table ip T    can never fail on a first start)
    table ip T { ... }  (the new definition)

and the kernel commits a batch all at once or not at all. Packets see the old
table or the new one, never none and never half of each; a rejected ruleset
leaves the old one in place. `flush table` would not do: it empties chains but
keeps them, so a chain or set that the new state no longer has would linger,
and a base chain cannot be redeclared with another hook or priority.
Conntrack entries live outside the table, so open connections (and their NAT
mappings) survive a reload.

Docker: `dockerd` sets the iptables FORWARD policy to DROP and loads
`br_netfilter`, which makes even frames bridged between two containers of one
network traverse the ip FORWARD hook. A drop in any table is final, so our
own accepts cannot help; we add accept rules where Docker's tooling expects
a user's rules, its DOCKER-USER chain (or FORWARD itself when something else
set a DROP policy there), with the `iptables` command Docker itself uses, so
they land in the same backend (nft or legacy) and `iptables -S` shows them
beside Docker's. Docker keeps DOCKER-USER's rules across its restarts. A
root's rules carry the comment `stack:<owner id>:<bridge>`; removal touches
nothing else (a rule of an older version, `stack:<bridge>`, only when its
bridge is the root's own or gone from the host).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
from collections.abc import Collection, Iterable

from orchestrator.runtime.network.nft_rules import FAMILY, LEGACY_TABLE
from orchestrator.runtime.network.owner import MARK_PREFIX, TABLE_PREFIX, Owner
from orchestrator.spec.errors import StackError

DOCKER_USER = "DOCKER-USER"
FORWARD = "FORWARD"

_OUR_COMMENT = re.compile(rf'--comment "?{re.escape(MARK_PREFIX)}')
_SET_ELEMENTS = re.compile(r"set bridges \{[^}]*?elements = \{([^}]*)\}", re.DOTALL)


# nfnetlink: NFT_MSG_GETGEN of the nf_tables subsystem, and the generation attribute
_NETLINK_NETFILTER = 12
_GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN
_NLM_F_REQUEST, _NLMSG_ERROR, _NFTA_GEN_ID = 0x1, 0x2, 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_NFGENMSG = struct.Struct("=BBH")  # family, version, resource id


def generation() -> int | None:
    """The kernel's ruleset generation: it changes whenever any nftables ruleset on
    the host changes (ours, Docker's iptables-nft rules, anyone's). One netlink request
    on a socket of our own (a netlink library would cost milliseconds to set itself up
    for these few bytes, at every container start and removal); None when it cannot
    be read, and callers then simply apply every time."""
    request = _NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
    message = _HEADER.pack(_HEADER.size + len(request), _GETGEN, _NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
            sock.settimeout(1.0)
            sock.send(message + request)
            reply = sock.recv(4096)
    except OSError:
        return None
    if len(reply) < _HEADER.size + _NFGENMSG.size:
        return None
    _, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind == _NLMSG_ERROR:
        return None
    offset = _HEADER.size + _NFGENMSG.size
    while offset + 4 <= len(reply):  # attributes: length, type, value, padded to 4
        length, attribute = struct.unpack_from("=HH", reply, offset)
        if length < 4:
            return None
        if attribute & 0x3FFF == _NFTA_GEN_ID and length >= 8:
            return int(struct.unpack_from("!I", reply, offset + 4)[0])
        offset += (length + 3) & ~3
    return None


def _replace(table: str) -> str:
    return f"table {FAMILY} {table}\ndelete table {FAMILY} {table}\n"


def apply_ruleset(table: str, text: str) -> None:
    """Replace `table ip <table>` with `text` (its rendering) in one transaction."""
    _nft(["-f", "-"], _replace(table) + text, doing="load the network ruleset")


def remove_table(table: str) -> None:
    """Remove the table; nothing happens when there is none."""
    _nft(["-f", "-"], _replace(table), doing="remove the network ruleset")


def current_ruleset(table: str) -> str | None:
    """The table as the kernel holds it (`nft list table ip <table>`), None without one."""
    tables = _nft(["list", "tables", FAMILY], doing="list nftables tables")
    if f"table {FAMILY} {table}" not in tables.splitlines():
        return None
    return _nft(["list", "table", FAMILY, table], doing="list the network ruleset")


# The comment of a DNAT rule, as nft_rules.PortRule.dnat_rule writes it (and nft lists it).
_PUBLISHED = re.compile(r'comment "(\S+) (tcp|udp) ([0-9.]+):(\d+) -> \d+"')


def ports_of_other_roots(owner: Owner) -> dict[tuple[str, str, int], str]:
    """The host ports other state roots on this host publish, (protocol, host address
    or "" for any, port) -> the container's name, read from their tables' DNAT rules.

    Two engines publishing one port would both rewrite its packets, and which one
    wins is nobody's choice; the port's holder is also no listening socket that the
    usual check could see. A table that vanishes while read is skipped.
    """
    tables = _nft(["list", "tables", FAMILY], doing="list nftables tables")
    found: dict[tuple[str, str, int], str] = {}
    for line in tables.splitlines():
        table = line.removeprefix(f"table {FAMILY} ")
        if not table.startswith(TABLE_PREFIX) or table == owner.table:
            continue
        try:
            chain = _nft(["list", "chain", FAMILY, table, "published_ports"],
                         doing="list another state root's published ports")
        except StackError:
            continue
        for container, protocol, address, port in _PUBLISHED.findall(chain):
            found[(protocol, "" if address == "0.0.0.0" else address, int(port))] = container
    return found


def remove_legacy_table(ours: Collection[str]) -> bool:
    """Remove `table ip stack`, the table all roots shared before each had its own, when
    it is provably ours to remove: every bridge it serves is one of `ours` or gone from
    the host. An older engine of another root still using it keeps it. True if removed."""
    text = current_ruleset(LEGACY_TABLE)
    if text is None:
        return False
    found = _SET_ELEMENTS.search(text)
    bridges = re.findall(r'"([^"]+)"', found.group(1)) if found else []
    if any(b not in ours and os.path.exists(f"/sys/class/net/{b}") for b in bridges):
        return False
    remove_table(LEGACY_TABLE)
    return True


def ensure_forward_accepts(bridges: Iterable[str], owner: Owner) -> str | None:
    """Make iptables' FORWARD let `owner`'s bridges' traffic through, exactly for `bridges`.

    Rules go into DOCKER-USER when that chain exists, else into FORWARD when
    its policy is DROP, else nowhere (nothing there drops our traffic). The
    owner's rules for bridges not listed, or in the other chain, are removed,
    so calling this after every network change keeps them exact; other roots'
    rules are left alone. Returns the chain used, or None. Without an
    `iptables` command there is nothing to do.

    A dockerd started after this call sets FORWARD's policy to DROP and
    creates DOCKER-USER: calling this again moves our rules there.
    """
    if shutil.which("iptables") is None:
        return None
    chains = {name: _chain_rules(name) for name in (DOCKER_USER, FORWARD)}
    if chains[DOCKER_USER] is not None:
        target: str | None = DOCKER_USER
    elif f"-P {FORWARD} DROP" in (chains[FORWARD] or []):
        target = FORWARD
    else:
        target = None
    bridges = set(bridges)
    wanted = set()
    if target is not None:
        for bridge in bridges:
            wanted |= {(target, "-i", bridge), (target, "-o", bridge)}
    have = set()
    for rules in chains.values():
        for rule in rules or []:
            found = _stack_rule(rule)
            if found is None:
                continue
            rule_owner, key = found
            if rule_owner == owner.id and key in wanted:
                have.add(key)
                continue
            if rule_owner is None:
                # An older version's rule names no owner: ours to replace when the
                # bridge is ours, nobody's when the bridge is gone; else leave it.
                if key[2] not in bridges and os.path.exists(f"/sys/class/net/{key[2]}"):
                    continue
            elif rule_owner != owner.id:
                continue
            # A concurrent call of the same root may have removed it already.
            with contextlib.suppress(StackError):
                _iptables(["-D", *shlex.split(rule)[1:]])
    for chain, direction, bridge in sorted(wanted - have):
        comment = ["-m", "comment", "--comment", owner.rule_comment(bridge)]
        _iptables(["-I", chain, direction, bridge, *comment, "-j", "ACCEPT"])
    return target


def remove_forward_accepts(owner: Owner) -> None:
    """Remove every iptables rule of `owner`'s, and only those."""
    ensure_forward_accepts((), owner)


def _stack_rule(rule: str) -> tuple[str | None, tuple[str, str, str]] | None:
    """For a stack engine's `iptables -S` line: its owner id (None for an older version's
    rule, `stack:<bridge>`) and (chain, "-i"|"-o", bridge); None for any other line."""
    if not rule.startswith("-A ") or not _OUR_COMMENT.search(rule):
        return None
    words = shlex.split(rule)
    comment = words[words.index("--comment") + 1][len(MARK_PREFIX):]
    owner_id, _, _bridge = comment.rpartition(":")
    for direction in ("-i", "-o"):
        if direction in words:
            return owner_id or None, (words[1], direction, words[words.index(direction) + 1])
    return None


def _chain_rules(chain: str) -> list[str] | None:
    """`iptables -S <chain>` lines, None when the chain does not exist.

    Listing a built-in chain of a table iptables-nft has not created yet
    prints its default policy and creates nothing.
    """
    result = subprocess.run(
        ["iptables", "-w", "-t", "filter", "-S", chain], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return None
    return result.stdout.splitlines()


def _iptables(args: list[str]) -> None:
    result = subprocess.run(
        ["iptables", "-w", "-t", "filter", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise StackError(
            f"iptables {' '.join(args)} failed: {_first_line(result.stderr)}",
            hint="check that iptables works on this host (iptables -S)",
        )


def _nft(args: list[str], stdin: str | None = None, *, doing: str) -> str:
    try:
        result = subprocess.run(
            ["nft", *args], input=stdin, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise StackError(
            f"cannot {doing}: the nft command is missing", hint="install nftables"
        ) from None
    if result.returncode != 0:
        raise StackError(
            f"cannot {doing}: nft says {_nft_message(result.stderr)}",
            hint="check that nftables works on this host (nft list ruleset)",
        )
    return result.stdout


def _nft_message(stderr: str) -> str:
    """nft's error lines, without the echo of the input and its ^^^ markers.

    The line numbers nft gives count our two header lines, so they are dropped.
    """
    errors = [line[line.index("Error:") :] for line in stderr.splitlines() if "Error:" in line]
    return "; ".join(errors) or _first_line(stderr)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no message"
