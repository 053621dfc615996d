"""Platforms spelled and matched the way Docker (containerd) does."""

import pytest

from orchestrator.runtime.images.platform import (
    Platform,
    normalize_platform,
    parse_platform,
    platform_matches,
    platform_rank,
)
from orchestrator.spec.errors import StackError


@pytest.mark.parametrize(
    ("written", "platform"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/amd64/v1", Platform("linux", "amd64")),
        ("linux/amd64/v3", Platform("linux", "amd64", "v3")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("linux/x86-64", Platform("linux", "amd64")),
        ("linux/arm64", Platform("linux", "arm64", "v8")),
        ("linux/arm64/8", Platform("linux", "arm64", "v8")),
        ("linux/arm64/v8.0", Platform("linux", "arm64", "v8")),
        ("linux/aarch64", Platform("linux", "arm64", "v8")),
        ("linux/arm64/9", Platform("linux", "arm64", "v9")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/arm/7", Platform("linux", "arm", "v7")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("linux/armhf", Platform("linux", "arm", "v7")),
        ("linux/armel", Platform("linux", "arm", "v6")),
        ("linux/i386", Platform("linux", "386")),
        ("Linux/AMD64", Platform("linux", "amd64")),
        (" linux/riscv64 ", Platform("linux", "riscv64")),
        ("windows/amd64", Platform("windows", "amd64")),
    ],
)
def test_platform_is_read_in_docker_spelling(written, platform):
    assert parse_platform(written) == platform


@pytest.mark.parametrize(
    ("platform", "printed"),
    [
        (Platform("linux", "amd64"), "linux/amd64"),
        (Platform("linux", "arm64", "v8"), "linux/arm64/v8"),
        (parse_platform("linux/arm"), "linux/arm/v7"),
    ],
)
def test_platform_prints_as_os_arch_variant(platform, printed):
    assert str(platform) == printed


@pytest.mark.parametrize(
    "written", ["", "linux", "amd64", "linux/", "/amd64", "a/b/c/d", "linux//v7"]
)
def test_malformed_platform_is_refused_with_an_example(written):
    with pytest.raises(StackError, match="such as linux/amd64"):
        parse_platform(written)


def test_normalizing_twice_changes_nothing():
    for written in ["linux/arm", "linux/aarch64", "linux/amd64/v1", "linux/armel"]:
        once = parse_platform(written)
        assert normalize_platform(once) == once


@pytest.mark.parametrize(
    ("candidate", "wanted", "runs"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/amd64/v2", "linux/amd64", True),
        ("linux/amd64/v4", "linux/amd64/v3", False),
        ("linux/amd64/v2", "linux/amd64/v3", True),
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/arm64/v9", True),
        ("linux/arm64/v9", "linux/arm64", False),
        ("linux/arm/v5", "linux/arm/v7", True),
        ("linux/arm/v7", "linux/arm/v6", False),
        ("linux/arm/v7", "linux/arm64", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/riscv64", "linux/riscv64", True),
        ("linux/ppc64le/power9", "linux/ppc64le", True),
        ("linux/ppc64le", "linux/ppc64le/power9", False),
    ],
)
def test_image_runs_only_where_its_platform_can(candidate, wanted, runs):
    assert platform_matches(parse_platform(candidate), parse_platform(wanted)) is runs


def test_best_variant_ranks_first():
    wanted = parse_platform("linux/arm/v7")
    ranks = [platform_rank(parse_platform(f"linux/arm/{v}"), wanted) for v in ("v7", "v6", "v5")]
    assert ranks == sorted(ranks) and len(set(ranks)) == 3
    amd64 = parse_platform("linux/amd64")
    assert platform_rank(Platform("linux", "amd64"), amd64) < platform_rank(
        Platform("linux", "amd64", "v3"), amd64
    )


def test_platform_json_uses_oci_field_names():
    platform = Platform("windows", "amd64", "", "10.0.17763.1", ("win32k",))
    assert platform.to_json() == {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1",
        "os.features": ["win32k"],
    }
