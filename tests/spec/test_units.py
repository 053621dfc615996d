"""Durations and byte sizes read as compose reads them.

Expected values were printed by `docker compose config --format json` (v2.40).
"""

import pytest

from orchestrator.spec.units import canonical_duration, parse_bytes


@pytest.mark.parametrize(
    ("written", "printed"),
    [
        ("90s", "1m30s"),
        ("1m30s", "1m30s"),
        ("1h", "1h0m0s"),
        ("1m", "1m0s"),
        ("500ms", "500ms"),
        ("1.5s", "1.5s"),
        ("1h30m0.5s", "1h30m0.5s"),
        ("100us", "100\u00b5s"),
        ("0.5ms", "500\u00b5s"),
        ("0s", "0s"),
        ("1000ms", "1s"),
        ("3600s", "1h0m0s"),
        ("1d", "24h0m0s"),
        ("2w", "336h0m0s"),
    ],
)
def test_duration_prints_as_compose_prints_it(written, printed):
    assert canonical_duration(written) == printed


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("10", 'time: missing unit in duration "10"'),
        ("s", 'time: invalid duration "s"'),
    ],
)
def test_malformed_duration_is_rejected(written, message):
    with pytest.raises(ValueError, match=message):
        canonical_duration(written)


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("512m", 536870912),
        ("1g", 1073741824),
        ("1.5g", 1610612736),
        ("1024k", 1048576),
        ("10m", 10485760),
        ("2MB", 2097152),
        ("1 KiB", 1024),
        ("100b", 100),
        ("-1", -1),
        (100, 100),
        ("1mb", 1048576),
    ],
)
def test_size_is_counted_in_bytes_with_binary_units(written, size):
    assert parse_bytes(written) == size


@pytest.mark.parametrize(("written", "message"), [("1x", "invalid suffix: 'x'"),
                                                  ("abc", "invalid size"),
                                                  ("-1k", "invalid size")])
def test_malformed_size_is_rejected(written, message):
    with pytest.raises(ValueError, match=message):
        parse_bytes(written)
