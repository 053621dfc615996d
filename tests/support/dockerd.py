"""A real Docker engine beside ours, for the tests that prove we live with it.

Started with scratch data, exec and socket paths (nothing of a real Docker
installation is touched), stopped afterwards, and whatever it leaves on the
host that was not there before — its nftables tables, docker0, ip_forward,
br_netfilter — is removed again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def sh(*args: str, check: bool = True) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=check)
    return result.stdout


DOCKER_TABLES = {"table ip filter", "table ip nat", "table ip6 filter", "table ip6 nat"}


def host_snapshot() -> dict[str, object]:
    return {
        "tables": set(sh("nft", "list", "tables").splitlines()),
        "docker0": Path("/sys/class/net/docker0").exists(),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "br_netfilter": Path("/proc/sys/net/bridge").exists(),
        "key.json": Path("/etc/docker/key.json").exists(),
        "run_docker": Path("/run/docker").exists(),
    }


@contextlib.contextmanager
def running_dockerd() -> Iterator[None]:
    """A dockerd running on this machine, started here and undone afterwards if need be."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed (README's test command installs docker.io)",
                    pytrace=False)
    if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0:
        yield  # someone else's dockerd: use it, leave it running
        return
    before = host_snapshot()
    scratch = Path(tempfile.mkdtemp(prefix="stkd-"))  # short: socket paths have a length limit
    log = (scratch / "dockerd.log").open("w")
    daemon = subprocess.Popen(
        ["dockerd", "--data-root", str(scratch / "data"), "--exec-root", str(scratch / "exec"),
         "--pidfile", str(scratch / "dockerd.pid"), "-H", f"unix://{scratch}/docker.sock",
         "--storage-driver", "vfs"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # The socket exists early; the API only listens once the firewall is set up.
        deadline = time.monotonic() + 60
        while "API listen on" not in (scratch / "dockerd.log").read_text():
            assert daemon.poll() is None, (scratch / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "dockerd did not come up"
            time.sleep(0.1)
        yield
    finally:
        stop_dockerd(daemon, scratch)
        log.close()
        restore_host(before)
        shutil.rmtree(scratch, ignore_errors=True)


def stop_dockerd(daemon: subprocess.Popen[bytes], scratch: Path) -> None:
    containerd_pid = scratch / "exec" / "containerd" / "containerd.pid"
    child = int(containerd_pid.read_text()) if containerd_pid.exists() else None
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
    if child is not None:  # the containerd our dockerd started, should it outlive it
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)


def restore_host(before: dict[str, object]) -> None:
    """Remove what dockerd left behind and was not there before."""
    after = host_snapshot()
    for table in sorted((after["tables"] - before["tables"]) & DOCKER_TABLES):  # type: ignore[operator]
        sh("nft", "delete", *table.split(), check=False)
    if after["docker0"] and not before["docker0"]:
        sh("ip", "link", "del", "docker0", check=False)
    if after["ip_forward"] != before["ip_forward"]:
        Path("/proc/sys/net/ipv4/ip_forward").write_text(f"{before['ip_forward']}\n")
    if after["key.json"] and not before["key.json"]:
        Path("/etc/docker/key.json").unlink()
    if after["run_docker"] and not before["run_docker"]:
        for folder in ("/run/docker/plugins", "/run/docker"):  # empty ones dockerd made
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    if after["br_netfilter"] and not before["br_netfilter"]:
        sh("modprobe", "-r", "br_netfilter", check=False)


