"""The /etc files a container gets written: hosts and resolv.conf, as Docker writes them.

Pure text in, bytes out: the runtime writes them under the container's
directory and binds them in (`service_spec.py` decides what goes in them from
the service's networks, `extra_hosts`, `dns*` keys and the host's files).
Separate from the mounts because they are file contents, not mount decisions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

HOSTS_DEFAULTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)


def hosts_file(
    extra_hosts: Sequence[tuple[str, str]],
    own: Sequence[tuple[str, str]] = (),
    base: str | None = None,
) -> bytes:
    """/etc/hosts as Docker writes it: loopback and IPv6 names, extra hosts, then our own.

    `own` is the container's addresses with the names they answer to (its
    networks fill it in); `base` replaces the default lines (the host's own
    file, for a container on the host's network).
    """
    lines = [base.rstrip("\n")] if base is not None else [f"{a}\t{n}" for a, n in HOSTS_DEFAULTS]
    lines += [f"{address}\t{name}" for name, address in extra_hosts]
    lines += [f"{address}\t{names}" for address, names in own]
    return ("\n".join(line for line in lines if line) + "\n").encode()


def own_host_names(hostname: str, domainname: str) -> str:
    """The names a container's own /etc/hosts line gives: `fqdn short` or just `hostname`."""
    fqdn = f"{hostname}.{domainname}" if domainname else hostname
    short = fqdn.split(".", 1)[0]
    return f"{fqdn} {short}" if short != fqdn else fqdn


def resolv_conf(
    host_text: str,
    *,
    nameservers: Sequence[str] = (),
    search: Sequence[str] = (),
    options: Sequence[str] = (),
    keep_loopback: bool = False,
) -> bytes:
    """The container's resolv.conf: the host's, minus loopback servers it cannot reach.

    A service's `dns`, `dns_search` and `dns_opt` each replace the host's.
    """
    host_servers: list[str] = []
    host_search: list[str] = []
    host_options: list[str] = []
    for line in host_text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            host_servers.append(words[1])
        elif words[0] in ("search", "domain"):
            host_search = words[1:]  # the last of them wins, as in the resolver
        elif words[0] == "options":
            host_options += words[1:]
    if not keep_loopback:
        host_servers = [s for s in host_servers if not _is_loopback(s)]
    lines = [f"nameserver {server}" for server in nameservers or host_servers]
    if search or host_search:
        lines.append("search " + " ".join(search or host_search))
    if options or host_options:
        lines.append("options " + " ".join(options or host_options))
    return "".join(line + "\n" for line in lines).encode()


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
