"""Healthchecks: the merged spec, the status a container shows, and the probing loop.

The loop runs on trio's autojump clock, so minutes of probing take milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio

from orchestrator.engine.health import (
    HealthcheckSpec,
    HealthState,
    ProbeResult,
    healthcheck_of,
    run_healthchecks,
    timeout_result,
    truncate_output,
)
from orchestrator.runtime.images.image_config import Healthcheck
from orchestrator.spec.errors import StackError

S = 1_000_000_000  # nanoseconds, as an image config writes durations
IMAGE = Healthcheck(
    ("CMD", "/probe"), interval=10 * S, timeout=4 * S, start_period=20 * S,
    start_interval=2 * S, retries=7,
)  # fmt: skip


# --- which healthcheck a container runs ----------------------------------------------


@pytest.mark.parametrize(
    ("healthcheck", "image", "expected"),
    [
        pytest.param(None, None, None, id="none_anywhere"),
        pytest.param(
            None, IMAGE,
            HealthcheckSpec(("CMD", "/probe"), 10, 4, 20, 2, 7),
            id="image_only",
        ),
        pytest.param(
            {"test": ["CMD-SHELL", "curl -f http://localhost"]}, None,
            HealthcheckSpec(("CMD-SHELL", "curl -f http://localhost"), 30, 30, 0, 5, 3),
            id="defaults_fill_what_nobody_sets",
        ),
        pytest.param(
            {"test": "pg_isready"}, None,
            HealthcheckSpec(("CMD-SHELL", "pg_isready")),
            id="string_test_is_cmd_shell",
        ),
        pytest.param(
            {"test": ["CMD", "/other"]}, IMAGE,
            HealthcheckSpec(("CMD", "/other"), 10, 4, 20, 2, 7),
            id="service_test_overrides_image_and_keeps_its_timings",
        ),
        pytest.param(
            {"interval": "1m30s", "retries": 2}, IMAGE,
            HealthcheckSpec(("CMD", "/probe"), 90, 4, 20, 2, 2),
            id="service_timings_override_image_field_by_field",
        ),
        pytest.param(
            {"interval": "0s", "timeout": "0s", "retries": 0}, IMAGE,
            HealthcheckSpec(("CMD", "/probe"), 10, 4, 20, 2, 7),
            id="zero_means_unset_and_falls_back_to_image",
        ),
        pytest.param(
            {"test": ["CMD", "true"], "timeout": "0s", "retries": 0}, None,
            HealthcheckSpec(("CMD", "true"), 30, 30, 0, 5, 3),
            id="zero_means_unset_and_falls_back_to_default",
        ),
        pytest.param(
            {"test": ["CMD", "true"], "start_period": "1.5s", "start_interval": "500ms"}, None,
            HealthcheckSpec(("CMD", "true"), 30, 30, 1.5, 0.5, 3),
            id="fractional_durations",
        ),
        pytest.param({"disable": True}, IMAGE, None, id="disable_turns_off_the_images"),
        pytest.param(
            {"disable": True, "test": ["CMD", "true"]}, None, None,
            id="disable_wins_over_a_test",
        ),
        pytest.param({"test": ["NONE"]}, IMAGE, None, id="none_turns_off_the_images"),
        pytest.param(None, Healthcheck(("NONE",)), None, id="image_none"),
        pytest.param(None, Healthcheck(("WHATEVER", "x")), None, id="image_unknown_type_ignored"),
        pytest.param({"interval": "5s"}, None, None, id="timings_without_any_test"),
        pytest.param({"test": []}, IMAGE, HealthcheckSpec(("CMD", "/probe"), 10, 4, 20, 2, 7),
                     id="empty_test_inherits_the_images"),
    ],
)  # fmt: skip
def test_healthcheck_merges_service_over_image(healthcheck, image, expected):
    service = {"image": "x"} if healthcheck is None else {"image": "x", "healthcheck": healthcheck}
    assert healthcheck_of(service, image) == expected


@pytest.mark.parametrize(
    ("test", "shell", "argv"),
    [
        (["CMD", "/bin/check", "--fast"], None, ("/bin/check", "--fast")),
        (["CMD-SHELL", "test -f /ready"], None, ("/bin/sh", "-c", "test -f /ready")),
        ("test -f /ready", None, ("/bin/sh", "-c", "test -f /ready")),
        (["CMD-SHELL", "exit 0"], ["/bin/bash", "-ec"], ("/bin/bash", "-ec", "exit 0")),
    ],
)
def test_probe_argv_runs_cmd_as_is_and_cmd_shell_through_the_shell(test, shell, argv):
    spec = healthcheck_of({"healthcheck": {"test": test}}, None, shell=shell)
    assert spec is not None
    assert spec.argv == argv


@pytest.mark.parametrize(
    ("healthcheck", "message"),
    [
        ({"test": ["RUN", "x"]}, 'must start with "CMD", "CMD-SHELL" or "NONE", not "RUN"'),
        ({"test": ["CMD"]}, "no command after CMD"),
        ({"test": ["CMD-SHELL"]}, "no command after CMD-SHELL"),
        ({"test": [1, 2]}, "must be a string or a list of strings"),
        ({"test": "true", "retries": -1}, "retries must not be negative"),
        ({"test": "true", "retries": 1.5}, "retries must be a whole number"),
        ({"test": "true", "interval": "500us"}, "interval must be at least 1ms"),
        ({"test": "true", "timeout": "-1s"}, "timeout must not be negative"),
        ({"test": "true", "start_period": "10"}, 'missing unit in duration "10"'),
    ],
)
def test_bad_healthcheck_is_a_one_line_user_error_naming_the_key(healthcheck, message):
    with pytest.raises(StackError, match=message) as caught:
        healthcheck_of({"healthcheck": healthcheck}, None, service_name="web")
    assert str(caught.value).startswith("services.web.healthcheck")
    assert "\n" not in str(caught.value)


# --- the status a container shows ----------------------------------------------------

SPEC = HealthcheckSpec(("CMD", "check"), interval=30, timeout=5, start_period=0, retries=3)
GRACE = HealthcheckSpec(
    ("CMD", "check"), interval=30, timeout=5, start_period=60, start_interval=2, retries=3
)


def result(at: float, exit_code: int, output: str = "", took: float = 0.5) -> ProbeResult:
    return ProbeResult(at, at + took, exit_code, output)


def statuses(state: HealthState, outcomes: Sequence[tuple[float, int]]) -> list[str]:
    seen = []
    for at, exit_code in outcomes:
        state.record(result(at, exit_code))
        seen.append(state.status)
    return seen


@pytest.mark.parametrize(
    ("spec", "outcomes", "expected"),
    [
        pytest.param(SPEC, [(30, 0)], ["healthy"], id="one_success_is_healthy"),
        pytest.param(
            SPEC, [(30, 1), (60, 1), (90, 1)], ["starting", "starting", "unhealthy"],
            id="retries_failures_make_it_unhealthy",
        ),
        pytest.param(
            SPEC, [(30, 0), (60, 1), (90, 1), (120, 1)],
            ["healthy", "healthy", "healthy", "unhealthy"],
            id="healthy_stays_healthy_until_retries_failures",
        ),
        pytest.param(
            SPEC, [(30, 1), (60, 1), (90, 0), (120, 1), (150, 1)],
            ["starting", "starting", "healthy", "healthy", "healthy"],
            id="a_success_resets_the_streak",
        ),
        pytest.param(
            SPEC, [(30, 1), (60, 1), (90, 1), (120, 0)],
            ["starting", "starting", "unhealthy", "healthy"],
            id="unhealthy_recovers_with_one_success",
        ),
        pytest.param(
            SPEC, [(30, 2), (60, 137), (90, -1)], ["starting", "starting", "unhealthy"],
            id="any_non_zero_exit_is_a_failure",
        ),
        pytest.param(
            GRACE, [(2, 1), (4, 1), (6, 1), (8, 1), (58, 1)], ["starting"] * 5,
            id="failures_in_the_start_period_do_not_count",
        ),
        pytest.param(
            GRACE, [(2, 1), (4, 1), (6, 0)], ["starting", "starting", "healthy"],
            id="a_success_in_the_start_period_makes_it_healthy",
        ),
        pytest.param(
            GRACE, [(2, 1), (60, 1), (90, 1), (120, 1)],
            ["starting", "starting", "starting", "unhealthy"],
            id="failures_count_from_the_end_of_the_start_period",
        ),
        pytest.param(
            GRACE, [(2, 0), (4, 1), (6, 1), (8, 1)],
            ["healthy", "healthy", "healthy", "unhealthy"],
            id="once_healthy_the_start_period_no_longer_forgives",
        ),
    ],
)  # fmt: skip
def test_health_status_follows_dockers_rules(spec, outcomes, expected):
    assert statuses(HealthState(spec, started_at=0), outcomes) == expected


def test_record_says_whether_the_status_changed():
    state = HealthState(SPEC, started_at=0)
    changes = [
        state.record(result(t, code))
        for t, code in [(1, 0), (2, 0), (3, 1), (4, 1), (5, 1), (6, 1), (7, 0)]
    ]
    assert changes == [True, False, False, False, True, False, True]


def test_failing_streak_counts_consecutive_failures_only():
    state = HealthState(SPEC, started_at=0)
    for at, code in [(1, 1), (2, 1), (3, 0), (4, 1)]:
        state.record(result(at, code))
    assert state.failing_streak == 1


def test_failures_in_the_start_period_do_not_grow_the_streak():
    state = HealthState(GRACE, started_at=100)
    for at in (102, 104, 106):
        state.record(result(at, 1))
    assert (state.status, state.failing_streak) == ("starting", 0)


def test_a_timed_out_probe_counts_toward_unhealthy():
    state = HealthState(SPEC, started_at=0)
    for at in (30, 60, 90):
        state.record(timeout_result(at, at + 5, SPEC.timeout))
    assert state.status == "unhealthy"
    assert state.log[-1].output == "Health check exceeded timeout (5s)"


def test_log_keeps_the_last_five_probes_in_order():
    state = HealthState(SPEC, started_at=0)
    for at in range(1, 9):
        state.record(result(at, at % 2, f"probe {at}"))
    assert [entry.output for entry in state.log] == [f"probe {at}" for at in range(4, 9)]
    assert state.log[-1] == ProbeResult(8, 8.5, 0, "probe 8")


@pytest.mark.parametrize(
    ("output", "kept"),
    [
        ("short", "short"),
        ("x" * 4096, "x" * 4096),
        ("x" * 4097, "x" * 4096 + "..."),
        ("é" * 3000, "é" * 2048 + "..."),  # two bytes each: 6000 bytes, cut on a whole char
        ("x" * 4095 + "é", "x" * 4095 + "..."),  # a character never comes out half
    ],
)
def test_probe_output_is_kept_up_to_4_kib(output, kept):
    assert truncate_output(output) == kept
    state = HealthState(SPEC, started_at=0)
    state.record(result(1, 1, output))
    assert state.log[-1].output == kept


@pytest.mark.parametrize(
    ("spec", "probes", "now", "delay"),
    [
        pytest.param(SPEC, [], 0, 30, id="no_start_period_interval_from_the_start"),
        pytest.param(GRACE, [], 0, 2, id="start_interval_at_the_start"),
        pytest.param(GRACE, [(2, 1)], 59.9, 2, id="start_interval_while_starting"),
        pytest.param(GRACE, [(2, 1)], 60, 30, id="interval_after_the_start_period"),
        pytest.param(GRACE, [(2, 0)], 3, 30, id="interval_once_healthy"),
        pytest.param(GRACE, [(2, 0), (4, 1), (6, 1), (8, 1)], 9, 30, id="interval_when_unhealthy"),
    ],
)  # fmt: skip
def test_next_probe_comes_sooner_while_a_container_starts(spec, probes, now, delay):
    state = HealthState(spec, started_at=0)
    for at, code in probes:
        state.record(result(at, code))
    assert state.next_delay(now) == delay


def test_state_as_json_has_status_streak_and_log():
    state = HealthState(SPEC, started_at=0)
    state.record(ProbeResult(1.0, 1.25, 1, "refused"))
    assert state.to_json() == {
        "status": "starting",
        "failing_streak": 1,
        "log": [{"start": 1.0, "end": 1.25, "exit_code": 1, "output": "refused"}],
    }


# --- the probing loop ------------------------------------------------------------------


class FakeContainer:
    """Answers probes from a script of (exit code, output, seconds taken); the last repeats."""

    def __init__(self, *script: tuple[int, str, float]):
        self.script = list(script)
        self.calls: list[tuple[float, tuple[str, ...], float]] = []

    async def probe(self, argv: Sequence[str], timeout: float) -> tuple[int, str]:
        self.calls.append((trio.current_time(), tuple(argv), timeout))
        exit_code, output, took = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        await trio.sleep(took)
        return exit_code, output


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    async def __call__(self, state: HealthState) -> None:
        self.seen.append((trio.current_time(), state.status))


async def probe_for(
    seconds: float,
    spec: HealthcheckSpec,
    container: FakeContainer,
    state: HealthState | None = None,
) -> Changes:
    changes = Changes()
    with trio.move_on_after(seconds):
        await run_healthchecks(
            spec, container.probe, changes, trio.current_time(), state=state,
            clock=trio.current_time,
        )  # fmt: skip
    return changes


@pytest.mark.trio
async def test_first_probe_waits_one_interval_and_probes_do_not_overlap(autojump_clock):
    container = FakeContainer((0, "", 1.0))
    await probe_for(100, SPEC, container)
    # 30 s after the start, then 30 s after each probe's end (each takes 1 s).
    assert [round(at) for at, _, _ in container.calls] == [30, 61, 92]


@pytest.mark.trio
async def test_probe_gets_the_argv_and_the_timeout(autojump_clock):
    spec = HealthcheckSpec(("CMD-SHELL", "test -f /ready"), interval=1, timeout=3)
    container = FakeContainer((0, "", 0))
    await probe_for(1.5, spec, container)
    assert container.calls[0][1:] == (("/bin/sh", "-c", "test -f /ready"), 3)


@pytest.mark.trio
async def test_only_changes_of_status_are_reported(autojump_clock):
    container = FakeContainer((1, "", 0), (0, "", 0), (0, "", 0), (1, "", 0), (1, "", 0),
                              (1, "", 0), (0, "", 0))  # fmt: skip
    changes = await probe_for(7 * 30 + 1, SPEC, container)
    assert [status for _, status in changes.seen] == ["healthy", "unhealthy", "healthy"]
    assert [round(at) for at, _ in changes.seen] == [60, 180, 210]


@pytest.mark.trio
async def test_slow_starter_is_probed_every_start_interval_until_healthy(autojump_clock):
    container = FakeContainer((1, "", 0), (1, "", 0), (1, "", 0), (0, "", 0))
    changes = await probe_for(100, GRACE, container)
    assert [round(at) for at, _, _ in container.calls] == [2, 4, 6, 8, 38, 68, 98]
    assert changes.seen == [(pytest.approx(8), "healthy")]


@pytest.mark.trio
async def test_hung_probe_is_abandoned_at_its_timeout_and_fails(autojump_clock):
    spec = HealthcheckSpec(("CMD", "check"), interval=10, timeout=2, retries=2)
    container = FakeContainer((0, "", 3600))
    state = HealthState(spec, started_at=trio.current_time())
    changes = await probe_for(30, spec, container, state)
    assert changes.seen == [(pytest.approx(24), "unhealthy")]
    assert [entry.output for entry in state.log] == ["Health check exceeded timeout (2s)"] * 2
    assert [entry.end - entry.start for entry in state.log] == pytest.approx([2, 2])


@pytest.mark.trio
async def test_probe_that_cannot_run_is_a_failure_with_its_reason(autojump_clock):
    async def broken(argv: Sequence[str], timeout: float) -> tuple[int, str]:
        raise OSError("container is not running")

    spec = HealthcheckSpec(("CMD", "check"), interval=1, retries=1)
    state = HealthState(spec, started_at=trio.current_time())
    changes = Changes()
    with trio.move_on_after(1.5):
        await run_healthchecks(
            spec, broken, changes, trio.current_time(), state=state, clock=trio.current_time
        )
    assert [status for _, status in changes.seen] == ["unhealthy"]
    assert state.log[0].exit_code == -1
    assert state.log[0].output == "probe failed: container is not running"


@pytest.mark.trio
async def test_state_passed_in_carries_the_log_the_engine_shows(autojump_clock):
    container = FakeContainer((1, "connection refused", 0), (0, "ok", 0))
    state = HealthState(SPEC, started_at=trio.current_time())
    await probe_for(61, SPEC, container, state)
    assert [(e.exit_code, e.output) for e in state.log] == [(1, "connection refused"), (0, "ok")]
    assert state.status == "healthy"


@pytest.mark.trio
async def test_cancelling_stops_probing_even_mid_probe(autojump_clock):
    container = FakeContainer((0, "", 20))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_healthchecks(
                SPEC, container.probe, Changes(), trio.current_time(), clock=trio.current_time
            )
        )
        await trio.sleep(35)  # the first probe started at 30 and is still running
        nursery.cancel_scope.cancel()
    assert trio.current_time() == pytest.approx(35)
    assert len(container.calls) == 1
