"""Platforms (`linux/arm64/v8`) and which image of a multi-platform index runs on one.

The rules are containerd's, which Docker uses: names are normalized first
(`aarch64` is `arm64`, `x86_64` is `amd64`, `armhf` is `arm/v7`), and an
older variant of the same architecture runs on a newer one (an `arm/v6`
image runs on `arm/v7`), so a host picks the best variant it can run.
Docker's own defaults make `arm64` mean `arm64/v8` and `arm` mean `arm/v7`;
`amd64` entries carry a variant only as an optimisation hint, so a plain
`linux/amd64` request takes any of them, preferring the baseline.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from orchestrator.spec.errors import StackError

DEFAULT_PLATFORM = "linux/amd64"

_ARCH_ALIASES = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "aarch64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
}
_ARM_VARIANTS = ("v8", "v7", "v6", "v5")  # newest first: each runs the ones after it


class Platform(NamedTuple):
    """An OCI platform; `variant` is "" when there is none."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            document["variant"] = self.variant
        if self.os_version:
            document["os.version"] = self.os_version
        if self.os_features:
            document["os.features"] = list(self.os_features)
        return document


def normalize_platform(platform: Platform) -> Platform:
    """Docker's spelling of `platform`: lowercase, canonical architecture and variant."""
    os_name = platform.os.lower()
    arch = platform.architecture.lower()
    variant = platform.variant.lower()
    if arch in _ARCH_ALIASES:
        arch, implied = _ARCH_ALIASES[arch]
        if implied is not None:
            variant = implied
    if arch == "amd64" and variant == "v1":
        variant = ""
    elif arch == "arm64":
        variant = {"": "v8", "8": "v8", "v8.0": "v8", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(
            variant, variant
        )
    elif arch == "arm":
        variant = {"": "v7", "5": "v5", "6": "v6", "7": "v7", "8": "v8"}.get(variant, variant)
    return platform._replace(os=os_name, architecture=arch, variant=variant)


def parse_platform(text: str) -> Platform:
    """`linux/arm64/v8` (or `linux/aarch64`, …) as a normalized Platform."""
    parts = text.strip().split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise StackError(
            f"platform {text!r} is not valid (write os/architecture[/variant], "
            "such as linux/amd64 or linux/arm64/v8)"
        )
    return normalize_platform(Platform(*parts))


def _acceptable_variants(wanted: Platform) -> tuple[str, ...] | None:
    """Variants that run on `wanted`, best first; None when any variant does."""
    arch, variant = wanted.architecture, wanted.variant
    if arch == "amd64":
        if not variant:
            return None
        level = int(variant[1:]) if variant[1:].isdigit() else 1
        return (*(f"v{n}" for n in range(level, 1, -1)), "")
    if arch == "arm" and variant in _ARM_VARIANTS:
        return _ARM_VARIANTS[_ARM_VARIANTS.index(variant) :]
    if arch == "arm64" and variant.startswith("v9"):
        return (variant, "v8")
    if not variant:
        return None
    return (variant,)


def platform_rank(candidate: Platform, wanted: Platform) -> int | None:
    """How well `candidate` suits `wanted` (0 is best); None when it cannot run there.

    Both are normalized first, so callers may pass them as written.
    """
    have, want = normalize_platform(candidate), normalize_platform(wanted)
    if have.os != want.os or have.architecture != want.architecture:
        return None
    variants = _acceptable_variants(want)
    if variants is None:
        # Any variant runs; the plain one (the baseline) first.
        return 0 if not have.variant else 1
    return variants.index(have.variant) if have.variant in variants else None


def platform_matches(candidate: Platform, wanted: Platform) -> bool:
    """Can an image built for `candidate` run where `wanted` is asked for?"""
    return platform_rank(candidate, wanted) is not None
