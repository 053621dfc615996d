"""Restart policies: what a stack file asks for, and what happens when a container stops."""

from __future__ import annotations

import pytest

from orchestrator.engine.restart import (
    RestartPolicy,
    decide,
    decide_on_engine_start,
    next_backoff,
)
from orchestrator.spec.errors import StackError

NO = RestartPolicy("no")
ALWAYS = RestartPolicy("always")
UNLESS_STOPPED = RestartPolicy("unless-stopped")
ON_FAILURE = RestartPolicy("on-failure")
ON_FAILURE_3 = RestartPolicy("on-failure", 3)


# --- what the stack file asks for ------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "policy"),
    [
        pytest.param({}, NO, id="default_is_no"),
        pytest.param({"restart": ""}, NO, id="empty_is_no"),
        pytest.param({"restart": "no"}, NO, id="no"),
        pytest.param({"restart": "always"}, ALWAYS, id="always"),
        pytest.param({"restart": "unless-stopped"}, UNLESS_STOPPED, id="unless_stopped"),
        pytest.param({"restart": "on-failure"}, ON_FAILURE, id="on_failure"),
        pytest.param({"restart": "on-failure:3"}, ON_FAILURE_3, id="on_failure_with_count"),
        pytest.param({"restart": "on-failure:0"}, ON_FAILURE, id="on_failure_0_is_unlimited"),
        pytest.param(
            {"deploy": {"restart_policy": {"condition": "none"}}}, NO, id="deploy_none"
        ),
        pytest.param(
            {"deploy": {"restart_policy": {"condition": "any"}}}, ALWAYS, id="deploy_any"
        ),
        pytest.param(
            {"deploy": {"restart_policy": {"condition": "on-failure", "max_attempts": 5}}},
            RestartPolicy("on-failure", 5), id="deploy_on_failure_with_attempts",
        ),
        pytest.param(
            {"deploy": {"restart_policy": {}}}, ALWAYS, id="deploy_condition_defaults_to_any"
        ),
        pytest.param(
            {"deploy": {"restart_policy": {"max_attempts": 2}}}, RestartPolicy("always", 2),
            id="deploy_any_with_attempts",
        ),
        pytest.param(
            {"deploy": {"restart_policy": {"condition": "on-failure", "delay": "5s",
                                           "window": "2m0s"}}},
            RestartPolicy("on-failure", 0, 5.0, 120.0), id="deploy_delay_and_window",
        ),
        pytest.param(
            {"deploy": {"restart_policy": {"condition": "any", "delay": "0s"}}},
            RestartPolicy("always", 0, 0.0), id="deploy_zero_delay_restarts_at_once",
        ),
        pytest.param(
            {"deploy": {"restart_policy": {"condition": "unless-stopped"}}}, UNLESS_STOPPED,
            id="deploy_takes_the_engines_words_too",
        ),
        pytest.param({"deploy": {"replicas": 2}}, NO, id="deploy_without_restart_policy"),
    ],
)  # fmt: skip
def test_policy_is_read_from_the_service(service, policy):
    assert RestartPolicy.parse(service) == policy


@pytest.mark.parametrize(
    ("service", "policy"),
    [
        pytest.param(
            {"restart": "always", "deploy": {"restart_policy": {"condition": "on-failure"}}},
            ON_FAILURE, id="deploy_on_failure_over_always",
        ),
        pytest.param(
            {"restart": "on-failure:3", "deploy": {"restart_policy": {"condition": "none"}}},
            NO, id="deploy_none_over_on_failure",
        ),
        pytest.param(
            {"restart": "no", "deploy": {"restart_policy": {"condition": "any"}}},
            ALWAYS, id="deploy_any_over_no",
        ),
        pytest.param(
            {"restart": "unless-stopped", "deploy": {"resources": {}}},
            UNLESS_STOPPED, id="restart_stands_when_deploy_has_no_policy",
        ),
    ],
)  # fmt: skip
def test_deploy_restart_policy_wins_over_restart_as_in_docker_compose(service, policy):
    assert RestartPolicy.parse(service) == policy


