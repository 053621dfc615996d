"""An image that a client we did not write put into a registry, pulled by us, runs.

skopeo (containers/image, what podman uses) copies a multi-layer image — with
a whiteout and an opaque directory in its top layer — into a real
docker-registry on 127.0.0.1; we pull it into the store and run a container
from it: the files the layers leave visible are there, the ones they delete
are not, and the image's own config (Env, WorkingDir) applies.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.containers import ServiceRunner
from support.images import (
    MULTILAYER_HIDDEN,
    MULTILAYER_VISIBLE,
    build_image,
    multilayer_layers,
    write_oci_layout,
)
from support.registry import RegistryServer, run_registry

from orchestrator.runtime.images.pull import pull_image

pytestmark = pytest.mark.trio


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (README's test command installs it)", pytrace=False)
    with run_registry(tmp_path_factory.mktemp("run-registry")) as server:
        yield server


async def test_image_copied_in_by_skopeo_pulls_and_runs(
    runner: ServiceRunner, registry: RegistryServer, tmp_path: Path
) -> None:
    config = {"Env": ["PATH=/bin", "GREETING=from-the-image"], "Cmd": ["sh"],
              "WorkingDir": "/data"}
    image = build_image(multilayer_layers(), config=config, compression="gzip",
                        references=("copied/multi:latest",))
    layout = write_oci_layout(tmp_path / "layout", [image], names="tag")
    reference = f"{registry.host}/copied/multi:v1"
    copied = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
         f"oci:{layout}:latest", f"docker://{reference}"],
        capture_output=True, timeout=120,
    )
    assert copied.returncode == 0, copied.stderr.decode()

    record = await pull_image(runner.images, reference)
    assert record.config_digest == image.config_digest

    visible = " ".join(MULTILAYER_VISIBLE)
    hidden = " ".join(MULTILAYER_HIDDEN)
    ran = await runner.run(f"""
        services:
          app:
            image: {reference}
            command:
              - sh
              - -c
              - 'pwd; echo $$GREETING; cd /; cat {visible}; for f in {hidden}; do
                 test -e $$f && echo "still there: $$f"; done; true'
    """)
    assert ran.exit_code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[:2] == ["/data", "from-the-image"]
    assert "".join(line + "\n" for line in lines[2:]) == b"".join(
        MULTILAYER_VISIBLE.values()
    ).decode()
