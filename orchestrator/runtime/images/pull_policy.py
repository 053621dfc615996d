"""When a service's image must be pulled, by its `pull_policy` (compose's rules).

Pure: the caller says whether the image is in the store and when it was last
pulled; this answers whether to go to the registry now.
"""

from __future__ import annotations

import re

from orchestrator.spec.errors import StackError

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_EVERY = re.compile(r"every_((?:[0-9]+[wdhms])+)")
_PART = re.compile(r"([0-9]+)([wdhms])")
_PERIODS = {"daily": 86400, "weekly": 604800}


def needs_pull(
    policy: str | None,
    *,
    present: bool,
    last_pulled: float | None,
    now: float,
    buildable: bool = False,
) -> bool:
    """Whether to pull now.

    `always`/`refresh` always pull; `missing`/`if_not_present` (the default,
    or `build` for a service with a build section) only when the image is
    absent; `never` and `build` never; `daily`, `weekly` and `every_<duration>`
    when absent or when the last pull is older than that.
    """
    policy = policy or ("build" if buildable else "missing")
    if policy in ("always", "refresh"):
        return True
    if policy in ("never", "build"):
        return False
    if policy in ("missing", "if_not_present"):
        return not present
    period = refresh_period(policy)
    if not present or last_pulled is None:
        return True
    return now - last_pulled >= period


def refresh_period(policy: str) -> int:
    """Seconds between pulls for `daily`, `weekly` or `every_1d12h`."""
    if policy in _PERIODS:
        return _PERIODS[policy]
    match = _EVERY.fullmatch(policy)
    if match is None:
        raise StackError(
            f"unknown pull_policy {policy!r}",
            hint="use always, missing, never, build, daily, weekly or every_<duration>",
        )
    return sum(int(count) * _UNITS[unit] for count, unit in _PART.findall(match.group(1)))