@pytest.mark.parametrize(
    ("service", "key", "message"),
    [
        ({"restart": "sometimes"}, "restart", 'unknown restart policy "sometimes"'),
        ({"restart": "always:3"}, "restart", "only on-failure takes a maximum retry count"),
        ({"restart": "unless-stopped:1"}, "restart", "only on-failure takes"),
        ({"restart": "on-failure:x"}, "restart", "must be a whole number"),
        ({"restart": "on-failure:"}, "restart", "must be a whole number"),
        ({"restart": "on-failure:-1"}, "restart", "must not be negative"),
        ({"restart": 3}, "restart", "restart must be a string"),
        (
            {"deploy": {"restart_policy": {"condition": "sometimes"}}},
            "deploy.restart_policy.condition", 'unknown restart condition "sometimes"',
        ),
        (
            {"deploy": {"restart_policy": {"max_attempts": -1}}},
            "deploy.restart_policy.max_attempts", "0 or more",
        ),
        (
            {"deploy": {"restart_policy": {"delay": "5"}}},
            "deploy.restart_policy.delay", 'missing unit in duration "5"',
        ),
        (
            {"deploy": {"restart_policy": {"window": "-1s"}}},
            "deploy.restart_policy.window", "window must not be negative",
        ),
    ],
)  # fmt: skip
def test_bad_policy_is_a_one_line_user_error_naming_the_key(service, key, message):
    with pytest.raises(StackError, match=message) as caught:
        RestartPolicy.parse(service, service_name="web")
    assert str(caught.value).startswith(f"services.web.{key}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        (NO, "no"),
        (ALWAYS, "always"),
        (ON_FAILURE, "on-failure"),
        (ON_FAILURE_3, "on-failure:3"),
        (RestartPolicy("always", 2), "always (at most 2 restarts)"),
    ],
)
def test_policy_prints_as_written(policy, text):
    assert str(policy) == text


# --- when a container stops ------------------------------------------------------------


def stopped(
    policy: RestartPolicy,
    exit_code: int = 1,
    restart_count: int = 0,
    stopped_by_user: bool = False,
    ran: float = 1.0,
    previous_delay: float = 0.0,
):
    return decide(
        policy, exit_code, restart_count, stopped_by_user, now=1000.0 + ran, last_start=1000.0,
        previous_delay=previous_delay,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "exit_code", "restart_count", "restarts"),
    [
        (NO, 0, 0, False),
        (NO, 1, 0, False),
        (ALWAYS, 0, 0, True),
        (ALWAYS, 1, 0, True),
        (ALWAYS, 137, 500, True),
        (UNLESS_STOPPED, 0, 0, True),
        (UNLESS_STOPPED, 1, 0, True),
        (ON_FAILURE, 0, 0, False),
        (ON_FAILURE, 1, 0, True),
        (ON_FAILURE, 255, 1000, True),
        (ON_FAILURE_3, 1, 0, True),
        (ON_FAILURE_3, 1, 2, True),
        (ON_FAILURE_3, 1, 3, False),
        (ON_FAILURE_3, 0, 0, False),
        (RestartPolicy("always", 2), 0, 1, True),
        (RestartPolicy("always", 2), 0, 2, False),
    ],
)
def test_a_stopped_container_restarts_by_its_policy(policy, exit_code, restart_count, restarts):
    decision = stopped(policy, exit_code, restart_count)
    assert decision.restart is restarts
    assert decision.restart_count == (restart_count + 1 if restarts else restart_count)
    if not restarts:
        assert decision.delay == 0


@pytest.mark.parametrize("policy", [NO, ALWAYS, UNLESS_STOPPED, ON_FAILURE, ON_FAILURE_3])
@pytest.mark.parametrize("exit_code", [0, 1, 137, 143])
def test_no_policy_restarts_a_container_the_user_stopped(policy, exit_code):
    decision = stopped(policy, exit_code, stopped_by_user=True)
    assert not decision.restart


def test_on_failure_n_allows_n_restarts_then_gives_up():
    count, runs = 0, 1
    while (decision := stopped(ON_FAILURE_3, exit_code=2, restart_count=count)).restart:
        count, runs = decision.restart_count, runs + 1
    assert (count, runs) == (3, 4)
    assert decision.reason == "exited with code 2; gave up after 3 restarts (on-failure:3)"


@pytest.mark.parametrize(
    ("policy", "exit_code", "restart_count", "stopped_by_user", "reason"),
    [
        (NO, 1, 0, False, 'restart policy is "no"'),
        (ALWAYS, 0, 0, True, "stopped by the user"),
        (ON_FAILURE, 0, 0, False, "exited with code 0; on-failure restarts only after a failure"),
        (ALWAYS, 137, 0, False, "exited with code 137; restart in 0.1s (always)"),
        (ON_FAILURE_3, 1, 1, False, "exited with code 1; restart 2 of 3 in 0.1s (on-failure:3)"),
    ],
)
def test_decision_says_why(policy, exit_code, restart_count, stopped_by_user, reason):
    assert stopped(policy, exit_code, restart_count, stopped_by_user).reason == reason


