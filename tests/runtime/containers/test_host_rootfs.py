"""`x-stack: {rootfs: ...}`: a service runs on a host directory instead of an image.

On the host's own `/` the container gets the host's programs but none of its
secrets or the engine's state; on any other folder it simply runs that tree.
Either way the tree is a read-only lower layer: what the container writes
stays in its private upper.
"""

from __future__ import annotations

import io
import secrets
import tarfile
from pathlib import Path

import pytest
from support.containers import ServiceRunner
from support.images import busybox_layer

from orchestrator.runtime.containers.defaults import HOST_ROOTFS_MASKS, host_rootfs_masks
from orchestrator.spec.errors import StackError

pytestmark = pytest.mark.trio


async def test_host_userland_runs_with_secrets_and_state_masked(runner: ServiceRunner):
    state_root = runner.state_root
    ran = await runner.run(f"""
        services:
          app:
            x-stack: {{rootfs: /}}
            command:
              - /bin/sh
              - -c
              - |
                cat /etc/debian_version
                for d in /root /home /run /etc/ssh {state_root}; do
                  echo "$$d $$(ls -A $$d 2>/dev/null | wc -l)"
                done
                echo "shadow $$(wc -c < /etc/shadow)"
                echo "gshadow $$(cat /etc/gshadow 2>/dev/null | wc -c)"
    """)
    assert ran.exit_code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == Path("/etc/debian_version").read_text().strip()
    assert lines[1:] == [
        "/root 0", "/home 0", "/run 0", "/etc/ssh 0", f"{state_root} 0", "shadow 0", "gshadow 0",
    ]


async def test_writes_on_the_host_root_stay_in_the_container(runner: ServiceRunner):
    probe = Path("/", f"stack-probe-{secrets.token_hex(4)}")
    try:
        ran = await runner.run(f"""
            services:
              app:
                x-stack: {{rootfs: /}}
                command: /bin/sh -c 'echo inside > {probe} && cat {probe}'
        """)
        assert ran.stdout == "inside\n", ran.stderr
        assert not probe.exists()
        upper = runner.runtime.root / runner.created[-1] / "upper"
        assert (upper / probe.name).read_text() == "inside\n"
    finally:
        probe.unlink(missing_ok=True)


async def test_private_folders_of_the_host_are_writable_but_empty(runner: ServiceRunner):
    ran = await runner.run("""
        services:
          app:
            x-stack: {rootfs: /}
            command: /bin/sh -c 'mkdir -p /run/app && echo pid > /run/app/pid && cat /run/app/pid'
    """)
    assert ran.stdout == "pid\n", ran.stderr
    assert not Path("/run/app").exists()


async def test_any_directory_can_be_the_root(runner: ServiceRunner):
    tree = runner.project_dir / "tree"
    with tarfile.open(fileobj=io.BytesIO(busybox_layer())) as tar:
        tar.extractall(tree, filter="tar")
    ran = await runner.run("""
        services:
          app:
            x-stack: {rootfs: ./tree}
            command: sh -c 'cat /var/www/index.html; ls /root | wc -l; echo new > /var/www/new'
    """)
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.splitlines() == ["hello from busybox", "0"]
    assert not (tree / "var" / "www" / "new").exists()


async def test_a_rootfs_that_is_not_a_directory_is_refused(runner: ServiceRunner):
    with pytest.raises(StackError) as caught:
        runner.create("""
            services:
              app:
                x-stack: {rootfs: ./nowhere}
                command: sh
        """)
    assert str(caught.value).startswith("services.app.x-stack.rootfs: ")
    assert "nowhere is not a directory" in str(caught.value)
    assert runner.runtime.list() == []


async def test_state_root_is_masked_in_any_tree_that_holds_it_even_through_a_link(
    tmp_path: Path,
):
    tree = tmp_path / "tree"
    real = tree / "data" / "stack"
    real.mkdir(parents=True)
    link = tree / "var-stack"
    link.symlink_to(real)
    assert host_rootfs_masks(str(tree), link) == ("/var-stack", "/data/stack")
    assert host_rootfs_masks(str(tree), tmp_path / "elsewhere") == ()
    on_host = host_rootfs_masks("/", link)
    assert on_host == (str(link), str(real), *HOST_ROOTFS_MASKS)
