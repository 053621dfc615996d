"""Which pull_policy pulls when."""

from __future__ import annotations

import pytest

from orchestrator.runtime.images.pull_policy import needs_pull, refresh_period
from orchestrator.spec.errors import StackError

NOW = 1_000_000.0
HOUR = 3600


@pytest.mark.parametrize(
    ("policy", "present", "last", "expected"),
    [
        ("always", True, NOW, True),
        ("refresh", True, NOW, True),
        ("missing", True, None, False),
        ("missing", False, None, True),
        ("if_not_present", False, None, True),
        (None, True, None, False),
        (None, False, None, True),
        ("never", False, None, False),
        ("build", False, None, False),
        ("daily", True, NOW - 23 * HOUR, False),
        ("daily", True, NOW - 25 * HOUR, True),
        ("daily", True, None, True),
        ("daily", False, NOW, True),
        ("weekly", True, NOW - 6 * 24 * HOUR, False),
        ("every_12h", True, NOW - 13 * HOUR, True),
        ("every_1d12h", True, NOW - 30 * HOUR, False),
    ],
)
def test_pull_policies(policy, present, last, expected) -> None:
    assert needs_pull(policy, present=present, last_pulled=last, now=NOW) is expected


def test_a_built_service_without_a_policy_is_not_pulled() -> None:
    assert needs_pull(None, present=False, last_pulled=None, now=NOW, buildable=True) is False


def test_periods() -> None:
    assert refresh_period("every_1w2d3h4m5s") == 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5
    with pytest.raises(StackError, match="unknown pull_policy 'hourly'"):
        refresh_period("hourly")