def test_window_run_counts_as_success_and_attempts_start_over():
    policy = RestartPolicy("on-failure", 2, window=60.0)
    assert not stopped(policy, restart_count=2, ran=59.9).restart
    decision = stopped(policy, restart_count=2, ran=60.0)
    assert (decision.restart, decision.restart_count) == (True, 1)


def test_without_window_a_long_run_does_not_reset_the_count():
    assert not stopped(ON_FAILURE_3, restart_count=3, ran=3600).restart


# --- how soon ------------------------------------------------------------------------


def test_crash_loop_backs_off_from_100ms_doubling_up_to_a_minute():
    delays, previous = [], 0.0
    for count in range(13):
        previous = stopped(ALWAYS, restart_count=count, ran=0.5, previous_delay=previous).delay
        delays.append(previous)
    assert delays == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 60, 60, 60]
    )


@pytest.mark.parametrize(
    ("ran", "delay"),
    [(0.0, 12.8), (9.99, 12.8), (10.0, 0.1), (3600, 0.1)],
)
def test_a_run_of_10_seconds_resets_the_backoff(ran, delay):
    assert stopped(ALWAYS, ran=ran, previous_delay=6.4).delay == pytest.approx(delay)


def test_backoff_resets_but_restart_count_keeps_counting():
    decision = stopped(ON_FAILURE, restart_count=7, ran=30, previous_delay=60)
    assert (decision.delay, decision.restart_count) == (pytest.approx(0.1), 8)


@pytest.mark.parametrize(
    ("previous", "ran", "delay"),
    [(0.0, 0, 0.1), (0.1, 0, 0.2), (40, 0, 60), (60, 0, 60), (60, 10, 0.1)],
)
def test_next_backoff(previous, ran, delay):
    assert next_backoff(previous, ran) == pytest.approx(delay)


def test_deploy_delay_is_a_fixed_wait_instead_of_the_backoff():
    policy = RestartPolicy("always", delay=5.0)
    assert [stopped(policy, previous_delay=p).delay for p in (0, 5, 60)] == [5.0, 5.0, 5.0]


def test_last_start_unknown_counts_as_a_quick_exit():
    decision = decide(ALWAYS, 1, 0, False, now=1000.0, last_start=None, previous_delay=0.4)
    assert decision.delay == pytest.approx(0.8)


def test_clock_going_backwards_counts_as_a_quick_exit():
    decision = decide(ALWAYS, 1, 0, False, now=900.0, last_start=1000.0, previous_delay=0.4)
    assert decision.delay == pytest.approx(0.8)


# --- when the engine starts again ------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "exit_code", "restart_count", "stopped_by_user", "restarts"),
    [
        pytest.param(NO, 1, 0, False, False, id="no_never"),
        pytest.param(ALWAYS, 0, 0, False, True, id="always_after_a_clean_exit"),
        pytest.param(ALWAYS, 143, 0, True, True, id="always_even_when_the_user_stopped_it"),
        pytest.param(UNLESS_STOPPED, 1, 0, False, True, id="unless_stopped_when_it_died"),
        pytest.param(UNLESS_STOPPED, 143, 0, True, False, id="unless_stopped_not_user_stopped"),
        pytest.param(ON_FAILURE, 1, 0, False, True, id="on_failure_after_a_failure"),
        pytest.param(ON_FAILURE, 0, 0, False, False, id="on_failure_not_after_success"),
        pytest.param(ON_FAILURE, 143, 0, True, False, id="on_failure_user_stop_is_no_failure"),
        pytest.param(ON_FAILURE_3, 1, 3, False, False, id="on_failure_n_used_up"),
        pytest.param(ON_FAILURE_3, 1, 2, False, True, id="on_failure_n_attempts_left"),
    ],
)  # fmt: skip
def test_engine_start_restarts_what_the_policy_wants_running(
    policy, exit_code, restart_count, stopped_by_user, restarts
):
    decision = decide_on_engine_start(policy, exit_code, restart_count, stopped_by_user)
    assert decision.restart is restarts
    assert decision.delay == 0
    assert decision.restart_count == (0 if restarts else restart_count)


def test_always_and_unless_stopped_differ_only_after_a_user_stop_and_engine_start():
    for user_stop in (False, True):
        assert stopped(ALWAYS, stopped_by_user=user_stop).restart is not user_stop
        assert stopped(UNLESS_STOPPED, stopped_by_user=user_stop).restart is not user_stop
    assert decide_on_engine_start(ALWAYS, 143, 0, stopped_by_user=True).restart
    assert not decide_on_engine_start(UNLESS_STOPPED, 143, 0, stopped_by_user=True).restart
